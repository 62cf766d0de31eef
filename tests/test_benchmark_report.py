"""The benchmark report's verdicts (benchmarks/report.py): a goal is met, not met, or not measured, and the table of
goals at a glance says which, counting only the rows that were measured. Nothing here is timed: the samples are
made up."""

from __future__ import annotations

from benchmarks import lists, report
from benchmarks.harness import Comparison, Measurement

GOAL = "≥ 10× the baseline"


def _m(op: str, seconds: float | None, *comps: Comparison, skipped: str = "") -> Measurement:
    return Measurement(lists.KEY, op, "postgresql", 1000, "page", [] if seconds is None else [seconds] * 3, 50,
                       list(comps), skipped=skipped)


def _glance(ms: list[Measurement]) -> list[str]:
    return [line for line in report.headline(ms, [lists]) if GOAL in line]


def test_a_goal_whose_baseline_was_not_run_is_not_measured_rather_than_not_met():
    ms = [_m("page a", 0.001, Comparison("slow way", 10.0, GOAL)),
          _m("page b", 0.001, Comparison("slow way", 10.0, GOAL)),
          _m("slow way", None, skipped="not run at this size")]
    (line,) = _glance(ms)
    assert line.endswith("| **not measured** |")


def test_the_glance_counts_the_measured_rows_met_and_not_met():
    ms = [_m("page a", 0.001, Comparison("slow way", 10.0, GOAL)),  # 20×: met
          _m("page b", 0.004, Comparison("slow way", 10.0, GOAL)),  # 5×: not met
          _m("slow way", 0.02)]
    (line,) = _glance(ms)
    assert "| page b |" in line and line.endswith("| **NOT met (1 of 2 met)** |")
    ms[1] = _m("page b", 0.001, Comparison("slow way", 10.0, GOAL))
    (line,) = _glance(ms)
    assert line.endswith("| **met** |")


def test_rates_below_ten_keep_their_figures():
    assert report.fmt_rate(0.48) == "0.48"
    assert report.fmt_rate(151_141.2) == "151,141"


def _peak(op: str, size: int, peak: int, engine: str = "sqlite") -> Measurement:
    return Measurement(lists.KEY, op, engine, size, "page", [0.001] * 3, 50, peak_bytes=peak)


def test_memory_that_grows_with_the_job_is_not_met_and_memory_that_does_not_is_met():
    ms = [_peak("taskstore first page", 10_000, 180_000), _peak("taskstore first page", 1_000_000, 190_000),
          _peak("taskstore last page", 10_000, 180_000), _peak("taskstore last page", 200_000, 400_000),
          _peak("taskstore last page", 1_000_000, 9_000_000),
          _peak("fold the scope's events", 10_000, 10**7), _peak("fold the scope's events", 10**6, 10**9)]
    rows = report.memory(ms, [lists])
    first = next(r for r in rows if "| taskstore first page |" in r)
    last = next(r for r in rows if "| taskstore last page |" in r)
    assert first.endswith("| **met** |") and "10,000 to 1,000,000" in first
    assert last.endswith("| **NOT met** |") and "8.6 MiB" in last
    assert not any("fold the scope" in r for r in rows)  # a baseline's memory is not taskstore's goal


def test_memory_measured_at_one_size_only_makes_no_memory_table():
    assert report.memory([_peak("taskstore first page", 10_000, 180_000)], [lists]) == []
