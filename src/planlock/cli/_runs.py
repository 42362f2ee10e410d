"""CLI for the approval queue's runs: ``planlock runs`` (where each run stands, its worker and
lease), ``runs resume`` and ``runs requeue``. Thin: every command calls ``ApprovalQueue``."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.table import Table

from planlock.cli._app import EXIT_APPROVAL, EXIT_USAGE, JournalOpt, JsonOpt, _fail, app, out
from planlock.cli._queue import SelfOpt, WideOpt, _queue, table_console
from planlock.cli._types import PlanlockTyper
from planlock.errors import UsageError
from planlock.queue import STATES, self_approval_problem

runs_app = PlanlockTyper(
    help="The queue's runs: their states (stranded = the worker's lease expired), resume, "
    "re-queue.",
    invoke_without_command=True,
)
app.add_typer(runs_app, name="runs")

RunArg = Annotated[str, typer.Argument(help="The run id.")]
ByOpt = Annotated[str, typer.Option("--as", help="Who decides (journaled).")]


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    journal: JournalOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
    state: Annotated[
        list[str] | None,
        typer.Option(help=f"Only runs in this state (repeatable): {', '.join(STATES)}."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first (0: all).")] = 50,
) -> None:
    """List runs, newest first: state, worker and lease, pending requests."""
    if ctx.invoked_subcommand is not None:
        return
    unknown = sorted(set(state or ()) - set(STATES))
    if unknown:
        _fail(EXIT_USAGE, f"unknown state {unknown[0]!r} (use {', '.join(STATES)})")
    rows = _queue(journal).runs(limit or None)
    if state:
        rows = [r for r in rows if r["state"] in state]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Runs ({len(rows)})", title_justify="left")
    for col in ("run", "state", "worker", "lease until", "submitted", "by", "pending requests"):
        table.add_column(col, overflow="fold", no_wrap=wide)
    for r in rows:
        held = r["state"] in ("running", "stranded", "awaiting approval", "waiting for resume")
        table.add_row(
            r["run_id"],
            r["state"],
            r["claimed_by"] or "",
            (r["lease_expires_at"] or "") if held else "",
            r["submitted_at"],
            r["submitted_by"],
            " ".join(r["pending_approvals"]),
        )
    table_console(wide).print(table)


@runs_app.command("resume")
def runs_resume(
    run_id: RunArg,
    by: ByOpt,
    reason: Annotated[str, typer.Option(help="Why (journaled).")] = "",
    journal: JournalOpt = None,
    allow_self_approval: SelfOpt = False,
) -> None:
    """Let a run go on: approve its pending resume request (run the interrupted step again), or
    re-queue it if it is stranded. To mark the interrupted step failed instead:
    planlock deny RUN_ID --as NAME --reason ..."""
    queue = _queue(journal)
    try:
        item = queue.run(run_id)
        allow = allow_self_approval or os.environ.get("PLANLOCK_ALLOW_SELF_APPROVAL") == "1"
        problem = self_approval_problem(item["submitted_by"], by)
        if item["state"] == "waiting for resume" and problem and not allow:
            _fail(EXIT_APPROVAL, f"{problem} (--allow-self-approval to permit it)")
        decision = queue.resume(run_id, by=by, reason=reason)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    if decision is None:
        out.print(f"re-queued {run_id}: the next worker recovers it", soft_wrap=True)
    else:
        out.print(f"resumed {run_id}: the interrupted step runs again", soft_wrap=True)


@runs_app.command("requeue")
def runs_requeue(
    run_id: RunArg,
    by: ByOpt,
    journal: JournalOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Also a run whose lease is live (you know its worker is gone)."
        ),
    ] = False,
) -> None:
    """Hand a stranded run (its worker's lease expired) to the next worker now. A worker that
    lost a run starts no further call of it."""
    try:
        _queue(journal).requeue(run_id, by=by, force=force)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    out.print(f"re-queued {run_id}: the next worker recovers it", soft_wrap=True)
