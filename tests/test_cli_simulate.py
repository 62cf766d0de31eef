"""``taskstore simulate``, on both engines.

- ``--json`` prints what it wrote: the job's tasks, its events and its tasks by state, the same as the store's count
  summary and log then hold; the same ``--seed`` drives another job to the same states.
- ``--tasks`` below 1 and a scope that is not one exit 2 with the reason, and nothing is written.
"""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select

from eventstore import Scope
from eventstore.schema import events
from projections import engine_sql


@pytest.fixture
def cli(taskstore_cli):
    """``taskstore simulate ARGS...`` against the test's database: (exit code, stdout, stderr)."""
    return lambda *args: taskstore_cli("simulate", *args)


def test_simulate_json_is_what_the_store_then_holds(cli, store):
    code, out, err = cli("--workspace", "acme", "--job", "sim", "--tasks", "40", "--seed", "5", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    scope = Scope("acme", "sim")
    summary = store.queries.counts(scope)
    assert doc["tasks"] == summary.total == 40
    assert doc["states"] == {s.value: n for s, n in summary.states.items() if n}
    with store.log.reading() as conn:
        assert doc["events"] == engine_sql.count_since(conn, store.log.scope_id(scope), None)
    assert (doc["workspace"], doc["job"], doc["execution"]) == ("acme", "sim", "default")


def test_the_same_seed_drives_another_job_to_the_same_states(cli):
    first = orjson.loads(cli("--workspace", "acme", "--job", "one", "--tasks", "30", "--seed", "9", "--json")[1])
    second = orjson.loads(cli("--workspace", "acme", "--job", "two", "--tasks", "30", "--seed", "9", "--json")[1])
    assert first["states"] == second["states"] and first["events"] == second["events"]


def test_the_table_output_names_the_scope_and_every_state_it_reached(cli, store):
    code, out, _ = cli("--workspace", "acme", "--job", "table", "--tasks", "25")
    assert code == 0
    assert out.splitlines()[0].startswith("acme/table/default: 25 tasks, ")
    summary = store.queries.counts(Scope("acme", "table"))
    for state, n in summary.states.items():
        if n:
            assert [state.value, str(n)] in [[w for w in line.split() if w != "│"] for line in out.splitlines()]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--workspace", "acme", "--job", "none", "--tasks", "0"], "tasks: must be at least 1"),
        (["--workspace", "acme", "--job", "bad job", "--tasks", "3"], "not a valid job"),
    ],
)
def test_bad_input_exits_2_with_the_reason_and_writes_nothing(cli, store, args, reason):
    got, out, err = cli(*args)
    assert got == 2 and out == ""
    assert reason in " ".join(err.split())
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 0


def test_ctrl_c_exits_130_with_a_line_not_a_traceback(cli, monkeypatch):
    from taskstore import cli as cli_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "simulate", interrupted)
    got, out, err = cli("--workspace", "acme", "--job", "stopped", "--tasks", "3")
    assert (got, out) == (130, "") and err.strip() == "taskstore simulate: interrupted"
