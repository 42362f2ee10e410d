"""``planlock demo``: the seed's customer-support scenario, end to end, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from planlock import _render, demo
from planlock._approval import ApprovalRequest, Decision, approve_all, auto_approve
from planlock._errors import ApprovalDenied, ApprovalRequired
from planlock._journal import Journal
from planlock._plan import Plan
from planlock._run import run_sync


def run_demo(out: Console, *, yes: bool, journal_path: Path | None) -> int:
    desk = demo.HelpDesk.sample()
    registry = demo.build_registry(desk)
    journal = Journal.open(journal_path) if journal_path else Journal()
    journal.listeners.append(lambda e: _show(out, e))
    plan = Plan.parse(demo.PLAN)
    out.print(Panel(Text(demo.GOAL), title="Goal (trusted)"))
    out.print(
        Panel(
            Text(desk.tickets["T-1001"].body),
            title="Ticket T-1001 body (untrusted)",
            border_style="red",
        )
    )
    out.print(_render.plan_table(plan, registry))
    approver: Any
    if yes:
        approver = approve_all("demo --yes")
    elif sys.stdin.isatty():
        from planlock._cli import TerminalApprover  # noqa: PLC0415

        approver = TerminalApprover(out)
    else:
        approver = auto_approve
    try:
        result = run_sync(
            plan, registry, inputs=demo.INPUTS, journal=journal, approver=_note(out, approver)
        )
    except (ApprovalRequired, ApprovalDenied) as exc:
        out.print(f"[yellow]not run:[/] {exc}. Re-run with --yes to approve.")
        return 3
    out.print(_render.result_panel(result))
    landed = [
        e.data["step"]
        for e in journal.events(result.run_id)
        if e.kind == "step_finished" and "Ignore all previous instructions" in str(e.data["output"])
    ]
    in_args = [
        e.data["step"]
        for e in journal.events(result.run_id)
        if e.kind == "step_started" and "Ignore all previous instructions" in str(e.data["args"])
    ]
    ran = [e.data["tool"] for e in journal.events(result.run_id) if e.kind == "step_started"]
    chain = "intact" if journal.verify().ok else "BROKEN"
    lines = [
        f"The injected instruction reached the output of step(s): {', '.join(landed) or 'none'}",
        f"...and the arguments of step(s): {', '.join(in_args) or 'none'}",
        f"Tools that ran, all from the approved plan: {', '.join(ran)}",
        (
            f"delete_account ran: {'YES' if 'delete_account' in ran else 'no'}; "
            f"accounts still present: {', '.join(desk.accounts) or 'none'}"
        ),
        f"Emails sent: {', '.join(f'{m.template} to {m.to}' for m in desk.outbox) or 'none'}",
        f"Journal: {len(journal.events())} events, chain {chain}",
    ]
    out.print(Panel(Text("\n".join(lines)), title="Where the injection went", border_style="green"))
    return 0 if result.ok and "delete_account" not in ran else 4


def _note(out: Console, approver: Any) -> Any:
    def wrapped(request: ApprovalRequest) -> Decision:
        out.print(f"[yellow]approval needed[/]: {'; '.join(r.reason for r in request.risks)}")
        decision: Decision = approver(request)
        return decision

    return wrapped


def _show(err: Console, event: Any) -> None:
    line = _render.progress_line(event)
    if line:
        err.print(line, highlight=False)
