"""The benchmark instrument itself (``python -m benchmarks``): every question runs at a tiny job size on each engine
and the report names every question with measured rows, none failed or skipped. Nothing here is timed: this checks
that the instrument still measures what it says after a change to the code it measures."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.__main__ import main
from benchmarks.suite import QUESTIONS
from tests.conftest import PG_URL, REQUIRE_PG, pg_unavailable


def _questions(engine: str) -> list:
    out = []
    for q in QUESTIONS:
        if engine not in q.ENGINES:
            continue
        marks = []
        if q.KEY == "peers" and importlib.util.find_spec("eventsourcing") is None:
            marks.append(pytest.mark.skip(reason="the peers question needs the bench extra (eventsourcing)"))
        out.append(pytest.param(q, id=q.KEY, marks=marks))
    return out


def _run(tmp_path, question, pg: str | None) -> str:
    out = tmp_path / "RESULTS.md"
    argv = ["--smoke", "--only", question.KEY, "--out", str(out)]
    argv += ["--engines", "postgresql", "--pg", pg] if pg else ["--engines", "sqlite"]
    assert main(argv) == 0
    return out.read_text()


def _check(report: str, question, engine: str) -> None:
    assert f". {question.TITLE}" in report
    section = report.split(f". {question.TITLE}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and f"| {engine} |" in line]
    assert rows, f"no measured row of {question.KEY} on {engine}"
    assert "failed:" not in report and "time budget" not in report


@pytest.mark.parametrize("question", _questions("sqlite"))
def test_every_question_measures_on_sqlite(tmp_path, question):
    _check(_run(tmp_path, question, None), question, "sqlite")


@pytest.mark.postgres
@pytest.mark.parametrize("question", _questions("postgresql"))
def test_every_question_measures_on_postgresql(tmp_path, question):
    reason = pg_unavailable()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"TASKSTORE_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    _check(_run(tmp_path, question, PG_URL), question, "postgresql")


@pytest.mark.parametrize("key", ["lists", "counts"])
def test_above_the_fold_bound_the_event_history_baseline_is_reported_as_not_run(tmp_path, monkeypatch, key):
    from benchmarks import harness

    monkeypatch.setattr(harness, "FOLD_UP_TO", 0)  # the smoke job is then "too large" to fold
    question = next(q for q in QUESTIONS if q.KEY == key)
    report = _run(tmp_path, question, None)
    fold = [line for line in report.splitlines() if line.startswith(f"| {question.FOLD} | sqlite |")]
    assert fold and all("skipped: not run above 0 tasks: it holds every task in memory" in line for line in fold)
    measured = [line for line in report.splitlines()
                if line.startswith(("| taskstore", "| TaskQueries")) and "| sqlite |" in line and "skipped" not in line]
    assert measured, "the questions' own rows are measured still"
    assert "failed:" not in report  # a row without samples is reported, and breaks nothing around it


@pytest.mark.postgres
def test_above_the_clone_bound_the_writing_questions_share_one_job_and_measure(tmp_path, monkeypatch):
    """Above ``harness.CLONE_UP_TO`` (10,000,000 tasks in full mode) every contender of the writing questions writes
    to the one PostgreSQL template in place, each adding tasks of its own: none collides with another's, and every
    question measures."""
    from benchmarks import harness

    reason = pg_unavailable()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"TASKSTORE_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    monkeypatch.setattr(harness, "CLONE_UP_TO", 100)
    builds = []
    build = harness.SimulatedJob.build
    monkeypatch.setattr(harness.SimulatedJob, "build", lambda self, store, size: (builds.append(size),
                                                                                  build(self, store, size)))
    keys = ["append", "transitions", "concurrency", "http", "counts"]
    out = tmp_path / "RESULTS.md"
    assert main(["--smoke", "--sizes", "150", "--only", *keys, "--engines", "postgresql", "--pg", PG_URL,
                 "--out", str(out)]) == 0
    report = out.read_text()
    for q in QUESTIONS:
        if q.KEY in keys:
            _check(report, q, "postgresql")
    assert report.count("the job's template is used in place") >= 3  # said of append, transitions, concurrency
    assert builds == [150]  # one template: the readers first, then every writer on it


def test_above_its_bound_the_eventsourcing_comparison_is_reported_as_not_run(tmp_path, monkeypatch):
    from benchmarks import peers

    monkeypatch.setattr(peers, "PEERS_UP_TO", 0)  # the smoke job is then "too large" for the comparison
    report = _run(tmp_path, peers, None)
    rows = [line for line in report.splitlines() if line.startswith("| ") and "| sqlite |" in line]
    assert len(rows) == 6 and all("skipped: not run above 0 tasks: eventsourcing's job is written" in r for r in rows)
    assert "failed:" not in report
