"""CLI for the asynchronous approval gate and risk reports: submit, approvals, approve, deny,
worker, assess. Thin: every command calls ``ApprovalQueue`` or ``assess``."""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from planlock.approval import EndorseAs
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
    _load_plan,
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
from planlock.policy import assess
from planlock.queue import (
    ApprovalQueue,
    Lease,
    WebhookNotifier,
    parse_duration,
    self_approval_problem,
)
from planlock.validation import analyse

approvals_app = PlanlockTyper(help="List and inspect approval requests.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

NotifyOpt = Annotated[
    str | None,
    typer.Option(
        "--notify",
        help="Webhook URL to post pending approvals to [default: $PLANLOCK_WEBHOOK_URL].",
    ),
]


WideOpt = Annotated[
    bool,
    typer.Option("--wide", help="Never cut a column: full ids, one row per line, to copy."),
]
SelfOpt = Annotated[
    bool,
    typer.Option(
        "--allow-self-approval",
        help="Let NAME approve a run NAME submitted (default: refused, as in planlock serve) "
        "[env: PLANLOCK_ALLOW_SELF_APPROVAL=1].",
    ),
]


def _warn_notification_failed(event: Event) -> None:
    """A webhook that failed is journaled (``notification_failed``) and said on stderr."""
    if event.kind == "notification_failed":
        err.print(
            f"warning: the webhook failed for approval {event.data.get('approval_id')}: "
            f"{event.data.get('error')} (the request is queued; journaled as notification_failed)",
            style="yellow",
            highlight=False,
            soft_wrap=True,
        )


def table_console(wide: bool) -> Console:
    """Where tables go: the terminal, or with ``--wide`` a console as wide as any row."""
    return Console(width=100_000, soft_wrap=True) if wide else out


def _queue(journal: str | None, notify: str | None = None) -> ApprovalQueue:
    url = notify or os.environ.get("PLANLOCK_WEBHOOK_URL")
    return ApprovalQueue(_open_journal(journal), WebhookNotifier(url) if url else None)


@app.command("assess")
def assess_cmd(
    plan: Annotated[str, typer.Argument(help="Plan file (JSON), or - for standard input.")],
    tools: ToolsOpt,
    policy: PolicyOpt = None,
    input_: InputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a plan's risk report: effects, what needs approval and why, untrusted data flows."""
    registry = _registry(tools)
    rules = _policy(policy, registry)
    parsed = _load_plan(plan, as_json)
    analysis = analyse(parsed, registry, inputs=_inputs(input_) if input_ else None)
    if analysis.issues:
        _invalid(PlanInvalid(analysis.issues), as_json)
    report = assess(analysis, policy=rules)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        out.print(_render.report_table(report))


@app.command("submit")
def submit_cmd(
    plan: Annotated[str, typer.Argument(help="Plan file (JSON), or - for standard input.")],
    tools: ToolsOpt,
    input_: InputOpt = None,
    journal: JournalOpt = None,
    policy: PolicyOpt = None,
    expires_in: Annotated[
        str, typer.Option(help="How long the request stays open (90s, 2h, 7d).")
    ] = "7d",
    by: Annotated[str | None, typer.Option("--as", help="Who submits [default: $USER].")] = None,
    notify: NotifyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate and queue a plan for approval; print the run id. A worker runs it once approved."""
    registry = _registry(tools)
    rules = _policy(policy, registry)
    parsed = _load_plan(plan, as_json)
    queue = _queue(journal, notify)
    queue.journal.listeners.append(_warn_notification_failed)
    try:
        expiry = parse_duration(expires_in)

        async def go() -> Any:
            return await queue.submit(
                parsed,
                registry,
                inputs=_inputs(input_),
                policy=rules,
                tools_spec=tools,
                by=by or os.environ.get("USER") or "cli",
                expires_in=expiry,
            )

        submitted = anyio.run(go)
    except PlanInvalid as exc:
        _invalid(exc, as_json)
    except ApprovalDenied as exc:
        _fail(EXIT_APPROVAL, f"{exc} (nothing was queued to run)")
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    if as_json:
        print(json.dumps(submitted.__dict__))
    else:
        print(submitted.run_id)
        if submitted.approval_id:
            err.print(
                f"waiting for approval {submitted.approval_id} (run {submitted.run_id}): "
                f"planlock approvals show {submitted.approval_id}; planlock approve "
                f"{submitted.run_id} --as NAME",
                highlight=False,
                soft_wrap=True,
            )
        else:
            err.print("nothing in this plan needs a person: approved by policy, ready for a worker")


@approvals_app.command("list")
def approvals_list(
    journal: JournalOpt = None, as_json: JsonOpt = False, wide: WideOpt = False
) -> None:
    """List pending approval requests, oldest first (ids in full with --wide or --json)."""
    pending = _queue(journal).pending()
    if as_json:
        print(
            json.dumps([{k: v for k, v in p.items() if k != "request"} for p in pending], indent=2)
        )
        return
    table = Table(title=f"Pending approvals ({len(pending)})", title_justify="left")
    for col in ("id", "run", "kind", "step", "created", "expires", "why"):
        table.add_column(col, overflow="fold", no_wrap=wide)
    for p in pending:
        req = p["request"]
        why = [r["message"] for r in req.get("reasons", [])] or [
            r["message"] for s in req["report"]["steps"] for r in s["reasons"]
        ]
        table.add_row(
            p["id"],
            p["run_id"],
            p["kind"],
            p["step_id"] or "",
            p["created_at"],
            p["expires_at"] or "",
            Text("; ".join(why)),
        )
    table_console(wide).print(table)


@approvals_app.command("show")
def approvals_show(
    approval_id: Annotated[str, typer.Argument(help="The approval request's id.")],
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one approval request: the plan, its risk report, and for a call the exact arguments."""
    try:
        item = _queue(journal).get(approval_id)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    if as_json:
        print(json.dumps(item, indent=2))
        return
    out.print(_render.stored_request(item))


def _decide(
    ident: str,
    journal: str | None,
    *,
    approve: bool,
    by: str,
    reason: str,
    endorse: EndorseAs | None = None,
    allow_self: bool = False,
) -> None:
    queue = _queue(journal)
    try:
        approval_id = queue.approval_for(ident)
        allow_self = allow_self or os.environ.get("PLANLOCK_ALLOW_SELF_APPROVAL") == "1"
        problem = self_approval_problem(queue.submitted_by(approval_id), by)
        if approve and problem and not allow_self:
            _fail(EXIT_APPROVAL, f"{problem} (--allow-self-approval to permit it)")
        decision = queue.decide(approval_id, approve=approve, by=by, reason=reason, endorse=endorse)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    verb = "approved" if approve else "denied"
    said = f" {approval_id} as {decision.by} (plan {decision.plan_hash[:12]})"
    out.print(Text.assemble((verb, "green"), said), soft_wrap=True)
    for e in getattr(decision, "endorsements", ()):
        out.print(
            Text(f"endorsed {e.id} as {e.label!r}: {e.source} -> {e.target or 'any sensitive'}")
        )


@app.command("approve")
def approve_cmd(
    approval_id: Annotated[
        str,
        typer.Argument(help="The approval request's id, or a run id with one pending request."),
    ],
    by: Annotated[str, typer.Option("--as", help="Who approves.")],
    reason: Annotated[str, typer.Option(help="Why (journaled).")] = "",
    journal: JournalOpt = None,
    endorse: Annotated[
        str | None,
        typer.Option(
            "--endorse",
            help="For a call held up by untrusted data: also endorse its value(s) with this "
            "label (e.g. landlord), so the same value from the same source runs without asking.",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="With --endorse: only this parameter's value (repeatable)."),
    ] = None,
    any_target: Annotated[
        bool,
        typer.Option(
            "--any-target", help="With --endorse: the value may reach any sensitive parameter."
        ),
    ] = False,
    allow_self_approval: SelfOpt = False,
) -> None:
    """Approve a pending request: single use, bound to the plan hash (and a call's arguments)."""
    if endorse is None and (param or any_target):
        _fail(EXIT_USAGE, "--param and --any-target go with --endorse LABEL")
    spec = None
    if endorse is not None:
        spec = EndorseAs(endorse, tuple(param) if param else None, any_target)
    _decide(
        approval_id,
        journal,
        approve=True,
        by=by,
        reason=reason,
        endorse=spec,
        allow_self=allow_self_approval,
    )


@app.command("deny")
def deny_cmd(
    approval_id: Annotated[
        str,
        typer.Argument(help="The approval request's id, or a run id with one pending request."),
    ],
    by: Annotated[str, typer.Option("--as", help="Who denies.")],
    reason: Annotated[str, typer.Option(help="Why (required, journaled).")],
    journal: JournalOpt = None,
) -> None:
    """Deny a pending request, with a reason."""
    _decide(approval_id, journal, approve=False, by=by, reason=reason)


_ENGINE_ONLY = {
    "queue": ("once",),
    "dbos": ("db", "adopt", "concurrency", "model"),
}
"""The options of ``worker`` that only one engine's workers use."""


def _warn_unused(ctx: typer.Context, engine: str) -> None:
    """Say which options given will not be used by this engine's worker (they were ignored
    silently before; an error now would stop the scripts that pass them)."""
    if engine not in _ENGINE_ONLY:
        return  # refused below
    for owner, names in _ENGINE_ONLY.items():
        if owner == engine:
            continue
        given = ["--" + n.replace("_", "-") for n in names if _given(ctx, n)]
        if given:
            err.print(
                f"warning: {', '.join(given)}: only for --engine {owner}; not used by this "
                f"--engine {engine} worker",
                highlight=False,
            )


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (on the command line or in the environment)."""
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"


@app.command("worker")
def worker_cmd(
    ctx: typer.Context,
    tools: ToolsOpt,
    journal: JournalOpt = None,
    worker_id: Annotated[
        str | None, typer.Option("--id", help="Stable worker id [default: host:pid].")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is approved now, then exit (--engine queue).")
    ] = False,
    idle_exit: Annotated[
        float | None, typer.Option("--idle-exit", help="Exit after this many idle seconds.")
    ] = None,
    poll: Annotated[
        float,
        typer.Option(
            help="Seconds between checks of the queue. With --engine dbos: the queue's "
            "(the same for all its live workers; 0.05 for a new queue) unless given."
        ),
    ] = 0.5,
    notify: NotifyOpt = None,
    engine: Annotated[
        str, typer.Option(help="queue (the approval queue) or dbos (durable: docs/durable.md).")
    ] = "queue",
    db: Annotated[
        str | None, typer.Option(help="With --engine dbos: the DBOS system database.")
    ] = None,
    adopt: Annotated[
        list[str] | None,
        typer.Option(help="With --engine dbos: take over this dead worker id's runs."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="With --engine dbos: most runs at once on this worker; the same for every "
            "live worker of the queue (DBOS keeps it with the queue)."
        ),
    ] = None,
    db_wait: Annotated[
        float,
        typer.Option(
            help="PostgreSQL: seconds to keep reconnecting to a database that went away before "
            "exiting with code 5 (for a supervisor to restart the worker); with --engine dbos, "
            "as the worker starts.",
            min=0,
        ),
    ] = 60.0,
    lease: Annotated[
        str,
        typer.Option(
            help="How long a run stays this worker's without a heartbeat; after that any "
            "worker recovers it (90s, 2m)."
        ),
    ] = "30s",
    heartbeat: Annotated[
        str, typer.Option(help="How often the worker renews the lease of the run it executes.")
    ] = "10s",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="With --engine dbos: LLM for llm steps and for replanning runs (local, "
            "openai:MODEL[@URL], anthropic:MODEL).",
        ),
    ] = None,
) -> None:
    """Execute approved runs, each exactly once; wait at run-time approvals."""
    _warn_unused(ctx, engine)
    if engine == "dbos":
        from planlock.cli._durable import run_worker  # noqa: PLC0415

        run_worker(
            tools,
            journal,
            worker_id=worker_id,
            db=db,
            adopt=adopt,
            idle_exit=idle_exit,
            concurrency=concurrency,
            lease=lease,
            heartbeat=heartbeat,
            notify=notify,
            model=model,
            db_wait=db_wait,
            poll=poll if _given(ctx, "poll") else None,
        )
        return
    if engine != "queue":
        _fail(EXIT_USAGE, f"unknown engine {engine!r} (use queue or dbos)")
    try:
        held = Lease(parse_duration(lease), parse_duration(heartbeat))
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    registry = _registry(tools)
    queue = _queue(journal, notify)
    wid = worker_id or f"{socket.gethostname()}:{os.getpid()}"

    def show(event: Event) -> None:
        _warn_notification_failed(event)
        line = _render.progress_line(event)
        if line:
            err.print(Text.assemble((event.run_id[-8:], "dim"), " ", line))

    queue.journal.listeners.append(show)

    async def go() -> int:
        return await queue.work(
            registry, wid, poll=poll, once=once, idle_exit=idle_exit, lease=held
        )

    try:
        with reconnect_wait(db_wait):
            done = anyio.run(go)
    except DatabaseUnavailable as exc:
        _fail(
            EXIT_UNAVAILABLE,
            f"worker {wid}: {exc}; exiting (exit {EXIT_UNAVAILABLE}) so that a supervisor "
            "restarts it (a run it had claimed stays `running`: see docs/postgres.md)",
        )
    err.print(f"worker {wid}: {done} run(s) executed")
