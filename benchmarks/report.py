"""Presenting a run: RESULTS.md (one table per question, a headline of the goals) and a PNG chart per question of how
each cost grows with the size of the job."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from .harness import Measurement, ratio

WHOLE = "whole log"


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "—"
    if b < 1024 * 1024:
        return f"{b / 1024:.0f} KiB"
    return f"{b / 1024 / 1024:.1f} MiB"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 else f"{r:.2g}"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    if r >= 100:
        return f"{r:,.0f}×"
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def fmt_size(n: int) -> str:
    return f"{n:,}"


def find(ms: Sequence[Measurement], m: Measurement, op: str) -> Measurement | None:
    for x in ms:
        if x.operation == op and x.engine == m.engine and x.size == m.size and x.samples and not x.skipped:
            return x
    return None


def verdicts(ms: Sequence[Measurement], m: Measurement) -> list[tuple[str, float | None, str, str]]:
    """(baseline, ratio, goal text, verdict) for each comparison of ``m``."""
    out = []
    for c in m.comparisons:
        b = find(ms, m, c.baseline)
        r = ratio(m, b) if (b and m.samples) else None
        if c.goal is None:
            verdict = ""
        elif r is None:
            verdict = "not measured"
        else:
            verdict = "met" if r >= c.goal else "NOT met"
        out.append((c.baseline, r, c.goal_text, verdict))
    if m.limit is not None and m.samples:
        out.append(("", None, m.limit[1], "met" if m.median <= m.limit[0] else "NOT met"))
    return out


def _table(ms: Sequence[Measurement], question: list[Measurement]) -> list[str]:
    lines = [
        "| operation | engine | job size (tasks) | per | median | min | max | rate at the median | ratio to baseline "
        "| peak memory | goal |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for m in question:
        if m.skipped:
            lines.append(f"| {m.operation} | {m.engine} | {fmt_size(m.size)} | {m.unit} | skipped: {m.skipped} "
                         "| | | | | | |")
            continue
        v = verdicts(ms, m)
        ratios = "<br>".join(fmt_ratio(r) + f" {b}" for b, r, _, _ in v if b) or "baseline"
        goals = "<br>".join(f"{g}: **{verdict}**" for _, _, g, verdict in v if g) or "—"
        per = m.unit + (f" ({m.note})" if m.note else "")
        lines.append(
            f"| {m.operation} | {m.engine} | {fmt_size(m.size)} | {per} | {fmt_seconds(m.median)} "
            f"| {fmt_seconds(min(m.samples))} | {fmt_seconds(max(m.samples))} | {fmt_rate(m.rate)} {m.rate_unit}/s | {ratios} "
            f"| {fmt_bytes(m.peak_bytes)} | {goals} |"
        )
    return lines


def headline(ms: Sequence[Measurement], questions: Sequence[ModuleType]) -> list[str]:
    """One row per (question, goal, engine, size); where a goal applies to several operations (every page of every
    sort), the row shows the worst of them and how many met it."""
    titles = {q.KEY: q.TITLE for q in questions}
    groups: dict[tuple[str, str, str, int], list[tuple[Measurement, str, float | None, str]]] = {}
    for m in ms:
        if m.skipped:
            continue
        for b, r, g, verdict in verdicts(ms, m):
            if g:
                groups.setdefault((m.question, g, m.engine, m.size), []).append((m, b, r, verdict))
    lines = ["| question | goal | engine | job size | operation (worst, where several) | figure | verdict |",
             "|---|---|---|---:|---|---:|---|"]
    for (q, g, engine, size), rows in groups.items():
        def badness(row: tuple[Measurement, str, float | None, str]) -> float:
            m, b, r, _ = row
            return -(r or 0.0) if b else m.median

        m, b, r, verdict = max(rows, key=badness)
        figure = (fmt_ratio(r) + f" {b}") if b else fmt_seconds(m.median)
        measured = [row for row in rows if row[3] != "not measured"]
        met = sum(1 for row in measured if row[3] == "met")
        if not measured:
            verdict = "not measured"
        elif len(rows) > 1:
            verdict = "met" if met == len(measured) else f"NOT met ({met} of {len(measured)} met)"
            if len(measured) < len(rows):
                verdict += f"; {len(rows) - len(measured)} not measured"
        lines.append(f"| {titles.get(q, q)} | {g} | {engine} | {fmt_size(size)} | {m.operation} | {figure} "
                     f"| **{verdict}** |")
    return lines


# The memory goal (issue 5): taskstore's own operations of the questions that set ``MEMORY_BOUNDED`` hold what one batch
# or page needs, whatever the job's size. Judged from the peak memory each size's run measured: at the largest size at
# most MEMORY_GROWTH times the smallest size's, plus MEMORY_SLACK bytes (allocator noise on peaks of a few KiB).
MEMORY_GOAL = "peak memory bounded by the batch or page, not by the job's size"
MEMORY_GROWTH, MEMORY_SLACK = 1.25, 64 * 1024
TASKSTORE_OPERATIONS = ("TaskStore.", "EventLog.", "TaskQueries.", "taskstore ")


def memory(ms: Sequence[Measurement], questions: Sequence[ModuleType]) -> list[str]:
    """One row per taskstore operation (of a question that sets ``MEMORY_BOUNDED``) and engine with a peak measured
    at two sizes or more: its peak at the smallest and at the largest size, and whether it stayed bounded."""
    titles = {q.KEY: q.TITLE for q in questions if getattr(q, "MEMORY_BOUNDED", False)}
    peaks: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
    for m in ms:
        if (m.question in titles and m.operation.startswith(TASKSTORE_OPERATIONS) and m.peak_bytes is not None
                and not m.skipped):
            peaks[(m.question, m.operation, m.engine)][m.size] = m.peak_bytes
    lines = ["| question | operation | engine | job sizes | peak memory, smallest job | peak memory, largest job | "
             "verdict |", "|---|---|---|---|---:|---:|---|"]
    rows = 0
    for (q, op, engine), by_size in peaks.items():
        if len(by_size) < 2:
            continue
        small, large = min(by_size), max(by_size)
        bounded = by_size[large] <= by_size[small] * MEMORY_GROWTH + MEMORY_SLACK
        lines.append(f"| {titles[q]} | {op} | {engine} | {fmt_size(small)} to {fmt_size(large)} "
                     f"| {fmt_bytes(by_size[small])} | {fmt_bytes(by_size[large])} "
                     f"| **{'met' if bounded else 'NOT met'}** |")
        rows += 1
    return lines if rows else []


def chart(ms: Sequence[Measurement], key: str, title: str, path: Path) -> bool:
    """One PNG per question: for each engine and unit, cost against job size, one line per operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [m for m in ms if m.question == key and m.samples and not m.skipped]
    if not ok:
        return False
    engines = sorted({m.engine for m in ok}, key=lambda e: (e != "sqlite", e))
    units = list(dict.fromkeys(m.unit for m in ok))
    single = len({m.size for m in ok}) == 1
    most = max(len({m.operation for m in ok if m.unit == u and m.engine == e}) for u in units for e in engines)
    row_h = max(4.2, 0.32 * most) if single else 4.2
    width = 7.5 if single else 6.5
    fig, axes = plt.subplots(len(units), len(engines), figsize=(width * len(engines), row_h * len(units)),
                             squeeze=False)
    for row, unit in enumerate(units):
        for col, engine in enumerate(engines):
            ax = axes[row][col]
            series: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
            for m in ok:
                if m.unit != unit or m.engine != engine or (unit == WHOLE and not m.events_per_unit):
                    continue
                scale = (1e6 / m.events_per_unit) if unit == WHOLE else 1e3
                series[m.operation].append((m.size, m.median * scale, min(m.samples) * scale, max(m.samples) * scale))
            ylabel = "µs per event" if unit == WHOLE else f"ms per {unit}"
            sizes = {p[0] for pts in series.values() for p in pts}
            if len(sizes) == 1:  # one job size: bars, one per operation, with the spread
                names = list(series)
                meds = [series[n][0][1] for n in names]
                err = [[series[n][0][1] - series[n][0][2] for n in names], [series[n][0][3] - series[n][0][1] for n in names]]
                for i, n in enumerate(names):  # points, not bars: a bar's length means nothing on a log axis
                    ax.errorbar([meds[i]], [i], xerr=[[err[0][i]], [err[1][i]]], fmt="o", capsize=3, color=f"C{i % 10}")
                ax.set_yticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=7)
                ax.invert_yaxis()
                hi = max(m_ + e for m_, e in zip(meds, err[1]))
                if hi / max(min(meds), 1e-12) > 20:
                    ax.set_xscale("log")
                    ax.set_xlabel(ylabel + " (log scale)")
                else:
                    ax.set_xlim(0, hi * 1.1)
                    ax.set_xlabel(ylabel)
                ax.set_title(f"{engine}, job of {next(iter(sizes)):,} tasks: "
                             f"{'replay, cost per event' if unit == WHOLE else unit}", fontsize=9)
                ax.grid(True, which="both", alpha=0.3)
                continue
            for op, pts in series.items():
                pts.sort()
                xs = [p[0] for p in pts]
                ys = [p[1] for p in pts]
                err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=op)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("tasks in the job")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{engine}: {'replay, cost per event' if unit == WHOLE else unit}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _run_lines(run: dict[str, Any], bullet: str) -> list[str]:
    """What the report says of one run: when, where, which code, the command, the mode, how long, the load."""
    m_ = run["machine"]
    return [
        f"{bullet}**Date**: {run['date']}",
        f"{bullet}**Machine**: {m_['cores']} cores ({m_.get('cpu', '?')}), {m_['memory']} memory, {m_['os']}; "
        f"Python {m_['python']}, SQLite {m_['sqlite']}" + (f", {run['pg_version']}" if run.get("pg_version") else ""),
        f"{bullet}**Code**: {run['code']}",
        f"{bullet}**Command**: `{run['command']}`",
        f"{bullet}**Mode**: {run['mode']}",
        f"{bullet}**Run time**: {run['elapsed']:.0f} s wall, {run['cpu']:.0f} s of CPU in this process (job templates "
        f"built in {run['build']:.0f} s of it)"
        + ("; by question, templates built for it included: " + ", ".join(
            f"{k} {v:.0f} s" for k, v in run["spent"].items()) if run.get("spent") else ""),
        f"{bullet}**Load average** (1 min) at start and end: {run['load'][0]:.2f}, {run['load'][1]:.2f}"
        + (" (other processes shared the machine: absolute times are noisier than ratios)"
           if max(run["load"]) > 0.5 * int(m_["cores"]) else ""),
    ]


def write(
    path: Path,
    ms: Sequence[Measurement],
    questions: Sequence[ModuleType],
    *,
    runs: Sequence[dict[str, Any]],
    notes: dict[str, list[str]],
) -> list[Path]:
    """Write RESULTS.md and the charts beside it (when matplotlib, of the ``bench`` extra, is installed); returns the
    files written. ``runs``: the description of the run the measurements come from, or of each of several merged
    runs (``runs.py``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401
        can_draw = True
    except ImportError:
        can_draw = False
    written = [path]
    one = len(runs) == 1
    lines = ["# taskstore benchmark results", ""]
    if one:
        lines += _run_lines(runs[0], "- ")
    else:
        lines += [(f"- **Runs**: {len(runs)} runs of the same code, in the same mode, merged into this report by "
                   "`python -m benchmarks --render` (every figure comes from one of them, measured side by side with "
                   "its baseline in that run):"), ""]
        for n, run in enumerate(runs, 1):
            lines += ([""] if n > 1 else []) + [f"{n}. Run {n}:"] + _run_lines(run, "   - ")
    lines += [
        *([] if can_draw else ["- **Charts**: not drawn (matplotlib is not installed: `pip install -e '.[bench]'`)"]),
        "",
        f"Every figure below was measured in {'this one run' if one else 'one run'}, on "
        f"{'this machine' if one else 'the machine that run names'}, side by side with its baseline: the ratio "
        "is what matters, the absolute times only describe the machine. Each row is the median of several "
        "repetitions after a warm-up; min and max show the spread. *Ratio to baseline* is this operation's rate "
        "divided by the baseline's rate (above 1: faster than the baseline). Each benchmark runs on a database of "
        "its own (a temporary SQLite file; on PostgreSQL a fresh schema, dropped afterwards) that already holds a "
        "job of the stated size, so the tables show how each cost grows with the job. Peak memory is the Python "
        "heap (tracemalloc) in an extra, untimed run of one unit; memory that SQLite or libpq allocate in C is not "
        "counted. Goals are stated next to the figure, and a goal that is not met says **NOT met**; nothing here is "
        "tuned to a goal.",
        "",
        "## Goals at a glance",
        "",
        *headline(ms, questions),
        "",
    ]
    if table := memory(ms, questions):
        lines += [
            "## Memory against the job's size",
            "",
            f"Goal: {MEMORY_GOAL} (met when the peak at the largest job is at most {MEMORY_GROWTH}× the peak at the "
            f"smallest, plus {MEMORY_SLACK // 1024} KiB). Each peak comes from the run that measured that size (the "
            "Python heap in an untimed run of one unit, as in the tables below).",
            "",
            *table,
            "",
        ]
    for n, q in enumerate(questions, 1):
        mine = [m for m in ms if m.question == q.KEY]
        lines += [f"## {n}. {q.TITLE}", ""]
        doc = (q.__doc__ or "").strip().split("\n\n", 1)
        body = doc[1] if len(doc) > 1 else doc[0]
        lines += [" ".join(body.split()) if "\n- " not in body else body, "", f"**Goal**: {q.GOAL}.", ""]
        if not mine:
            lines += ["Not run in this mode or on these engines.", ""]
            continue
        lines += _table(ms, mine) + [""]
        png = path.parent / f"{q.KEY}.png"
        draw = getattr(q, "chart", None)
        if can_draw and (draw(mine, png) if draw else chart(ms, q.KEY, q.TITLE, png)):
            written.append(png)
            lines += [f"![{q.TITLE}]({png.name})", ""]
        for text in notes.get(q.KEY, []):
            lines += [f"- {text}"]
        if notes.get(q.KEY):
            lines.append("")
    if notes.get("general"):
        lines += ["## Notes", ""] + [f"- {t}" for t in notes["general"]] + [""]
    path.write_text("\n".join(lines))
    return written
