"""From the engine's JSON dicts to the service's response models (and the plan's graph)."""

from __future__ import annotations

from typing import Any

from planlock.core import Plan, iso_ms
from planlock.journal import Event
from planlock.queue import run_state
from planlock.server._models import (
    ApprovalDetail,
    ApprovalSummary,
    EndorsableOut,
    EventOut,
    GraphEdge,
    GraphNode,
    GraphOut,
    IssueOut,
    ReportOut,
    RunDetail,
    RunSummary,
)
from planlock.tools import ToolRegistry
from planlock.validation import analyse

__all__ = [
    "AUDIT_KINDS",
    "approval_detail",
    "approval_summary",
    "event_out",
    "graph",
    "run_detail",
    "run_events",
    "run_summary",
    "shown",
]

AUDIT_KINDS = frozenset({"http_request", "http_anonymous", "request_failed"})
"""Events about the service's requests (who looked at or decided a run, from which address):
in the journal, never in a run's view or its event stream."""


def shown(event: Event) -> bool:
    """Whether a run's view and its event stream show ``event``."""
    return event.kind not in AUDIT_KINDS


def run_events(events: list[Event]) -> list[Event]:
    """The events a run's view shows (the stream filters with the same ``shown``)."""
    return [e for e in events if shown(e)]


def _why(item: dict[str, Any]) -> list[str]:
    request = item["request"]
    reasons = [r["message"] for r in request.get("reasons") or []]
    if reasons:
        return reasons
    return [
        f"step {s['step']} ({s['tool']}): {r['message']}"
        for s in request["report"]["steps"]
        for r in s["reasons"]
        if r["action"] != "allow"
    ]


def approval_summary(item: dict[str, Any]) -> ApprovalSummary:
    return ApprovalSummary(
        id=item["id"],
        run_id=item["run_id"],
        kind=item["kind"],
        status=item["status"],
        plan_hash=item["plan_hash"],
        step_id=item["step_id"],
        args_hash=item["args_hash"],
        created_at=item["created_at"],
        expires_at=item["expires_at"],
        submitted_by=item.get("submitted_by"),
        goal=item.get("goal") or "",
        why=_why(item),
    )


def graph(plan: dict[str, Any], report: dict[str, Any], registry: ToolRegistry) -> GraphOut:
    """The plan's steps and dependencies, each step with its effect and the policy's action."""
    parsed = Plan.parse(plan)
    analysis = analyse(parsed, registry)
    actions = {s["step"]: s["action"] for s in report.get("steps", [])}
    level: dict[str, int] = {}
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    order = analysis.order or [s.id for s in parsed.steps]
    for sid in order:
        compiled = analysis.steps.get(sid)
        deps = sorted(compiled.deps) if compiled else []
        level[sid] = max((level.get(d, 0) + 1 for d in deps), default=0)
        step = next(s for s in parsed.steps if s.id == sid)
        effect = compiled.tool.effect if compiled else "unknown"
        nodes.append(
            GraphNode(
                id=sid,
                tool=step.tool,
                effect=effect,
                action=actions.get(sid, "allow"),
                level=level[sid],
            )
        )
        edges.extend(GraphEdge(source=d, target=sid) for d in deps)
    return GraphOut(nodes=nodes, edges=edges)


def approval_detail(item: dict[str, Any], registry: ToolRegistry) -> ApprovalDetail:
    """An approval request in full, with the plan's graph and its goal-coverage warnings (computed
    with the registry the service runs plans with)."""
    request = item["request"]
    warnings = analyse(Plan.parse(request["plan"]), registry).warnings
    return ApprovalDetail(
        **approval_summary(item).model_dump(),
        decided_by=item["decided_by"],
        decided_at=item["decided_at"],
        reason=item["reason"],
        plan=request["plan"],
        report=ReportOut.model_validate(request["report"]),
        graph=graph(request["plan"], request["report"], registry),
        inputs=item.get("inputs") or {},
        args=request.get("args"),
        provenance=request.get("provenance"),
        endorsable=[EndorsableOut.model_validate(o) for o in request.get("endorsable") or []],
        warnings=[IssueOut.model_validate(w.to_json()) for w in warnings],
    )


def run_summary(row: dict[str, Any]) -> RunSummary:
    return RunSummary(
        run_id=row["run_id"],
        status=row["status"],
        state=run_state(row["status"], row.get("lease_expires_at"), iso_ms()),
        plan_hash=row["plan_hash"],
        goal=row["goal"],
        submitted_by=row["submitted_by"],
        submitted_at=row["submitted_at"],
        claimed_by=row["claimed_by"],
        lease_expires_at=row.get("lease_expires_at"),
        finished_at=row["finished_at"],
    )


def event_out(event: Event) -> EventOut:
    return EventOut(
        seq=event.seq,
        run_id=event.run_id,
        kind=event.kind,
        at=event.at,
        data=event.data,
        hash=event.hash,
    )


def run_detail(row: dict[str, Any], events: list[Event]) -> RunDetail:
    return RunDetail(
        **run_summary(row).model_dump(),
        plan=row["plan"],
        inputs=row["inputs"],
        approvals=[approval_summary(a) for a in row["approvals"]],
        events=[event_out(e) for e in events],
    )
