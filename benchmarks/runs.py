"""A run's ``results.json``: what it holds, reading it back, and merging several runs into one report.

A full-mode run of every question at every size takes longer than one sitting allows, so the published report may be
made of several runs (a size or an engine each) of the same code, on the same kind of machine: ``python -m benchmarks
--render A/results.json B/results.json --out C/RESULTS.md``. Every comparison still comes from one run (a
measurement and its baseline are always measured side by side); the merge refuses runs of different code (the git
trees of the measured packages differ, or either run had uncommitted changes in them), runs of different modes
(quick, full, smoke), and runs that measured the same thing twice, unless asked to let a later run supersede an
earlier one's figures for a question it measured again (after a fix of the instrument). The report lists every run
it was made from.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .harness import Comparison, Measurement

# The packages whose speed the benchmark measures: two runs are of the same code when these trees are equal.
MEASURED = ("eventstore", "projections", "taskstore", "api")


class MergeRefused(ValueError):
    """The runs cannot make one report; the message says why."""


ROOT = Path(__file__).resolve().parent.parent
_COMMITTED = re.compile(r"commit ([0-9a-f]{7,40}) \(.*as committed\)")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _changed(root: Path) -> bool:
    """Whether the checkout's measured packages have uncommitted changes."""
    return bool(_git(root, "status", "--porcelain", "--", *MEASURED))


def code_trees(root: Path = ROOT, commit: str = "HEAD") -> dict[str, str] | None:
    """The git tree id of each measured package at ``commit``, or None when the checkout's are not as committed
    (uncommitted changes in them; asked of HEAD only), the commit is unknown, or this is not a git checkout."""
    try:
        if commit == "HEAD" and _changed(root):
            return None
        ids = _git(root, "rev-parse", *(f"{commit}:{p}" for p in MEASURED)).split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return dict(zip(MEASURED, ids, strict=True))


def code_version(root: Path = ROOT) -> str:
    """The commit measured, and whether the measured packages had uncommitted changes (as the report says it)."""
    try:
        head, dirty = _git(root, "rev-parse", "--short", "HEAD"), _changed(root)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (f" with uncommitted changes in {'/'.join(MEASURED)}" if dirty else
                               f" ({', '.join(MEASURED)} as committed)")


def dump(runs: list[dict[str, Any]], notes: dict[str, list[str]], questions: list[str],
         results: list[Measurement]) -> dict[str, Any]:
    """What ``results.json`` holds: the runs' descriptions (one for a run, several for a merge), the notes, the
    questions asked and every measurement."""
    return {"runs": runs, "notes": notes, "questions": questions, "results": [asdict(m) for m in results]}


def load(path: Path) -> dict[str, Any]:
    """A ``results.json`` read back: measurements as ``Measurement``s and ``runs`` always a list (a file written
    before merges existed holds one run's ``meta``)."""
    raw = json.loads(path.read_text())
    results = []
    for r in raw["results"]:
        r["comparisons"] = [Comparison(**c) for c in r["comparisons"]]
        if r.get("limit") is not None:
            r["limit"] = tuple(r["limit"])
        results.append(Measurement(**r))
    runs = raw["runs"] if "runs" in raw else [raw["meta"]]
    for run in runs:
        run["load"] = tuple(run["load"])
        if "trees" not in run:  # written before runs recorded them: those of its commit, if it ran as committed
            committed = _COMMITTED.search(str(run.get("code", "")))
            run["trees"] = code_trees(ROOT, committed.group(1)) if committed else None
    return {"runs": runs, "notes": raw["notes"], "questions": raw["questions"], "results": results,
            "source": str(path)}


def _mode(run: dict[str, Any]) -> str:
    return str(run["mode"]).split(":", 1)[0].split(" ", 1)[0]  # "full", "quick" or "smoke"


def _identity(run: dict[str, Any]) -> tuple | None:
    """What says that two runs measured the same code: the measured packages' git trees (None: unknown)."""
    return tuple(sorted(run["trees"].items())) if run.get("trees") else None


def merge(loaded: list[dict[str, Any]], *, supersede: bool = False) -> dict[str, Any]:
    """Several runs' contents as one, or ``MergeRefused``. A size, question and engine that one run skipped as a
    whole (its time budget ran out) and another measured keeps the measurement. With ``supersede``, a question that
    a later run (later in ``loaded``) measured again at an engine and size replaces the earlier run's figures for it
    (after a fix of the instrument: the measured code must still be the same), and the report's notes say so."""
    if len(loaded) == 1:
        return loaded[0]
    runs = [run for d in loaded for run in d["runs"]]
    identities = {_identity(run) for run in runs}
    if None in identities or len(identities) > 1:
        raise MergeRefused(
            "the runs did not measure the same code: "
            + "; ".join(f"{d['source']}: {run.get('code', '?')}" for d in loaded for run in d["runs"])
            + " (runs with uncommitted changes in " + ", ".join(MEASURED) + " are never merged)"
        )
    modes = {_mode(run) for run in runs}
    if len(modes) > 1:
        raise MergeRefused(f"the runs are of different modes ({', '.join(sorted(modes))}): one report is one mode")
    notes: dict[str, list[str]] = {}
    results: list[Measurement] = []
    seen: dict[tuple[str, str, str, int], str] = {}
    for d in loaded:
        again = {(m.question, m.engine, m.size) for m in d["results"] if m.operation != "(all)"}
        if supersede:
            replaced = {(q, e, n) for (q, _, e, n) in seen if (q, e, n) in again}
            results = [m for m in results if (m.question, m.engine, m.size) not in replaced]
            seen = {k: v for k, v in seen.items() if (k[0], k[2], k[3]) not in replaced}
            for q, e, n in sorted(replaced):
                notes.setdefault(q, []).append(f"{e}, {n:,} tasks: measured again by {d['source']}, which replaces "
                                               "an earlier run's figures (the same code, the instrument since mended)")
        for m in d["results"]:
            key = (m.question, m.operation, m.engine, m.size)
            if key in seen:
                raise MergeRefused(f"{m.operation!r} ({m.question}, {m.engine}, {m.size:,} tasks) is in both "
                                   f"{seen[key]} and {d['source']} (--supersede: the later one replaces it)")
            seen[key] = d["source"]
            results.append(m)
    measured = {(m.question, m.engine, m.size) for m in results if m.operation != "(all)"}
    results = [m for m in results if not (m.operation == "(all)" and (m.question, m.engine, m.size) in measured)]
    for d in loaded:
        for key, texts in d["notes"].items():
            mine = notes.setdefault(key, [])
            mine += [t for t in texts if t not in mine]
    questions = [q for d in loaded for q in d["questions"]]
    return {"runs": runs, "notes": notes, "questions": list(dict.fromkeys(questions)), "results": results}
