"""Rich renderings of plans, issues, approvals, progress and journals (for the CLI)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from planlock.approval import ApprovalRequest
from planlock.core import Plan, Step, condition_text
from planlock.execution import RunResult
from planlock.journal import Event
from planlock.policy import RiskReport
from planlock.tools import LLM_TOOL, ToolRegistry
from planlock.validation import Issue, validate

_EFFECT_STYLE = {
    "undeclared": "bold red",
    "read": "green",
    "write": "yellow",
    "delete": "red",
    "send": "magenta",
    "pay": "red",
}


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def effect_text(effect: str) -> Text:
    return Text(effect, style=_EFFECT_STYLE.get(effect, "bold red"))


def issues_table(issues: Sequence[Issue]) -> Table:
    table = Table(title="Validation issues", title_justify="left")
    table.add_column("path", style="cyan", no_wrap=True)
    table.add_column("code", style="yellow")
    table.add_column("message")
    for i in issues:
        table.add_row(i.path, i.code, Text(i.message))
    return table


def plan_table(plan: Plan, registry: ToolRegistry) -> Table:
    title = f"Plan {plan.hash[:12]}" + (f": {plan.goal}" if plan.goal else "")
    table = Table(title=Text(title), title_justify="left")
    table.add_column("step", style="cyan")
    table.add_column("tool", style="bold")
    table.add_column("effect")
    table.add_column("args")
    for s in plan.steps:
        tool = registry.get(s.tool)
        effect = tool.effect if tool else ("read" if s.tool == LLM_TOOL else "?")
        table.add_row(s.id, s.tool, effect_text(effect), Text(_short(s.args, 100) + _when(s)))
    warnings = validate(plan, registry).warnings
    if warnings:  # goal coverage: advice for the person about to approve it
        table.caption = Text("\n".join(f"⚠ {w.message}" for w in warnings), style="yellow")
        table.caption_justify = "left"
    return table


def _when(step: Step) -> str:
    """A conditional step's condition, under its arguments (it is part of what is approved)."""
    return f"\nonly if {condition_text(step.when)}" if step.when is not None else ""


def approval_panel(request: ApprovalRequest) -> Panel:
    if request.kind == "call":
        return call_panel(request)
    rows = Table.grid(padding=(0, 1))
    for r in request.risks:
        rows.add_row("•", Text(r.reason))
    for s in request.report.call_approvals:
        rows.add_row(
            "•", Text(f"step {s.step_id} ({s.tool}): will ask again with the concrete values")
        )
    for f in request.report.flows:
        src = ", ".join(f.sources)
        rows.add_row("⚠", Text(f"untrusted data ({src}) flows into {f.tool}.{f.param}: {f.action}"))
    args = Table(show_header=True, header_style="bold")
    args.add_column("step")
    args.add_column("tool")
    args.add_column("exact arguments")
    for step in request.plan.steps:
        args.add_row(
            step.id, step.tool, Text(json.dumps(step.args, ensure_ascii=False) + _when(step))
        )
    body = Group(
        Text(f"plan hash {request.plan_hash}"),
        Text("effects: " + ", ".join(request.effects)),
        Text("needs approval because:", style="bold"),
        rows,
        args,
    )
    return Panel(body, title="Approval requested", border_style="yellow")


def call_arguments(request: ApprovalRequest) -> list[tuple[str, Any, str]]:
    """(what to call it, value, provenance key) for each argument a call request shows; for a
    loop's request (``args = {"calls": [{"item": i, "args": {...}}]}``), each call's, named
    ``item i: param``."""
    args = request.args or {}
    calls = args.get("calls")
    if not isinstance(calls, list) or not calls:
        calls = []
    if calls and all(isinstance(c, dict) and "item" in c for c in calls):
        return [
            (f"item {c['item']}: {name}", value, f"{c['item']}.{name}")
            for c in calls
            for name, value in (c.get("args") or {}).items()
        ]
    return [(name, value, name) for name, value in args.items()]


def call_panel(request: ApprovalRequest) -> Panel:
    rows = Table(show_header=True, header_style="bold")
    rows.add_column("argument")
    rows.add_column("exact value")
    rows.add_column("came from")
    prov = request.provenance or {}
    for name, value, key in call_arguments(request):
        rows.add_row(
            name, Text(json.dumps(value, ensure_ascii=False)), ", ".join(prov.get(key, []))
        )
    why = Table.grid(padding=(0, 1))
    for r in request.reasons:
        why.add_row("•", Text(r.message))
    parts: list[Text | Table] = [
        Text(
            f"step {request.step_id} of plan {request.plan_hash[:12]}, "
            f"arguments {request.args_hash}"
        ),
        Text("needs approval because:", style="bold"),
        why,
        rows,
    ]
    if request.endorsable:
        offers = Table.grid(padding=(0, 1))
        for o in request.endorsable:
            offers.add_row("✎", Text(f"{o.param} (from {o.source}, to {o.target})"))
        parts += [Text("you may endorse these values (approve them once for all):"), offers]
    body = Group(*parts)
    return Panel(
        body,
        title=Text(f"Approval requested for a call (step {request.step_id})"),
        border_style="red",
    )


def progress_line(event: Event) -> Text | None:
    """One line of progress for an event, or None for events not shown. Plain text throughout:
    step ids, tool names, error messages and labels may hold anything, brackets included."""
    d = event.data
    if event.kind == "step_started":
        return Text.assemble(("▶", "cyan"), f" step {d['step']} {d['tool']}")
    if event.kind == "step_finished":
        return Text.assemble(
            ("✔", "green"), f" step {d['step']} finished ({d['duration_ms']:.1f} ms)"
        )
    if event.kind == "step_failed":
        line = Text.assemble(("✘", "red"), f" step {d['step']} failed: {d.get('error_kind')}")
        if d.get("error"):
            line.append(f": {_short(d['error'], 200)}")
        return line
    if event.kind == "step_skipped":
        if d.get("reason") == "condition":
            why = f"reads step {d['because']}, skipped" if "because" in d else "condition false"
            return Text.assemble(("-", "blue"), f" step {d['step']} skipped ({why})")
        return Text.assemble(
            ("-", "yellow"), f" step {d['step']} skipped (depends on failed step {d['because']})"
        )
    if event.kind == "approval_granted":
        return Text.assemble(("approved", "green"), f" by {d['by']} via {d['via']}")
    if event.kind == "endorsement_added":
        said = f" by {d['by']} as {d['label']!r} ({d['source']})"
        return Text.assemble(("endorsed", "green"), said)
    if event.kind == "endorsement_used":
        said = f" step {d['step']} {d['param']}: endorsed by {d['by']} as {d['label']!r}"
        return Text.assemble(("✎", "green"), said)
    if event.kind == "replanned":
        if d.get("outcome") == "gave_up":
            return Text.assemble(("↻", "yellow"), " replanning gave up")
        where = Text("inside") if d["within_envelope"] else Text("beyond", style="bold")
        return Text.assemble(
            ("↻", "yellow"),
            f" replanned ({d['reason']}, attempt {d['attempt']}, ",
            where,
            f" the approval): {diff_text(d['diff'])}",
        )
    if event.kind == "checkpoint_reviewed":
        verdict = "revise" if d["needs_revision"] else "plan still valid"
        return Text.assemble(("◆", "blue"), f" checkpoint after step {d['step']}: {verdict}")
    return None


def diff_text(diff: dict[str, Any]) -> str:
    """A replan's diff in one line: removed, added and changed steps."""
    parts = [f"-{sid}" for sid in diff.get("removed", [])]
    parts += [
        f"+{s['id']} {s['tool']}{_short(s.get('args', {}), 60)}" for s in diff.get("added", [])
    ]
    parts += [f"~{c['id']}" for c in diff.get("changed", [])]
    return ", ".join(parts) or "no change"


def result_panel(result: RunResult) -> Panel:
    table = Table(show_header=True, header_style="bold")
    table.add_column("step")
    table.add_column("status")
    table.add_column("output")
    for sid, status in result.statuses.items():
        style = {"finished": "green", "failed": "red"}.get(status, "yellow")
        out = _short(result.outputs[sid], 90) if sid in result.outputs else ""
        table.add_row(sid, Text(status, style=style), Text(out))
    title = f"Run {result.run_id}: {result.status}"
    if result.replans:
        title += f", after {result.replans} replan(s)"
    body: Table | Group = table
    if not result.ok:
        title += f" (step {result.failed_step}: {result.error_kind})"
        if result.error:
            failed = Text.assemble((f"step {result.failed_step} failed: ", "red"), result.error)
            body = Group(table, failed)
    return Panel(body, title=Text(title), border_style="green" if result.ok else "red")


def tools_table(registry: ToolRegistry, pins: Mapping[str, str] | None = None) -> Table:
    """The tools; imported ones (MCP...) also with where they come from, the server's hints
    (shown, never trusted) and, given ``pins`` (tool -> status), how each stands to its pin."""
    table = Table(title="Tools", title_justify="left")
    table.add_column("tool", style="bold")
    table.add_column("effect")
    table.add_column("parameters")
    table.add_column("sensitive")
    table.add_column("output")
    imported = any(t.origin is not None for t in registry)
    if imported:
        table.add_column("source", overflow="fold")
        table.add_column("server hints (untrusted)", overflow="fold")
    if pins is not None:
        table.add_column("pin")
    for t in sorted(registry, key=lambda t: t.name):
        params = ", ".join(t.params_schema.get("properties", {}))
        trust = "trusted" if t.trusted_output else "untrusted"
        row: list[Any] = [
            t.name,
            effect_text(t.effect),
            params,
            ", ".join(sorted(t.sensitive)),
            trust,
        ]
        if imported:
            row += [_source(t.origin), _hints(t.origin)]
        if pins is not None:
            status = pins.get(t.name, "")
            style = {"pinned": "green", "changed": "bold red"}.get(status, "yellow")
            row.append(Text(status, style=style))
        table.add_row(*row)
    return table


def _source(origin: Mapping[str, Any] | None) -> str:
    if origin is None:
        return "python"
    if origin.get("kind") == "mcp":
        return f"mcp:{origin.get('server')}/{origin.get('tool')}"
    return str(origin.get("kind", ""))


def _hints(origin: Mapping[str, Any] | None) -> str:
    """The MCP annotations as the server gave them: ``readOnly`` for ``readOnlyHint: true``,
    ``not openWorld`` for ``openWorldHint: false``."""
    notes = (origin or {}).get("annotations") or {}
    return ", ".join(
        ("" if v is True else "not " if v is False else f"{json.dumps(v)} ")
        + k.removesuffix("Hint")
        for k, v in sorted(notes.items())
        if k.endswith("Hint")
    )


def events_table(events: Sequence[Event]) -> Table:
    table = Table(title="Journal", title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("run", style="dim")
    table.add_column("kind", style="bold")
    table.add_column("at", style="dim")
    table.add_column("data")
    for e in events:
        if e.kind == "replanned" and "diff" in e.data:
            shown = Text(f"{e.data['reason']}: {diff_text(e.data['diff'])}")
            if not e.data["within_envelope"]:
                shown.append(f" (beyond approval: {'; '.join(e.data['beyond'])})", style="bold")
        else:
            shown = Text(_short(e.data, 110))
        table.add_row(str(e.seq), e.run_id[-8:], e.kind, e.at[11:23], shown)
    return table


def journal_summary(events: Sequence[Event]) -> Text:
    """Runs, replans per run, and how many runs needed one: frequent replanning is a signal
    that the planning prompt needs work."""
    runs = {e.run_id for e in events if e.kind == "run_started"}
    replans = [e for e in events if e.kind == "replanned" and "diff" in e.data]
    replanned_runs = {e.run_id for e in replans}
    if not runs:
        return Text("no runs")
    share = 100 * len(replanned_runs) / len(runs)
    return Text(
        f"{len(runs)} run(s), {len(replans)} replan(s) ({len(replans) / len(runs):.2f} per run); "
        f"{len(replanned_runs)} run(s) needed a replan ({share:.0f}%)"
    )


def report_table(report: RiskReport) -> Group:
    table = Table(title=Text(f"Risk report for plan {report.plan_hash[:12]}"), title_justify="left")
    table.add_column("step", style="cyan")
    table.add_column("tool", style="bold")
    table.add_column("effect")
    table.add_column("decision")
    table.add_column("why")
    for s in report.steps:
        style = {"allow": "green", "require_approval": "yellow", "deny": "bold red"}[s.action]
        why = "; ".join(r.message + (" [at the call]" if r.at_call else "") for r in s.reasons)
        table.add_row(
            s.step_id, s.tool, effect_text(s.effect), Text(s.action, style=style), Text(why)
        )
    flows = Table(title="Untrusted data into sensitive parameters", title_justify="left")
    flows.add_column("step")
    flows.add_column("parameter")
    flows.add_column("from")
    flows.add_column("policy")
    for f in report.flows:
        flows.add_row(f.step_id, f"{f.tool}.{f.param}", ", ".join(f.sources), f.action)
    parts: list[Any] = [Text("effects: " + ", ".join(report.effects)), table]
    if report.flows:
        parts.append(flows)
    return Group(*parts)


def stored_request(item: dict[str, Any]) -> Panel:
    req = item["request"]
    head = Text(
        f"{item['kind']} request {item['id']} for run {item['run_id']}: {item['status']}\n"
        f"plan {item['plan_hash']}  created {item['created_at']}  expires {item['expires_at']}"
    )
    steps = Table(show_header=True, header_style="bold", title="plan", title_justify="left")
    steps.add_column("step")
    steps.add_column("tool")
    steps.add_column("exact arguments")
    for s in req["plan"]["steps"]:
        steps.add_row(s["id"], s["tool"], Text(json.dumps(s["args"], ensure_ascii=False)))
    why = Table.grid(padding=(0, 1))
    reasons = [r["message"] for r in req.get("reasons", [])] or [
        f"step {s['step']} ({s['tool']}): " + "; ".join(r["message"] for r in s["reasons"])
        for s in req["report"]["steps"]
    ]
    for r in reasons:
        why.add_row("•", Text(r))
    parts: list[Any] = [head, Text("needs approval because:", style="bold"), why]
    if item.get("inputs"):
        parts.append(Text("trusted inputs: " + json.dumps(item["inputs"], ensure_ascii=False)))
    if req.get("args") is not None:
        call = Table(
            show_header=True, header_style="bold", title=Text(f"call of step {req['step_id']}")
        )
        call.add_column("argument")
        call.add_column("exact value")
        call.add_column("came from")
        for k, v in req["args"].items():
            call.add_row(
                k,
                Text(json.dumps(v, ensure_ascii=False)),
                ", ".join((req.get("provenance") or {}).get(k, [])),
            )
        parts.append(call)
    parts.append(steps)
    parts.extend(
        Text(f"⚠ untrusted data ({', '.join(f['sources'])}) flows into {f['tool']}.{f['param']}: ")
        + Text(f["action"])
        for f in req["report"].get("flows", [])
    )
    return Panel(Group(*parts), title="Approval request", border_style="yellow")
