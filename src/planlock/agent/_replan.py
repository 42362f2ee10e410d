"""Replanning glue (R8, R9): ask the replanner for a revision after a failure or at a
checkpoint, and adopt it (validate, assess, and approve it again when it reaches beyond the
approved envelope).
"""

from __future__ import annotations

from dataclasses import dataclass

from planlock.agent._prepare import Prepared, ask_in_process, noter, prepare, recorder
from planlock.approval import Approved, Approver, auto_approve, record_answer, settle_plan_answer
from planlock.core import Plan
from planlock.errors import ApprovalDenied, ApprovalRequired, PlanInvalid
from planlock.execution import RunResult
from planlock.journal import Journal
from planlock.planning import Envelope, Replanner, Revision, diff_steps
from planlock.tools import ToolRegistry

__all__ = ["Replanning", "adopt", "ask_revision", "authorize_revision", "stop_at_checkpoint"]


def stop_at_checkpoint(result: RunResult, kind: str, why: str) -> None:
    """A checkpoint said the rest no longer fits and no usable revision came: the run fails
    (running the old remainder would go against the review); the steps left are skipped."""
    if result.status != "paused":
        return
    result.status = "failed"
    result.failed_step = result.paused_at
    result.error_kind, result.error = kind, f"checkpoint after step {result.paused_at}: {why}"
    for sid, status in result.statuses.items():
        if status == "pending":
            result.statuses[sid] = "skipped"


@dataclass(frozen=True)
class Replanning:
    """How a run may adapt: the planner model that revises, the approver for revisions that
    reach beyond the approved envelope, and the bound on revisions."""

    replanner: Replanner
    registry: ToolRegistry
    approver: Approver = auto_approve
    max_replans: int = 2


async def ask_revision(
    replanning: Replanning, current: Prepared, result: RunResult, attempt: int
) -> Revision:
    r = replanning.replanner
    if result.status == "paused":
        return await r.at_checkpoint(
            current.plan,
            current.analysis,
            current.inputs,
            result,
            run_id=current.run_id,
            attempt=attempt,
        )
    return await r.after_failure(
        current.plan, current.inputs, result, run_id=current.run_id, attempt=attempt
    )


async def adopt(
    current: Prepared,
    revision: Revision,
    result: RunResult,
    replanning: Replanning,
    approved: Envelope,
    attempt: int,
    journal: Journal,
) -> tuple[Prepared, Envelope] | None:
    """Validate, assess and authorize a revision; None if it cannot be used (the run stops)."""
    record = recorder(journal, current.run_id)
    old = current.plan.canonical()["steps"]
    finished = [s for s in old if result.statuses.get(s["id"]) == "finished"]
    remaining = [s for s in old if result.statuses.get(s["id"]) != "finished"]
    reason = "checkpoint" if result.status == "paused" else "error"
    try:
        plan = Plan.parse(
            {"version": 1, "goal": current.plan.goal, "steps": [*finished, *revision.new_steps]}
        )
    except PlanInvalid as exc:
        issues = [i.to_json() for i in exc.issues]
        await record("plan_rejected", {"by": "replanner", "attempt": attempt, "issues": issues})
        return None
    diff = diff_steps(remaining, plan.canonical()["steps"][len(finished) :])
    await record("plan_created", {"plan": plan.canonical(), "hash": plan.hash, "by": "replanner"})
    try:
        revised = await prepare(
            plan,
            replanning.registry,
            journal,
            inputs=current.inputs,
            policy=current.policy,
            run_id=current.run_id,
            announce=False,
            final=False,
        )
    except (PlanInvalid, ApprovalDenied):
        return None
    envelope = Envelope.of(revised.analysis, revised.report)
    beyond = approved.beyond(envelope)
    await record(
        "replanned",
        {
            "reason": reason,
            "attempt": attempt,
            "failed_step": result.failed_step,
            "error_kind": result.error_kind,
            "from_hash": current.plan.hash,
            "to_hash": plan.hash,
            "diff": diff,
            "within_envelope": not beyond,
            "beyond": beyond,
        },
    )
    if beyond:
        await authorize_revision(revised, replanning.approver, journal, beyond)
        return revised, envelope
    grant = revised.plan_request().approve(
        "policy", "envelope", f"within what was approved for plan {current.plan.hash[:12]}"
    )
    record_answer(noter(journal, current.run_id), grant)
    return revised, approved


async def authorize_revision(
    revised: Prepared, approver: Approver, journal: Journal, beyond: list[str]
) -> Approved:
    """A revision beyond the envelope needs a new approval, like a new plan."""
    note = noter(journal, revised.run_id)
    request = revised.plan_request()
    note(
        "approval_requested",
        {"kind": "plan", "plan_hash": request.plan_hash, "revision": True, "beyond": beyond},
    )
    try:
        decision = await ask_in_process(approver, request, note)
    except ApprovalRequired:
        raise ApprovalRequired(
            [f"the revised plan reaches beyond the approval: {'; '.join(beyond)}"]
        ) from None
    return settle_plan_answer(note, request, decision)
