"""The first phases of a run: validate and assess a plan (``prepare``), then get it approved
(``authorize``); and the journal writers every phase uses (``recorder``, ``noter``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ulid import ULID

from planlock.approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    Note,
    PlanGate,
    ask_approver,
    record_answer,
    settle_plan_answer,
)
from planlock.core import Plan
from planlock.errors import ApprovalRequired, PlanInvalid
from planlock.journal import Journal
from planlock.policy import Policy, RiskReport, assess
from planlock.tools import ToolRegistry
from planlock.validation import Analysis, analysis_of

__all__ = [
    "Prepared",
    "ask_in_process",
    "authorize",
    "deferrable",
    "noter",
    "prepare",
    "read_tools",
    "recorder",
]

Record = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Prepared:
    """A validated, assessed plan, ready for approval."""

    run_id: str
    analysis: Analysis
    report: RiskReport
    policy: Policy
    inputs: dict[str, Any]

    @property
    def plan(self) -> Plan:
        return self.analysis.plan

    @property
    def plan_hash(self) -> str:
        """The plan's hash, computed once per analysis (it is asked for on every call check)."""
        return self.analysis.plan_hash

    def plan_request(self, approval_id: str = "") -> ApprovalRequest:
        """The plan's approval request (``approval_id``: the id an engine stores it under)."""
        return ApprovalRequest(self.run_id, self.plan, self.plan_hash, self.report, id=approval_id)


OUTCOMES = frozenset({"step_finished", "step_failed", "step_skipped", "step_retrying"})
"""Events the walk does not wait for (``Journal.defer``): what a step produced. Each is durable
before anything depends on it: the walk waits for the next ``step_started`` of a side-effecting
tool (every event recorded before it is committed with it, in order) before that tool runs, and
for ``run_finished``."""


def recorder(journal: Journal, run_id: str, reads: Collection[str] = frozenset()) -> Record:
    """The walk's journal writer: outcomes deferred, and the ``step_started`` of a tool named in
    ``reads`` (read-only tools: nothing to repeat or to lose if the process dies before the
    event is durable, the step just runs again); every other event waited for. With an SQL
    journal, both are group-committed: one transaction for the events of one loop turn, and a
    deferred event is durable within ``planlock.journal._group.WINDOW`` at most."""

    async def record(kind: str, data: dict[str, Any]) -> None:
        if deferrable(kind, data, reads):
            journal.defer(run_id, kind, data)
        else:
            await journal.commit(run_id, kind, data)

    return record


def deferrable(kind: str, data: Mapping[str, Any], reads: Collection[str]) -> bool:
    """Whether the walk may go on before this event is durable (``recorder``): an outcome, or
    the start of a tool named in ``reads``. Every engine's journal writer decides by this."""
    return kind in OUTCOMES or (kind == "step_started" and data.get("tool") in reads)


def read_tools(analysis: Analysis) -> frozenset[str]:
    """The read-only tools of a plan's steps (``recorder``'s ``reads``)."""
    return frozenset(c.tool.name for c in analysis.steps.values() if c.tool.read_only)


def noter(journal: Journal, run_id: str) -> Note:
    """``recorder``, synchronous: how the plan-approval path (``planlock.approval``) journals."""
    return functools.partial(journal.record, run_id)


async def prepare(
    plan: Plan,
    registry: ToolRegistry,
    journal: Journal,
    *,
    inputs: Mapping[str, Any] | None = None,
    policy: Policy | None = None,
    max_steps: int | None = None,
    run_id: str | None = None,
    announce: bool = True,
    final: bool = True,
) -> Prepared:
    """Validate against ``registry`` (R2) and assess under ``policy``; journal both.

    Raises PlanInvalid (nothing runs) and ApprovalDenied when the policy denies a step outright.
    """
    run_id = run_id or str(ULID())
    note = noter(journal, run_id)
    inputs = dict(inputs or {})
    policy = policy or Policy()
    plan_hash = plan.hash  # once: it hashes the whole plan's canonical JSON
    if announce:
        note("run_started", {"goal": plan.goal, "inputs": inputs, "plan_hash": plan_hash})
        note("plan_created", {"plan": plan.canonical(), "hash": plan_hash})
    # Reused when this plan was validated with this registry already (``analysis_of``).
    analysis = analysis_of(plan, registry, plan_hash=plan_hash, inputs=inputs, max_steps=max_steps)
    if analysis.issues:
        issues = [i.to_json() for i in analysis.issues]
        note("plan_rejected", {"hash": plan_hash, "issues": issues})
        if final:
            note("run_finished", {"status": "rejected"})
        raise PlanInvalid(analysis.issues)
    validated: dict[str, Any] = {
        "hash": plan_hash,
        "steps": len(plan.steps),
        **_origins(plan, registry),
    }
    if analysis.warnings:  # goal coverage: advice the approver was shown (R10)
        validated["warnings"] = [w.to_json() for w in analysis.warnings]
    note("plan_validated", validated)
    prepared = Prepared(run_id, analysis, assess(analysis, policy=policy), policy, inputs)
    PlanGate.of(prepared.plan_request()).assessed(note, final=final)
    return prepared


def _origins(plan: Plan, registry: ToolRegistry) -> dict[str, Any]:
    """The definitions of the imported tools (MCP, LangChain, pydantic-ai) the plan uses, with the
    server's annotations as it gave them: what the approval was given for (R10)."""
    used = {s.tool for s in plan.steps}
    origins = {t.name: dict(t.origin) for t in registry if t.name in used and t.origin is not None}
    return {"tools": dict(sorted(origins.items()))} if origins else {}


async def authorize(prepared: Prepared, approver: Approver, journal: Journal) -> Approved:
    """Get the plan approved: by the policy when nothing needs a person, else by ``approver``."""
    note = noter(journal, prepared.run_id)
    gate = PlanGate.of(prepared.plan_request())
    grant = gate.open(note)
    if grant is not None:
        return grant
    decision = await ask_in_process(approver, gate.request, note)
    return settle_plan_answer(note, gate.request, decision)


async def ask_in_process(approver: Approver, request: ApprovalRequest, note: Note) -> Decision:
    """How a run in process waits for a plan's answer: it asks ``approver``. One that cannot ask
    a person (``auto``) raises ApprovalRequired; that is journaled as the policy's denial."""
    try:
        return await ask_approver(approver, request)
    except ApprovalRequired as exc:
        record_answer(note, request.deny("policy", "auto", str(exc)), final=True)
        raise
