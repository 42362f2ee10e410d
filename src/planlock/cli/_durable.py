"""CLI for the durable engine (DBOS): ``planlock durable submit|approve|deny|adopt|runs`` and the
``--engine dbos`` worker. Thin: every command calls ``DurableClient`` or ``DurableWorker``; the
``dbos`` package is imported only when one of them runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.text import Text

from planlock.cli import _render
from planlock.cli._app import (
    EXIT_APPROVAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    InputOpt,
    JournalOpt,
    JsonOpt,
    PolicyOpt,
    ToolsOpt,
    _fail,
    _inputs,
    _invalid,
    _journal_spec,
    _load_plan,
    _model,
    _open_journal,
    _policy,
    _registry,
    app,
    err,
    out,
)
from planlock.cli._types import PlanlockTyper
from planlock.db import reconnect_wait
from planlock.errors import ApprovalDenied, DatabaseUnavailable, PlanInvalid, UsageError
from planlock.journal import Event
from planlock.planning import Replanner
from planlock.queue import WebhookNotifier, parse_duration

if TYPE_CHECKING:
    from planlock.durable import DurableClient

durable_app = PlanlockTyper(
    help="The durable engine (DBOS): submit runs, answer requests, adopt a dead worker's runs.",
    no_args_is_help=True,
)
app.add_typer(durable_app, name="durable")

NotifyOpt = Annotated[
    str | None,
    typer.Option(
        "--notify",
        help="Webhook URL to post a plan request to [default: $PLANLOCK_WEBHOOK_URL].",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="DBOS system database: a postgresql:// DSN or an SQLite file "
        "[default: $PLANLOCK_DBOS_DB, else the journal's DSN, else <journal>.dbos.sqlite].",
    ),
]


def db_url(db: str | None, journal: str | None) -> str:
    from planlock.durable import system_database_url  # noqa: PLC0415  (optional dependency, imported on use)

    spec = _journal_spec(journal)
    if db is None and not os.environ.get("PLANLOCK_DBOS_DB") and isinstance(spec, str):
        return system_database_url(spec)
    return system_database_url(db, spec if isinstance(spec, Path) else None)


def _client(journal: str | None, db: str | None, notify: str | None = None) -> DurableClient:
    try:
        from planlock.durable import DurableClient  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError:
        _fail(
            EXIT_USAGE,
            "the durable engine needs the 'durable' extra: pip install 'planlock[durable]'",
        )
    url = notify or os.environ.get("PLANLOCK_WEBHOOK_URL")
    notifier = WebhookNotifier(url) if url else None
    return DurableClient(_open_journal(journal), db_url(db, journal), notifier)


@durable_app.command("submit")
def submit_cmd(
    plan: Annotated[str, typer.Argument(help="Plan file (JSON), or - for standard input.")],
    tools: ToolsOpt,
    input_: InputOpt = None,
    journal: JournalOpt = None,
    db: DbOpt = None,
    policy: PolicyOpt = None,
    by: Annotated[str | None, typer.Option("--as", help="Who submits [default: $USER].")] = None,
    expires_in: Annotated[
        str,
        typer.Option(
            help="How long the plan request, and each request the run makes, stays open "
            "(90s, 2h, 7d); then it expires."
        ),
    ] = "7d",
    max_replans: Annotated[
        int,
        typer.Option(
            "--max-replans",
            help="Revisions allowed after errors and checkpoints, on a worker with --model "
            "(0 disables).",
            min=0,
        ),
    ] = 2,
    notify: NotifyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a plan and submit it to the durable engine; print the run id. A plan that needs
    a person waits in `planlock approvals list`; an approved one goes to the workers' queue."""
    registry = _registry(tools)
    rules = _policy(policy, registry)
    parsed = _load_plan(plan, as_json)
    try:
        expiry = parse_duration(expires_in)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    client = _client(journal, db, notify)
    try:

        async def go() -> Any:
            return await client.submit(
                parsed,
                registry,
                inputs=_inputs(input_),
                policy=rules,
                by=by or os.environ.get("USER") or "cli",
                expires_in=expiry,
                max_replans=max_replans,
            )

        submitted = anyio.run(go)
    except PlanInvalid as exc:
        _invalid(exc, as_json)
    except ApprovalDenied as exc:
        _fail(EXIT_APPROVAL, f"{exc} (nothing was queued to run)")
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    finally:
        client.close()
    if as_json:
        print(json.dumps(submitted.__dict__))
        return
    print(submitted.run_id)
    if submitted.approval_id:
        err.print(f"waiting for approval: planlock approvals show {submitted.approval_id}")
    else:
        err.print("approved by policy: queued for a durable worker")


def _decide(
    approval_id: str, journal: str | None, db: str | None, *, approve: bool, by: str, reason: str
) -> None:
    client = _client(journal, db)
    try:
        decision = client.decide(approval_id, approve=approve, by=by, reason=reason)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    finally:
        client.close()
    verb = "approved" if approve else "denied"
    said = f" {approval_id} as {decision.by}; delivered to the durable run"
    out.print(Text.assemble((verb, "green"), said))


@durable_app.command("approve")
def approve_cmd(
    approval_id: Annotated[str, typer.Argument(help="The approval request's id.")],
    by: Annotated[str, typer.Option("--as", help="Who approves.")],
    reason: Annotated[str, typer.Option(help="Why (journaled).")] = "",
    journal: JournalOpt = None,
    db: DbOpt = None,
) -> None:
    """Approve a request and send the answer to the waiting run at once (`planlock approve`
    works too: a worker relays the answer within a fraction of a second)."""
    _decide(approval_id, journal, db, approve=True, by=by, reason=reason)


@durable_app.command("deny")
def deny_cmd(
    approval_id: Annotated[str, typer.Argument(help="The approval request's id.")],
    by: Annotated[str, typer.Option("--as", help="Who denies.")],
    reason: Annotated[str, typer.Option(help="Why (required, journaled).")],
    journal: JournalOpt = None,
    db: DbOpt = None,
) -> None:
    """Deny a request (for a resume request: mark the interrupted step failed)."""
    _decide(approval_id, journal, db, approve=False, by=by, reason=reason)


@durable_app.command("adopt")
def adopt_cmd(
    dead: Annotated[list[str], typer.Argument(help="Executor ids of dead workers.")],
    journal: JournalOpt = None,
    db: DbOpt = None,
) -> None:
    """Hand a dead worker's unfinished runs to the live workers (they resume from the last
    recorded step). Only for a worker that will not come back: a restarted worker with the
    same --id recovers its runs by itself. Refused (exit 2) while the worker's liveness lease
    runs (its heartbeat is recent)."""
    client = _client(journal, db)
    try:
        adopted = client.adopt(dead)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    finally:
        client.close()
    for run_id in adopted:
        print(run_id)
    err.print(f"{len(adopted)} run(s) handed back to the queue")


@durable_app.command("runs")
def runs_cmd(journal: JournalOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List durable runs and their status."""
    client = _client(journal, db)
    try:
        runs = client.state.runs()
    finally:
        client.close()
    if as_json:
        print(json.dumps([{"run_id": r, "status": s} for r, s in runs], indent=2))
        return
    for run_id, status in runs:
        out.print(f"{run_id}  {status}")


def _unreachable() -> tuple[type[Exception], ...]:
    """What a database that cannot be reached raises: the journal's, and DBOS's (SQLAlchemy)."""
    from sqlalchemy.exc import OperationalError  # noqa: PLC0415  (DBOS's, imported on use)

    return (DatabaseUnavailable, OperationalError)


def join_waiting(join: Callable[[], object], db_wait: float) -> None:
    """Call ``join`` (joining a queue's workers), again for ``db_wait`` seconds while a database
    (the journal's, DBOS's) cannot be reached."""
    deadline = time.monotonic() + db_wait
    while True:
        try:
            join()
        except _unreachable():
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(1.0, left))
        else:
            return


@contextmanager
def starting(who: str, db_wait: float) -> Iterator[None]:
    """Start a durable worker (``who``): exit 2 when it is refused, 5 when a database stayed
    unreachable for ``db_wait`` seconds."""
    try:
        with reconnect_wait(db_wait):
            yield
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except _unreachable() as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _fail(
            EXIT_UNAVAILABLE,
            f"{who}: a database stayed unreachable for {db_wait:g} s ({cause}); exiting "
            f"(exit {EXIT_UNAVAILABLE}) so that a supervisor restarts it",
        )


def run_worker(
    tools: str,
    journal: str | None,
    *,
    worker_id: str | None,
    db: str | None,
    adopt: list[str] | None,
    idle_exit: float | None,
    concurrency: int | None,
    lease: str = "30s",
    heartbeat: str = "10s",
    notify: str | None = None,
    model: str | None = None,
    db_wait: float = 60.0,
    poll: float | None = None,
) -> None:
    """``planlock worker --engine dbos``: run until SIGTERM / Ctrl-C (or ``--idle-exit``).
    ``lease``/``heartbeat``: the worker's liveness lease (``adopt`` refuses a live worker).
    ``db_wait``: how long the worker tries to reach its databases as it starts (then exit 5)."""
    try:
        from planlock.durable import DurableWorker, WorkerContext  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError:
        _fail(
            EXIT_USAGE,
            "the durable engine needs the 'durable' extra: pip install 'planlock[durable]'",
        )
    registry = _registry(tools)
    wid = worker_id or socket.gethostname()
    url = notify or os.environ.get("PLANLOCK_WEBHOOK_URL")
    llm = _model(model) if model else None
    j = _open_journal(journal)
    try:
        worker = DurableWorker(
            WorkerContext(
                registry,
                j,
                llm=llm,
                notifier=WebhookNotifier(url) if url else None,
                replanner=Replanner(llm, registry, journal=j) if llm else None,
            ),
            db_url=db_url(db, journal),
            executor_id=wid,
            worker_concurrency=concurrency,
            lease=parse_duration(lease),
            heartbeat=parse_duration(heartbeat),
            poll=poll,
        )
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))

    def show(event: Event) -> None:
        line = _render.progress_line(event)
        if line:
            err.print(Text.assemble((event.run_id[-8:], "dim"), " ", line))

    worker.context.journal.listeners.append(show)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with starting(f"worker {wid}", db_wait):
            join_waiting(worker.join, db_wait)
            adopted = worker.start(adopt or [])
        err.print(f"worker {wid}: ready (dbos); adopted {len(adopted)} run(s)")
        worker.serve(stop=stop, idle_exit=idle_exit)
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
    err.print(f"worker {wid}: stopped")
