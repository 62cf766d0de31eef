"""The command line of replay: ``taskstore rebuild``, ``taskstore audit`` and ``taskstore snapshot``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from eventstore import Scope, ValidationError
from projections.rebuild import RebuildInProgress
from projections.snapshots import COUNTS, FULL, StaleProjection

from .cli_db import open_db
from .store import open_store

console = Console(stderr=True)


def add_replay_commands(sub: argparse._SubParsersAction, db_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("rebuild", help="rebuild the task view and count summaries from the log, and swap them in")
    db_arg(p)
    p.add_argument("--from-snapshots", action="store_true",
                   help="start each scope from its newest verified snapshot instead of its first event")
    p.add_argument("--batch-size", type=_positive, default=5000,
                   help="events per write transaction (default: %(default)s)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="processes that fold a large scope from the log, each a run of its tasks "
                        "(default: one per core, at most 8; 1: in this process)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=cmd_rebuild)

    p = sub.add_parser("audit", help="fold the log again and compare with the live task view and count summaries")
    db_arg(p)
    p.add_argument("--workspace", help="only this workspace's scopes")
    p.add_argument("--job", help="only this job's scopes")
    p.add_argument("--execution", help="only this execution's scopes")
    p.add_argument("--no-snapshots", action="store_true", help="fold from the first event only, not from snapshots")
    p.add_argument("--limit", type=_non_negative, default=1000,
                   help="differences to list at most (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_audit)

    p = sub.add_parser("snapshot", help="take a snapshot of a scope now, or every snapshot that is due")
    db_arg(p)
    p.add_argument("--workspace", help="the workspace (tenant) the job belongs to")
    p.add_argument("--job", help="the job id")
    p.add_argument("--execution", default="default", help="the execution of the job (default: %(default)s)")
    p.add_argument("--kind", choices=[FULL, COUNTS], default=FULL,
                   help="full: task rows and counts; counts: counts alone (default: %(default)s)")
    p.add_argument("--due", action="store_true", help="take every snapshot that is due instead")
    p.add_argument("--json", action="store_true", help="print the snapshots taken as JSON")
    p.set_defaults(run=cmd_snapshot)


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def _print_json(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def _progress_bar(command: str, unit: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on standard error (none when it is not a terminal), and the callback that moves it:
    ``(done just now, expected in all so far)``; the total never falls below what is done."""
    columns = (
        TextColumn(f"[bold]{command}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        job = bar.add_task(unit, total=None)

        def progress(n: int, total: int | None) -> None:
            done = bar.tasks[0].completed + n
            bar.update(job, advance=n, total=max(total, done) if total is not None else None)

        yield progress


def cmd_rebuild(args: argparse.Namespace) -> int:
    with open_db(open_store, args.db, create=False, background_snapshots=False) as store:
        with _progress_bar("rebuild", "events") as progress:
            try:
                result = store.rebuild(from_snapshots=args.from_snapshots, batch_size=args.batch_size,
                                       progress=progress, workers=args.workers)
            except RebuildInProgress as exc:
                console.print(f"[red]taskstore rebuild: {escape(str(exc))}[/]")
                return 2
    doc = result.to_dict()
    if args.json:
        _print_json(doc)
        return 0
    Console().print(
        f"rebuilt the task view and count summaries: {result.events} events in {result.seconds:.2f}s "
        f"({doc['eventsPerSecond']}/s); {_count(result.scopes_from_snapshots, 'scope')} from snapshots, "
        f"{result.scopes_from_log} from the log; swapped in at position {result.checkpoint.position}"
        + (f"; {_count(result.skipped, 'event')} of streams that are not tasks skipped" if result.skipped else "")
    )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return "null" if value is None else str(value)


def cmd_audit(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    store = open_db(open_store, args.db, create=False, background_snapshots=False)
    with store, _progress_bar("audit", "tasks") as progress:
        from projections.audit import audit

        report = audit(
            store.log, workspace=args.workspace, job=args.job, execution=args.execution,
            snapshots=store.snapshots, from_snapshots=not args.no_snapshots, limit=args.limit, progress=progress,
        )
    if args.json:
        _print_json(report.to_dict())
        return 0 if report.ok else 1
    out = Console()
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    summary = (
        f"{_count(report.scopes, 'scope')}, {_count(report.tasks, 'task')}, {_count(report.events, 'event')}, "
        f"{_count(report.snapshots, 'snapshot')} audited in {time.perf_counter() - started:.2f}s"
    )
    if report.ok:
        out.print(f"{summary}: the live task view and count summaries agree with the log")
        return 0
    table = Table(title="differences")
    for name in ("scope", "task", "field", "live", "fold", "from"):
        table.add_column(name, overflow="fold")
    for d in report.differences:
        table.add_row(d.scope, d.task or "(counts)", d.field, escape(_show(d.live)), escape(_show(d.folded)), d.source)
    out.print(table)
    more = f" (and {report.more} more)" if report.more else ""
    out.print(f"{summary}: {_count(len(report.differences), 'difference')}{more}")
    return 1


def cmd_snapshot(args: argparse.Namespace) -> int:
    if not args.due and not (args.workspace and args.job):
        raise ValidationError("", "give --workspace and --job, or --due")
    with open_db(open_store, args.db, create=False, background_snapshots=False) as store:
        try:
            if args.due:
                taken = store.snapshots.take_due()
            else:
                scope = Scope(args.workspace, args.job, args.execution)
                snap = store.snapshot(scope, args.kind)
                taken = [snap] if snap is not None else []
        except StaleProjection as exc:
            console.print(f"[red]taskstore snapshot: {escape(str(exc))}[/]")
            return 2
    if args.json:
        _print_json([s.to_dict() for s in taken])
        return 0
    out = Console()
    if not taken:
        out.print("no snapshot taken" + ("" if args.due else ": the scope has no events"))
    for s in taken:
        out.print(
            f"snapshot #{s.id} ({s.kind}) of scope {s.scope_id} at position {s.position}: {s.tasks} tasks, "
            f"{'verified' if s.verified else 'NOT verified'} ({s.detail})"
        )
    return 0
