"""The ``taskstore`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from eventstore import DEFAULT_URL, EventStoreError, Scope, ValidationError

from .cli_db import open_db
from .replay_cli import add_replay_commands
from .simulate import planned_events, simulate
from .store import open_store

console = Console(stderr=True)


def _scope_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--workspace", required=required, help="the workspace (tenant) the job belongs to")
    p.add_argument("--job", required=required, help="the job id")
    p.add_argument("--execution", default="default", help="the execution of the job (default: %(default)s)")


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_URL, help="database URL (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskstore", description="An event-sourced task state store.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="drive a realistic job through the store and print a summary")
    _db_arg(p)
    _scope_args(p)
    p.add_argument("--tasks", type=int, required=True, help="how many tasks the job has")
    p.add_argument("--seed", type=int, default=0, help="random seed, for a reproducible job (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_simulate)
    add_replay_commands(sub, _db_arg)  # rebuild, audit, snapshot

    p = sub.add_parser("list", help="print one page of a job's tasks")
    _db_arg(p)
    _scope_args(p)
    p.add_argument("--state", action="append",
                   help="only tasks in this state (canonical or any dialect's name); repeatable")
    p.add_argument("--q", help="case-insensitive search over id, display name and labels (2+ characters)")
    p.add_argument("--filter", dest="filter_", metavar="EXPR",
                   help="an Azure Batch $filter expression, e.g. \"executionInfo/exitCode ne 0 and creationTime ge "
                        "2026-12-01T00:00:00Z\" (with --state, tasks that match both)")
    p.add_argument("--sort", default="createdAt:desc",
                   help="createdAt:desc (default), createdAt:asc, name:asc, name:desc, number:asc")
    p.add_argument("--limit", type=int, default=50, help="page size, 1 to 200 (default: %(default)s)")
    p.add_argument("--cursor", help="the nextCursor of the previous page")
    p.add_argument("--json", action="store_true", help='print the page as {"data": [...], "meta": {...}}')
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("task", help="print one task (as it is, or as it was at a log position) and its history")
    _db_arg(p)
    _scope_args(p)
    p.add_argument("--id", required=True, dest="task_id", help="the task id")
    p.add_argument("--as-of", type=int, metavar="POSITION",
                   help="the task as it was when the log ended at this position")
    p.add_argument("--history", action="store_true", help="also print the task's events (up to --as-of)")
    p.add_argument("--json", action="store_true", help='print {"task": {...}} (and "events": [...] with --history)')
    p.set_defaults(run=cmd_task)

    p = sub.add_parser("counts", help="print a job's count summary")
    _db_arg(p)
    _scope_args(p)
    p.add_argument("--as-of", type=int, metavar="POSITION",
                   help="the counts as they were when the log ended at this position (an earlier summary's)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_counts)

    _add_service_commands(sub)
    return parser


def _state_filter(values: list[str] | None):
    from eventstore import states_for
    from projections import Cmp

    if not values:
        return None
    wanted: set = set()
    for value in values:
        try:
            wanted |= states_for(value)
        except KeyError:
            raise ValidationError("state", f"{value!r} is not a state in any vocabulary") from None
    return Cmp("state", "eq", frozenset(wanted))


def cmd_list(args: argparse.Namespace) -> int:
    from api.batch_filter import and_filter  # --filter: Azure Batch's grammar, the one text form of the filter tree

    scope = Scope(args.workspace, args.job, args.execution)
    if args.limit < 1:  # as the native API's limit (the Python API would quietly list one task)
        raise ValidationError("limit", "must be at least 1")
    where = and_filter(_state_filter(args.state), args.filter_)
    with open_db(open_store, args.db, create=False) as store:
        page = store.queries.list_tasks(
            scope, sort=args.sort, limit=args.limit, cursor=args.cursor, q=args.q, where=where
        )
    if args.json:
        sys.stdout.write(orjson.dumps(page.to_dict()).decode() + "\n")
        return 0
    out = Console()
    table = Table()
    for name in ("id", "state", "created (UTC)", "exit", "retries"):  # at 80 columns whole; the display name wraps
        table.add_column(name, no_wrap=True)
    table.add_column("display name")
    for t in page.items:
        exit_code = "" if t.exit_code is None else str(t.exit_code)
        # Display names are the caller's text: escaped, or "[...]" in one would be read as rich's markup.
        # The creation time to the second (``--json`` has it to the microsecond, as stored).
        table.add_row(escape(t.task_id), t.state.value, t.created_at[:19].replace("T", " "), exit_code,
                      str(t.retry_count), escape(t.display_name or ""))
    out.print(table)
    more = f"; next page: --cursor {page.next_cursor}" if page.has_more else ""
    # Not wrapped at the terminal's width: a cursor broken over two lines would not paste back as one.
    out.print(f"{len(page.items)} of {page.total} tasks{more}", soft_wrap=True)
    return 0


MAX_POSITION = 10**18 - 1  # as the native API's asOf (at most 18 digits): a log position fits in 64 bits


def _position_arg(value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_POSITION:
        raise ValidationError("as-of", f"must be a log position (0 to {MAX_POSITION})")


def cmd_task(args: argparse.Namespace) -> int:
    scope = Scope(args.workspace, args.job, args.execution)
    _position_arg(args.as_of)
    with open_db(open_store, args.db, create=False) as store:
        task = store.get_task(scope, args.task_id)  # the id checked, and found: tasks are never removed
        if args.as_of is not None:
            task = store.queries.task_as_of(scope, args.task_id, args.as_of)
        events = store.history(scope, args.task_id) if args.history else []
    doc: dict = {"task": task.to_dict()}
    if args.history:
        doc["events"] = [e.to_dict() for e in events if args.as_of is None or e.position <= args.as_of]
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out = Console()
    table = Table(show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name, value in doc["task"].items():
        if value not in (None, [], {}):
            shown = value if isinstance(value, str) else orjson.dumps(value).decode()
            table.add_row(name, escape(shown))
    as_of = "" if args.as_of is None else f" as of position {args.as_of}"
    out.print(f"{scope} task {escape(task.task_id)}{as_of}: {task.state.value}, version {task.version}")
    out.print(table)
    if args.history:
        events_table = Table()
        for name in ("position", "version", "type", "recorded", "data"):
            events_table.add_column(name, overflow="fold")
        for e in doc["events"]:
            events_table.add_row(str(e["position"]), str(e["version"]), e["type"], e["recordedAt"],
                                 escape(orjson.dumps(e["data"]).decode()))
        out.print(events_table)
    return 0


def cmd_counts(args: argparse.Namespace) -> int:
    scope = Scope(args.workspace, args.job, args.execution)
    _position_arg(args.as_of)
    with open_db(open_store, args.db, create=False) as store:
        if args.as_of is None:
            summary = store.queries.counts(scope)
        else:
            summary = store.queries.counts_as_of(scope, args.as_of)
    doc = summary.to_dict()
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out = Console()
    table = Table()
    table.add_column("state")
    table.add_column("tasks", justify="right")
    table.add_column("slots", justify="right")
    for state in doc["states"]:
        table.add_row(state, str(doc["states"][state]), str(doc["slots"][state]))
    out.print(f"{scope}: {summary.total} tasks, {summary.validation_status} ({summary.validation_detail})")
    out.print(table)
    out.print(f"as of log position {summary.position}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.tasks < 1:  # bad input exits 2 with the reason, as a scope that is not one does (``main``)
        raise ValidationError("tasks", "must be at least 1")
    scope = Scope(args.workspace, args.job, args.execution)
    with open_db(open_store, args.db) as store:
        started = time.perf_counter()
        columns = (
            TextColumn("[bold]simulate[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
            job = bar.add_task("events", total=planned_events(args.tasks, args.seed))
            summary = simulate(store, scope, args.tasks, seed=args.seed, progress=lambda n: bar.advance(job, n))
        elapsed = time.perf_counter() - started
    result = {
        "db": store.url,
        "workspace": scope.workspace,
        "job": scope.job,
        "execution": scope.execution,
        "tasks": summary.tasks,
        "events": summary.events,
        "seconds": round(elapsed, 3),
        "eventsPerSecond": round(summary.events / elapsed) if elapsed else None,
        "states": dict(sorted(summary.states.items())),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out = Console()
    rate = result["eventsPerSecond"]
    out.print(f"{scope}: {summary.tasks} tasks, {summary.events} events in {elapsed:.2f}s ({rate}/s)")
    table = Table()
    table.add_column("state")
    table.add_column("tasks", justify="right")
    for state, n in result["states"].items():
        table.add_row(state, str(n))
    out.print(table)
    return 0


# -- the HTTP service: serve, credentials ------------------------------------------------------------------------


def _add_service_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (Azure Batch, HealthOmics, Blaxel and the native API; docs at /docs)",
    )
    _db_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on, 1 to 65535 (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: %(default)s)")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("credentials", help="manage the HTTP service's credentials")
    creds = p.add_subparsers(dest="credentials_command", required=True, metavar="ACTION")
    c = creds.add_parser("create", help="create a credential for a workspace and print its key id and secret")
    _db_arg(c)
    c.add_argument("--workspace", required=True, help="the workspace the credential reaches (and nothing else)")
    c.add_argument("--json", action="store_true", help='print {"workspace", "keyId", "secret"}')
    c.set_defaults(run=cmd_credentials_create)
    c = creds.add_parser("list", help="list the credentials (key id, workspace, creation time; never the secret)")
    _db_arg(c)
    c.add_argument("--workspace", help="only this workspace's credentials")
    c.add_argument("--json", action="store_true", help='print [{"workspace", "keyId", "createdAt"}]')
    c.set_defaults(run=cmd_credentials_list)
    c = creds.add_parser("revoke", help="delete a credential: a running service refuses it within seconds")
    _db_arg(c)
    c.add_argument("--key-id", required=True, help="the key id of the credential to revoke")
    c.add_argument("--json", action="store_true", help='print {"workspace", "keyId", "createdAt"} of the one revoked')
    c.set_defaults(run=cmd_credentials_revoke)


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= n <= 65535:  # uvicorn would listen on another port than it says, or fail with a traceback
        raise argparse.ArgumentTypeError(f"must be 1 to 65535, not {n}")
    return n


def _print_credential(cred, *, as_json: bool = False, note: str | None = None) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(cred.as_json()).decode() + "\n")
        return
    if note:
        sys.stdout.write(note + "\n")
    sys.stdout.write(f"workspace: {cred.workspace}\nkeyId:     {cred.key_id}\nsecret:    {cred.secret}\n")
    sys.stdout.flush()


def cmd_credentials_create(args: argparse.Namespace) -> int:
    from api.credentials import CredentialStore, migrate

    with open_db(open_store, args.db) as store:
        migrate(store.engine)
        try:
            cred = CredentialStore(store.engine).create(args.workspace)
        except ValueError as exc:
            raise ValidationError("workspace", str(exc)) from None
    _print_credential(cred, as_json=args.json)
    return 0


def _credential_doc(cred) -> dict[str, str]:
    return {"workspace": cred.workspace, "keyId": cred.key_id, "createdAt": cred.created_at}


def cmd_credentials_list(args: argparse.Namespace) -> int:
    from api.credentials import CredentialStore, migrate

    with open_db(open_store, args.db, create=False) as store:
        migrate(store.engine)
        found = CredentialStore(store.engine).listing(args.workspace)
    if args.json:
        sys.stdout.write(orjson.dumps([_credential_doc(c) for c in found]).decode() + "\n")
        return 0
    table = Table(show_edge=False)
    for name in ("key id", "workspace", "created (UTC)"):
        table.add_column(name, no_wrap=True)
    for c in found:
        table.add_row(c.key_id, escape(c.workspace), c.created_at)
    out = Console()
    out.print(table)
    out.print(f"{len(found)} credential{'' if len(found) == 1 else 's'}")
    return 0


def cmd_credentials_revoke(args: argparse.Namespace) -> int:
    from api.credentials import CredentialStore, migrate

    with open_db(open_store, args.db, create=False) as store:
        migrate(store.engine)
        gone = CredentialStore(store.engine).revoke(args.key_id)
    if gone is None:
        raise ValidationError("key-id", f"there is no credential with key id {args.key_id!r}")
    if args.json:
        sys.stdout.write(orjson.dumps(_credential_doc(gone)).decode() + "\n")
        return 0
    Console().print(f"revoked {gone.key_id} of workspace {escape(gone.workspace)}: a running service refuses it "
                    f"within {CredentialStore.MAX_AGE:g} seconds")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api import create_app

    with open_db(open_store, args.db) as store:
        app = create_app(store)
        creds = app.state.credentials
        if creds.count() == 0:
            cred = creds.create("default", description="created by the first serve")
            _print_credential(
                cred,
                note="No credentials yet: created one for workspace 'default' (shown once; keep the secret).",
            )
        sys.stderr.write(f"taskstore: serving {store.url} on http://{args.host}:{args.port} (docs at /docs)\n")
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except EventStoreError as exc:
        console.print(f"[red]taskstore {args.command}: {escape(str(exc))}[/]")
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; 128 + SIGINT, as a shell reports it
        console.print(f"[red]taskstore {args.command}: interrupted[/]")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
