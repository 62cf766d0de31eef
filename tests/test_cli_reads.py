"""``taskstore list`` and ``taskstore counts``, on both engines.

- ``list --json`` prints the page the Python API gives, as the Blaxel-shaped ``{"data", "meta"}`` document; walking
  ``--cursor`` from each page's ``meta.nextCursor`` yields every task once, in the sort's order; ``--state`` (a
  canonical state or another dialect's value), ``--filter`` (Azure Batch's ``$filter`` grammar; with ``--state``,
  both), ``--q``, ``--sort`` and ``--limit`` narrow and order it as the API's; a cursor of one filter is refused by
  another.
- Without ``--json`` it prints a table and a line with the next page's cursor, whole on one line however narrow the
  terminal, so that it pastes back; the id, state and creation time (to the second) are never cut at 80 columns (the
  display name wraps); the caller's text (a display name) is shown as written, never read as markup.
- Bad input (a state in no vocabulary, a cursor that is not one, a sort that is not one) exits 2 with the reason,
  however the input is spelt, and prints no page.
- ``task --json`` prints the API's task (``--as-of`` a position: as it was then) and with ``--history`` its events;
  without it, the task's fields as written and its events; an unknown or malformed id exits 2.
- ``counts --json`` prints the API's count summary, with why it is (un)validated; without it, the totals, the
  validation status and its reason, and a table. ``--as-of`` an earlier summary's position gives that summary
  again. A job with no events counts zero tasks, validated, and says why.
- A ``--db`` that cannot be opened (a directory, a file that is not a database, a scheme no driver speaks, a server
  that does not answer) exits 2 with the reason, never a traceback; a command that reads a SQLite database that is
  not there says so and creates nothing.
"""

from __future__ import annotations

import orjson
import pytest

from api.batch_filter import parse_filter
from eventstore import Scope, State
from taskstore.simulate import simulate

JOB = Scope("acme", "cli-reads")


@pytest.fixture
def job(store):
    """A simulated job of 37 tasks."""
    simulate(store, JOB, 37, seed=11)
    return store


@pytest.fixture
def cli(job, taskstore_cli):
    """``taskstore COMMAND --workspace W --job J ARGS...`` on the job: (exit code, stdout, stderr)."""
    return lambda command, *args: taskstore_cli(command, "--workspace", JOB.workspace, "--job", JOB.job, *args)


def page_json(cli, *args: str) -> dict:
    code, out, err = cli("list", "--json", *args)
    assert code == 0, err
    return orjson.loads(out)


def walk(cli, *args: str) -> list[str]:
    """The ids of every page of ``list ARGS``, each next page asked for by the previous one's cursor."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        doc = page_json(cli, *args, *(["--cursor", cursor] if cursor else []))
        seen += [t["id"] for t in doc["data"]]
        if not doc["meta"]["hasMore"]:
            assert doc["meta"]["nextCursor"] == ""
            return seen
        cursor = doc["meta"]["nextCursor"]


def test_list_json_is_the_api_s_page_as_the_blaxel_document(job, cli):
    doc = page_json(cli, "--limit", "5")
    api = job.queries.list_tasks(JOB, limit=5).to_dict()
    assert doc["data"] == orjson.loads(orjson.dumps(api["data"]))
    assert doc["meta"]["hasMore"] is True and doc["meta"]["total"] == 37
    assert set(doc) == {"data", "meta"} and set(doc["meta"]) == {"hasMore", "nextCursor", "total"}


@pytest.mark.parametrize("sort", ["createdAt:desc", "createdAt:asc", "name:asc", "name:desc", "number:asc"])
def test_walking_the_cursors_lists_every_task_once_in_order(job, cli, sort):
    seen = walk(cli, "--sort", sort, "--limit", "8")
    expected = [t.task_id for t in job.queries.list_tasks(JOB, sort=sort, limit=200).items]
    assert seen == expected and len(seen) == 37


@pytest.mark.parametrize("value", ["running", "RUNNING", "active"])  # canonical, HealthOmics, Azure Batch
def test_a_state_filter_takes_any_dialect_s_value(job, cli, value):
    from eventstore import states_for

    wanted = states_for(value)
    doc = page_json(cli, "--state", value, "--limit", "200")
    every = {t.task_id: t.state for t in job.queries.list_tasks(JOB, limit=200).items}
    assert sorted(t["id"] for t in doc["data"]) == sorted(i for i, s in every.items() if s in wanted)
    assert doc["meta"]["total"] == 37  # the scope's, ignoring filters


def test_a_filter_in_batch_s_grammar_lists_what_the_api_lists_for_it_walking_every_page(job, cli):
    text = "state eq 'completed' and (executionInfo/exitCode ne 0 or startswith(id, 'task-000'))"
    expected = [t.task_id for t in job.queries.list_tasks(JOB, where=parse_filter(text), limit=200).items]
    assert 0 < len(expected) < 37
    seen = walk(cli, "--filter", text, "--limit", "2")
    assert seen == expected
    every = {t.task_id: t for t in job.queries.list_tasks(JOB, limit=200).items}
    assert all(every[i].state.value in {"succeeded", "failed", "cancelled"} for i in seen)
    assert {i for i in seen if every[i].exit_code not in (0, None)} == {
        i for i, t in every.items() if t.exit_code not in (0, None)}


def test_a_filter_and_a_state_list_the_tasks_that_match_both(job, cli):
    doc = page_json(cli, "--filter", "executionInfo/exitCode ne 0", "--state", "failed", "--limit", "200")
    every = job.queries.list_tasks(JOB, limit=200).items
    want = sorted(t.task_id for t in every if t.state is State.FAILED and t.exit_code not in (0, None))
    assert sorted(t["id"] for t in doc["data"]) == want and want
    doc = page_json(cli, "--filter", "executionInfo/exitCode eq 0", "--state", "failed", "--limit", "200")
    assert doc["data"] == []


def test_a_cursor_of_one_filter_is_refused_by_another(job, cli):
    first = page_json(cli, "--filter", "state eq 'completed'", "--limit", "2")
    code, out, err = cli("list", "--filter", "state eq 'active'", "--cursor", first["meta"]["nextCursor"])
    assert code == 2 and out == "" and "cursor:" in err


def test_q_searches_display_names(job, cli):
    doc = page_json(cli, "--q", "MERGE", "--limit", "200")
    assert doc["data"] and all("merge" in t["spec"]["displayName"].lower() for t in doc["data"])
    assert len(doc["data"]) == len(job.queries.list_tasks(JOB, q="merge", limit=200).items)


def test_the_table_s_cursor_is_on_one_line_at_any_width_and_pastes_back(job, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    code, out, _ = cli("list", "--limit", "5", "--sort", "name:asc")
    assert code == 0
    last = out.rstrip("\n").splitlines()[-1]
    assert last.startswith("5 of 37 tasks; next page: --cursor ")
    cursor = last.rsplit(" ", 1)[1]
    second = page_json(cli, "--limit", "5", "--sort", "name:asc", "--cursor", cursor)
    names = [t.task_id for t in job.queries.list_tasks(JOB, sort="name:asc", limit=10).items]
    assert [t["id"] for t in second["data"]] == names[5:]


def test_a_display_name_is_shown_as_written_not_as_markup(job, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    job.add_task(JOB, {"id": "zz-markup", "displayName": "[bold]x[/bold] [/]"})
    code, out, err = cli("list", "--sort", "name:desc", "--limit", "1")
    assert code == 0, err
    assert "[bold]x[/bold] [/]" in out


def test_the_table_shows_each_task_s_id_state_and_creation_time_whole_at_80_columns(job, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    job.add_task(JOB, {"id": "zz-long-name", "displayName": "a display name far too long for the terminal " * 3})
    code, out, err = cli("list", "--sort", "name:desc", "--limit", "3")
    assert code == 0, err
    for t in job.queries.list_tasks(JOB, sort="name:desc", limit=3).items:
        row = next(line for line in out.splitlines() if t.task_id in line)
        # the time to the second, in UTC, as stored but for the microseconds
        assert t.state.value in row and t.created_at[:19].replace("T", " ") in row
    assert max(len(line) for line in out.splitlines()[:-1]) <= 80  # the display name wraps; the cursor line not


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--state", "[/]"], "state: '[/]' is not a state in any vocabulary"),
        (["--state", "nonsense"], "state: 'nonsense' is not a state in any vocabulary"),
        (["--cursor", "not-a-cursor"], "cursor:"),
        (["--sort", "size:asc"], "sort:"),
        (["--filter", "exitCode eq 1"], "filter: 'exitCode' is not a property tasks can be filtered on"),
        (["--filter", "state eq 'sleeping'"], "filter:"),
        (["--filter", "(state eq 'active'"], "filter:"),
        (["--limit", "0"], "limit: must be at least 1"),  # was a page of one task, as the Python API clamps it
        (["--limit", "-1"], "limit: must be at least 1"),
    ],
)
def test_bad_input_exits_2_with_the_reason_and_prints_no_page(job, cli, args, reason):
    code, out, err = cli("list", *args)
    assert code == 2
    assert out == ""
    assert reason in " ".join(err.split())


def test_task_json_is_the_api_s_task_now_or_as_of_a_position_with_its_history(job, cli):
    failed = next(t for t in job.queries.list_tasks(JOB, limit=200).items if t.state is State.FAILED)
    history = job.history(JOB, failed.task_id)
    code, out, err = cli("task", "--id", failed.task_id.upper(), "--history", "--json")  # ids ignore case
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["task"] == orjson.loads(orjson.dumps(failed.to_dict()))
    assert [e["position"] for e in doc["events"]] == [e.position for e in history]
    assert [e["version"] for e in doc["events"]] == list(range(1, len(history) + 1))
    assert doc["events"][0]["type"] == "TaskAdded" and doc["events"][-1]["data"]["to"] == "failed"
    second = history[1].position
    code, out, _ = cli("task", "--id", failed.task_id, "--as-of", str(second), "--history", "--json")
    then = orjson.loads(out)
    assert then["task"] == orjson.loads(orjson.dumps(job.queries.task_as_of(JOB, failed.task_id, second).to_dict()))
    assert then["task"]["version"] == 2 and [e["position"] for e in then["events"]] == [e.position for e in history[:2]]
    assert "events" not in orjson.loads(cli("task", "--id", failed.task_id, "--json")[1])


def test_task_prints_the_task_as_written_and_refuses_what_is_not_one(job, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    job.add_task(JOB, {"id": "marked", "displayName": "[bold]x[/bold] [/]"})
    code, out, err = cli("task", "--id", "marked", "--history")
    assert code == 0, err
    assert out.splitlines()[0] == f"{JOB} task marked: pending, version 1"
    assert "[bold]x[/bold] [/]" in out and "TaskAdded" in out
    for args, reason in ((["--id", "nobody"], "task 'nobody' does not exist"),
                         (["--id", "no spaces"], "taskId:"),
                         (["--id", "marked", "--as-of", "-3"], "as-of: must be a log position"),
                         # was OverflowError (SQLite) or DataError (PostgreSQL), a traceback
                         (["--id", "marked", "--as-of", str(2**64)], "as-of: must be a log position")):
        code, out, err = cli("task", *args)
        assert code == 2 and out == "" and reason in " ".join(err.split()), args


def test_counts_json_is_the_api_s_summary(job, cli):
    code, out, err = cli("counts", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    api = job.queries.counts(JOB).to_dict()
    assert doc["states"] == api["states"] and doc["slots"] == api["slots"] and doc["total"] == 37
    assert doc["validationStatus"] == "validated" and doc["validationDetail"] != ""  # the how: a recount here


def test_counts_prints_the_total_the_validation_and_every_state(job, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("counts")
    assert code == 0
    summary = job.queries.counts(JOB)
    first = out.splitlines()[0]
    assert first.startswith(f"{JOB}: 37 tasks, validated (")
    for state in State:
        row = next(line for line in out.splitlines() if f" {state.value} " in line)
        assert str(summary.states[state]) in row.split()
    assert out.splitlines()[-1] == f"as of log position {summary.position}" and summary.position > 0


def test_counts_as_of_an_earlier_summary_s_position_give_that_summary_again(job, cli):
    code, out, err = cli("counts", "--json")
    assert code == 0, err
    then = orjson.loads(out)
    pending = [t.task_id for t in job.queries.list_tasks(JOB, limit=200).items if t.state is State.PENDING]
    job.transition_many(JOB, [(task_id, "cancelled") for task_id in pending])
    job.add_tasks(JOB, [{"id": "late"}])
    code, out, _ = cli("counts", "--as-of", str(then["position"]), "--json")
    again = orjson.loads(out)
    assert code == 0 and (again["states"], again["slots"], again["total"], again["position"]) == (
        then["states"], then["slots"], then["total"], then["position"])
    assert again["validationStatus"] == "unvalidated" and again["validationDetail"].startswith(
        f"as of position {then['position']}: ")
    assert orjson.loads(cli("counts", "--json")[1])["total"] == 38  # now: the late task too
    for bad in ("-1", str(10**18), str(2**64)):  # past 64 bits: was a traceback
        code, out, err = cli("counts", "--as-of", bad)
        assert code == 2 and out == "" and "as-of: must be a log position" in " ".join(err.split()), bad


def test_counts_of_a_job_with_no_events_are_zero_and_say_why_they_are_validated(job, taskstore_cli):
    code, out, err = taskstore_cli("counts", "--workspace", "acme", "--job", "never", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["total"] == 0 and set(doc["states"].values()) == {0}
    assert doc["validationStatus"] == "validated"
    assert doc["validationDetail"] == "the scope has no events: no tasks to count"


# -- --db: what cannot be opened ----------------------------------------------------------------------------------
#
# These run on SQLite files and URLs that open nothing (a CLI test never gets a real PostgreSQL URL).

_READS = [
    ["list", "--workspace", "acme", "--job", "j"],
    ["task", "--workspace", "acme", "--job", "j", "--id", "t"],
    ["counts", "--workspace", "acme", "--job", "j"],
    ["audit"],
    ["rebuild"],
    ["snapshot", "--due"],
]


def _main(capsys, args: list[str]) -> tuple[int, str, str]:
    from taskstore import cli as cli_module

    capsys.readouterr()
    code = cli_module.main(args)
    printed = capsys.readouterr()
    return code, printed.out, printed.err


@pytest.mark.parametrize("command", _READS, ids=lambda c: c[0])
def test_a_command_that_reads_a_database_that_is_not_there_exits_2_and_creates_nothing(tmp_path, capsys, command):
    missing = tmp_path / "typo" / "taskstore.db"
    for db in (f"sqlite:///{missing}", str(missing)):
        code, out, err = _main(capsys, [command[0], "--db", db, *command[1:]])
        assert (code, out) == (2, ""), err
        assert f"db: there is no database at {missing}" in " ".join(err.split())
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # was: an empty database, and the folder it is in


@pytest.mark.parametrize(
    ("db", "reason"),
    [
        ("{tmp}", "is a directory, not a database"),
        ("sqlite:///{tmp}/junk.db", "file is not a database"),
        ("nosuchengine://host/db", "cannot open nosuchengine://host/db"),
        ("mysql://user@127.0.0.1:1/db", "cannot open mysql://user@127.0.0.1:1/db"),  # (no driver, or no server)
        ("postgresql://nobody:hidden@127.0.0.1:1/nothing", "cannot open postgresql+psycopg://nobody:***@127.0.0.1:1"),
    ],
    ids=["directory", "not-a-database", "unknown-scheme", "no-driver", "no-server"],
)
@pytest.mark.parametrize("command", [_READS[0], ["simulate", "--workspace", "acme", "--job", "j", "--tasks", "2"]],
                         ids=lambda c: c[0])
def test_a_db_that_cannot_be_opened_exits_2_with_the_reason_not_a_traceback(tmp_path, capsys, db, reason, command):
    (tmp_path / "junk.db").write_text("not a database, but notes\n")
    code, out, err = _main(capsys, [command[0], "--db", db.format(tmp=tmp_path), *command[1:]])
    assert (code, out) == (2, ""), err
    said = " ".join(err.split())
    assert said.startswith(f"taskstore {command[0]}: db: ") and reason in said, said
    assert "Traceback" not in err and "hidden" not in err
    assert (tmp_path / "junk.db").read_text() == "not a database, but notes\n"
