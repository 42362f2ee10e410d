"""The one place that knows the order: validate -> assess -> approve -> execute, all journaled."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import anyio
from ulid import ULID

from planlock._approval import (
    ApprovalRequest,
    Approver,
    Decision,
    StepRisk,
    ask_approver,
    auto_approve,
)
from planlock._errors import ApprovalDenied, ApprovalMismatch, PlanInvalid, UsageError
from planlock._execute import InProcessEngine, RunResult, walk
from planlock._journal import Journal
from planlock._llm import LLM
from planlock._plan import Plan
from planlock._tools import ToolRegistry, effect_rank
from planlock._validate import Analysis, analyse

__all__ = ["assess", "run", "run_sync"]


def assess(analysis: Analysis, run_id: str = "") -> ApprovalRequest:
    """The approval request for a validated plan: every step whose effect is not ``read``."""
    risks: list[StepRisk] = []
    effects: set[str] = set()
    for sid in sorted(analysis.steps, key=lambda s: analysis.steps[s].index):
        step = analysis.steps[sid]
        effects.add(step.tool.effect)
        if not step.tool.read_only:
            what = (
                "declares no effect"
                if step.tool.effect == "undeclared"
                else f"effect '{step.tool.effect}'"
            )
            risks.append(
                StepRisk(
                    sid, step.tool.name, step.tool.effect, f"step {sid} ({step.tool.name}): {what}"
                )
            )
    plan = analysis.plan
    return ApprovalRequest(
        run_id, plan, plan.hash, tuple(risks), tuple(sorted(effects, key=effect_rank))
    )


async def run(
    plan: Plan,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    journal: Journal | None = None,
    approver: Approver = auto_approve,
    llm: LLM | None = None,
    concurrency: int = 16,
    retries: int = 2,
    step_timeout: float | None = None,
    max_steps: int | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Validate, assess, approve and execute a plan; journal every step of the way.

    Raises PlanInvalid (nothing ran), ApprovalRequired or ApprovalDenied (nothing ran).
    A step failure does not raise: the result says ``failed`` (see ``raise_for_status``).
    """
    journal = journal if journal is not None else Journal()
    inputs = dict(inputs or {})
    run_id = run_id or str(ULID())

    async def record(kind: str, data: dict[str, Any]) -> None:
        journal.record(run_id, kind, data)

    await record("run_started", {"goal": plan.goal, "inputs": inputs, "plan_hash": plan.hash})
    await record("plan_created", {"plan": plan.canonical(), "hash": plan.hash})
    analysis = analyse(plan, registry, inputs=inputs, max_steps=max_steps)
    if analysis.issues:
        await record(
            "plan_rejected", {"hash": plan.hash, "issues": [i.to_json() for i in analysis.issues]}
        )
        await record("run_finished", {"status": "rejected"})
        raise PlanInvalid(analysis.issues)
    await record("plan_validated", {"hash": plan.hash, "steps": len(plan.steps)})

    request = assess(analysis, run_id)
    await record(
        "risk_assessed",
        {"effects": list(request.effects), "needs_approval": [r.to_json() for r in request.risks]},
    )
    decision = await _decide(request, approver, record)
    if decision.plan_hash != plan.hash:
        await record(
            "approval_refused", {"granted_for": decision.plan_hash, "plan_hash": plan.hash}
        )
        await record("run_finished", {"status": "refused"})
        raise ApprovalMismatch(
            f"the grant names plan {decision.plan_hash[:12]}, not {plan.hash[:12]}"
        )

    engine = InProcessEngine(llm=llm, retries=retries, default_timeout=step_timeout, record=record)

    async def no_runtime_approvals(_: ApprovalRequest) -> Decision:  # pragma: no cover
        raise UsageError("run-time approvals need an approver (policy support)")

    trusted = frozenset(s for s, c in analysis.steps.items() if c.tool.trusted_output)
    result = await walk(
        analysis,
        inputs,
        run_id=run_id,
        run_step=engine.run_step,
        wait_for_approval=no_runtime_approvals,
        record=record,
        concurrency=concurrency,
        trusted_steps=trusted,
    )
    await record(
        "run_finished",
        {
            "status": result.status,
            "failed_step": result.failed_step,
            "error_kind": result.error_kind,
            "steps": result.statuses,
        },
    )
    return result


async def _decide(request: ApprovalRequest, approver: Approver, record: Any) -> Decision:
    if not request.needs_person:
        decision: Decision = request.approve("policy", "auto", "read-only plan")
    else:
        await record(
            "approval_requested",
            {
                "plan_hash": request.plan_hash,
                "needs_approval": [r.to_json() for r in request.risks],
            },
        )
        try:
            decision = await ask_approver(approver, request)
        except Exception as exc:
            await record(
                "approval_denied",
                {"plan_hash": request.plan_hash, "by": "policy", "via": "auto", "reason": str(exc)},
            )
            await record("run_finished", {"status": "denied"})
            raise
    if decision.approved:
        await record("approval_granted", decision.to_json())
        return decision
    await record("approval_denied", decision.to_json())
    await record("run_finished", {"status": "denied"})
    raise ApprovalDenied(decision)


def run_sync(plan: Plan, registry: ToolRegistry, **kwargs: Any) -> RunResult:
    """``run`` for synchronous code. Refuses to run inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("run_sync() was called inside an event loop; await run() instead")

    async def main() -> RunResult:
        return await run(plan, registry, **kwargs)

    return anyio.run(main)
