"""One report from several benchmark runs (benchmarks/runs.py, ``python -m benchmarks --render A B``): runs of the
same code and mode merge, with every run named in the report; runs of other code, of another mode, or that measured
the same thing twice are refused. Nothing here is timed: the samples are made up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import lists, runs
from benchmarks.harness import Comparison, Measurement

TREES = {p: f"{i:040x}" for i, p in enumerate(runs.MEASURED, 1)}


def _run(size: int, *, trees: dict[str, str] | None = TREES, mode: str = "full: sizes ...", date: str = "d") -> dict:
    return {"date": date, "machine": {"cores": "2", "memory": "23.5 GiB", "os": "Linux", "python": "3.11.7",
                                      "sqlite": "3.40.1", "cpu": "AMD EPYC"},
            "pg_version": None, "command": f"python -m benchmarks --sizes {size}", "mode": mode, "elapsed": 10.0,
            "build": 1.0, "code": "commit abc1234 (eventstore, projections and taskstore as committed)",
            "trees": trees, "load": (0.1, 0.2), "cpu": 5.0, "spent": {}}


def _page(size: int, seconds: float, op: str = "taskstore page") -> list[Measurement]:
    return [Measurement(lists.KEY, "raw page", "sqlite", size, "page", [seconds * 2] * 3, 50),
            Measurement(lists.KEY, op, "sqlite", size, "page", [seconds] * 3, 50,
                        [Comparison("raw page", 0.5, "≥ 0.5× raw")])]


def _save(tmp_path: Path, name: str, run: dict, results: list[Measurement], notes: dict | None = None) -> Path:
    path = tmp_path / name / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(runs.dump([run], notes or {}, [lists.KEY], results)))
    return path


def test_two_runs_of_the_same_code_make_one_report_naming_both(tmp_path):
    a = _save(tmp_path, "a", _run(10_000, date="first day"), _page(10_000, 0.001), {lists.KEY: ["shared", "a"]})
    b = _save(tmp_path, "b", _run(200_000, date="second day"), _page(200_000, 0.002), {lists.KEY: ["shared", "b"]})
    out = tmp_path / "merged" / "RESULTS.md"
    assert cli.main(["--render", str(a), str(b), "--out", str(out)]) == 0
    text = out.read_text()
    assert "2 runs of the same code" in text
    assert "first day" in text and "second day" in text
    assert "| taskstore page | sqlite | 10,000 |" in text and "| taskstore page | sqlite | 200,000 |" in text
    assert text.count("- shared") == 1 and "- a" in text and "- b" in text
    merged = runs.load(out.parent / "results.json")  # the merge is a results.json too, and renders again
    assert [r["date"] for r in merged["runs"]] == ["first day", "second day"]
    assert sorted((m.size, m.operation) for m in merged["results"]) == sorted(
        (m.size, m.operation) for m in _page(10_000, 0.001) + _page(200_000, 0.002))


def test_a_merge_never_overwrites_a_run_it_merges(tmp_path, capsys):
    a = _save(tmp_path, "a", _run(10_000), _page(10_000, 0.001))
    b = _save(tmp_path, "b", _run(200_000), _page(200_000, 0.002))
    before = a.read_text()
    assert cli.main(["--render", str(a), str(b), "--out", str(a.parent / "RESULTS.md")]) == 2
    assert "folder of its own" in capsys.readouterr().err
    assert a.read_text() == before and not (a.parent / "RESULTS.md").exists()


def test_runs_of_other_code_are_refused(tmp_path, capsys):
    other = dict(TREES, projections="f" * 40)
    a = _save(tmp_path, "a", _run(10_000), _page(10_000, 0.001))
    b = _save(tmp_path, "b", _run(200_000, trees=other), _page(200_000, 0.002))
    assert cli.main(["--render", str(a), str(b), "--out", str(tmp_path / "m" / "RESULTS.md")]) == 2
    assert "did not measure the same code" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_run_with_uncommitted_changes_is_never_merged(tmp_path):
    a = runs.load(_save(tmp_path, "a", _run(10_000), _page(10_000, 0.001)))
    b = runs.load(_save(tmp_path, "b", _run(200_000, trees=None), _page(200_000, 0.002)))
    b["runs"][0]["code"] = "commit abc1234 with uncommitted changes in eventstore/projections/taskstore"
    with pytest.raises(runs.MergeRefused, match="same code"):
        runs.merge([a, b])


def test_runs_of_different_modes_are_refused(tmp_path):
    a = runs.load(_save(tmp_path, "a", _run(10_000), _page(10_000, 0.001)))
    b = runs.load(_save(tmp_path, "b", _run(200_000, mode="quick: sizes 200,000"), _page(200_000, 0.002)))
    with pytest.raises(runs.MergeRefused, match="different modes"):
        runs.merge([a, b])


def test_the_same_measurement_in_two_runs_is_refused(tmp_path):
    a = runs.load(_save(tmp_path, "a", _run(10_000), _page(10_000, 0.001)))
    b = runs.load(_save(tmp_path, "b", _run(10_000), _page(10_000, 0.003)))
    with pytest.raises(runs.MergeRefused, match="is in both"):
        runs.merge([a, b])


def test_a_question_measured_again_supersedes_the_earlier_figures_only_when_asked(tmp_path):
    a = runs.load(_save(tmp_path, "a", _run(10_000), _page(10_000, 0.001) + _page(200_000, 0.001)))
    b = runs.load(_save(tmp_path, "b", _run(10_000), _page(10_000, 0.003)))
    with pytest.raises(runs.MergeRefused, match="is in both"):
        runs.merge([a, b])
    merged = runs.merge([a, b], supersede=True)
    got = {(m.size, m.operation): m.samples[0] for m in merged["results"]}
    assert got == {(10_000, "raw page"): 0.006, (10_000, "taskstore page"): 0.003,  # b's, at the size it measured
                   (200_000, "raw page"): 0.002, (200_000, "taskstore page"): 0.001}  # a's, where b did not
    assert any("measured again" in t and "10,000 tasks" in t for t in merged["notes"][lists.KEY])


def test_what_one_run_skipped_for_its_budget_and_another_measured_keeps_the_measurement(tmp_path):
    skipped = Measurement(lists.KEY, "(all)", "sqlite", 200_000, "", [], 0, skipped="time budget of 60 s spent")
    a = runs.load(_save(tmp_path, "a", _run(10_000), _page(10_000, 0.001) + [skipped]))
    b = runs.load(_save(tmp_path, "b", _run(200_000), _page(200_000, 0.002)))
    merged = runs.merge([a, b])
    assert not [m for m in merged["results"] if m.skipped]
    alone = runs.merge([a])  # a run rendered on its own still says what it skipped
    assert [m.operation for m in alone["results"] if m.skipped] == ["(all)"]


def test_a_file_from_before_merges_reads_as_one_run(tmp_path):
    path = tmp_path / "results.json"
    old = runs.dump([_run(10_000, trees=None)], {}, [lists.KEY], _page(10_000, 0.001))
    old["meta"] = old.pop("runs")[0]
    del old["meta"]["trees"]
    path.write_text(json.dumps(old))
    got = runs.load(path)
    assert len(got["runs"]) == 1 and got["runs"][0]["load"] == (0.1, 0.2)
    assert [m.operation for m in got["results"]] == ["raw page", "taskstore page"]
    assert got["runs"][0]["trees"] is None  # commit abc1234 is not in this repository: its code is unknown
    head = runs.code_trees(runs.ROOT, "HEAD^{commit}")
    if head is None:
        pytest.skip("not a git checkout: an old file's commit cannot be looked up")
    short = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=runs.ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    old["meta"]["code"] = f"commit {short} (eventstore, projections and taskstore as committed)"
    path.write_text(json.dumps(old))
    assert runs.load(path)["runs"][0]["trees"] == head  # a commit of this repository: the trees it holds


def test_code_trees_name_the_measured_packages_as_committed_and_nothing_when_changed(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    for package in runs.MEASURED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"# {package}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "packages")
    trees = runs.code_trees(tmp_path)
    assert trees == {p: git("rev-parse", f"HEAD:{p}").strip() for p in runs.MEASURED}
    (tmp_path / "README.md").write_text("a change outside the measured packages\n")
    assert runs.code_trees(tmp_path) == trees
    (tmp_path / "projections" / "__init__.py").write_text("# changed\n")
    assert runs.code_trees(tmp_path) is None
