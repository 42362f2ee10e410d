"""The one place that knows the order: validate -> assess -> approve -> execute, all journaled.

The phases are separate functions so the asynchronous queue can stop after ``prepare`` (submit),
and a worker can pick up at ``execute`` with a stored grant.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from ulid import ULID

from planlock.approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    Denied,
    EndorsementStore,
    MemoryEndorsements,
    Note,
    PlanGate,
    admit_grant,
    ask_approver,
    auto_approve,
    binding_problem,
    bound_endorsements,
    offers,
    record_answer,
    settle,
    settle_plan_answer,
)
from planlock.core import Plan
from planlock.errors import ApprovalDenied, ApprovalRequired, PlanInvalid, UsageError
from planlock.execution import InProcessEngine, RunResult, StepCall, walk
from planlock.journal import Journal
from planlock.llm import LLM
from planlock.planning import Envelope, Replanner, Revision, diff_steps
from planlock.policy import Policy, RiskReport, assess, evaluate
from planlock.tools import ToolRegistry
from planlock.validation import Analysis, analyse, label_trust

__all__ = ["Prepared", "execute", "prepare", "run", "run_sync"]

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

    @functools.cached_property
    def plan_hash(self) -> str:
        """The plan's hash, computed once (it is asked for on every call check)."""
        return self.plan.hash

    def plan_request(self, approval_id: str = "") -> ApprovalRequest:
        """The plan's approval request (``approval_id``: the id an engine stores it under)."""
        return ApprovalRequest(self.run_id, self.plan, self.plan_hash, self.report, id=approval_id)


def recorder(journal: Journal, run_id: str) -> Record:
    async def record(kind: str, data: dict[str, Any]) -> None:
        journal.record(run_id, kind, data)

    return record


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
    analysis = analyse(plan, registry, inputs=inputs, max_steps=max_steps)
    if analysis.issues:
        issues = [i.to_json() for i in analysis.issues]
        note("plan_rejected", {"hash": plan_hash, "issues": issues})
        if final:
            note("run_finished", {"status": "rejected"})
        raise PlanInvalid(analysis.issues)
    note("plan_validated", {"hash": plan_hash, "steps": len(plan.steps)})
    prepared = Prepared(run_id, analysis, assess(analysis, policy=policy), policy, inputs)
    PlanGate.of(prepared.plan_request()).assessed(note, final=final)
    return prepared


async def authorize(prepared: Prepared, approver: Approver, journal: Journal) -> Approved:
    """Get the plan approved: by the policy when nothing needs a person, else by ``approver``."""
    note = noter(journal, prepared.run_id)
    gate = PlanGate.of(prepared.plan_request())
    grant = gate.open(note)
    if grant is not None:
        return grant
    decision = await _ask_in_process(approver, gate.request, note)
    return settle_plan_answer(note, gate.request, decision)


async def _ask_in_process(approver: Approver, request: ApprovalRequest, note: Note) -> Decision:
    """How a run in process waits for a plan's answer: it asks ``approver``. One that cannot ask
    a person (``auto``) raises ApprovalRequired; that is journaled as the policy's denial."""
    try:
        return await ask_approver(approver, request)
    except ApprovalRequired as exc:
        record_answer(note, request.deny("policy", "auto", str(exc)), final=True)
        raise


def call_checker(
    prepared: Prepared,
    endorsements: EndorsementStore | None = None,
    note: Note | None = None,
) -> Callable[[StepCall], ApprovalRequest | Denied | None]:
    """The run-time policy check (R6): the same rules, now on the concrete values. With
    ``endorsements``, an untrusted or chosen value in a sensitive parameter that a person
    endorsed (same value hash and source, and target if set) is allowed without asking; each
    endorsement used is journaled through ``note`` (``endorsement_used``)."""
    is_trusted, describe = label_trust(prepared.analysis)
    steps = prepared.analysis.steps

    def check(call: StepCall) -> ApprovalRequest | Denied | None:
        tool = call.step.tool
        verdict = evaluate(
            prepared.policy,
            tool,
            call.args,
            call.provenance,
            is_trusted,
            describe,
            decided_by=call.step.marks,
        )
        base = prepared.plan_request()
        if verdict.action == "deny":
            why = "; ".join(r.message for r in verdict.concerns if r.action == "deny")
            return Denied(
                base.plan_hash,
                "policy",
                "policy",
                why,
                step_id=call.step.id,
                args_hash=call.args_hash,
            )
        covered = prepared.report.covered(call.step.id)
        concerns = verdict.concerns
        offered = offers(steps, call.step, call.args, concerns)
        if endorsements is not None and offered:
            concerns, used = settle(endorsements, offered, concerns)
            if used and note is not None:
                for offer, e in used:
                    note(
                        "endorsement_used",
                        {
                            "step": call.step.id,
                            "item": call.item,
                            "args_hash": call.args_hash,
                            "param": offer.param,
                            "target": offer.target,
                            "endorsement": e.id,
                            "value_hash": e.value_hash,
                            "source": e.source,
                            "label": e.label,
                            "by": e.by,
                        },
                    )
            left = {r.params[0] for r in concerns if r.action != "allow" and len(r.params) == 1}
            offered = tuple(o for o in offered if o.param in left)
        pending = tuple(
            r
            for r in concerns
            if r.action == "require_approval" and (r.at_call or r.key not in covered)
        )
        if not pending:
            return None
        return ApprovalRequest(
            prepared.run_id,
            base.plan,
            base.plan_hash,
            prepared.report,
            step_id=call.step.id,
            args_hash=call.args_hash,
            args=call.args,
            provenance=call.provenance,
            reasons=pending,
            id=str(ULID()),
            endorsable=offered,
        )

    return check


async def execute(
    prepared: Prepared,
    grant: Approved,
    journal: Journal,
    *,
    wait_for_approval: Callable[[ApprovalRequest], Awaitable[Decision]],
    llm: LLM | None = None,
    concurrency: int = 16,
    retries: int = 2,
    step_timeout: float | None = None,
    replanning: Replanning | None = None,
    endorsements: EndorsementStore | None = None,
) -> RunResult:
    """Run an approved plan. Refuses a grant that is not for this plan (R7). With
    ``replanning``, a failed step or a checkpoint may revise the rest of the plan (R8, R9).
    With ``endorsements``, endorsed values reach sensitive parameters without asking."""
    admit_grant(noter(journal, prepared.run_id), grant, prepared.plan_request())
    record = recorder(journal, prepared.run_id)
    engine = InProcessEngine(llm=llm, retries=retries, default_timeout=step_timeout, record=record)
    current = prepared
    approved = Envelope.of(prepared.analysis, prepared.report)
    completed: dict[str, tuple[Any, frozenset[str]]] = {}
    replans = 0
    while True:
        analysis = current.analysis
        budget = replanning is not None and replans < replanning.max_replans
        result = await walk(
            analysis,
            current.inputs,
            run_id=current.run_id,
            run_step=engine.run_step,
            wait_for_approval=wait_for_approval,
            record=record,
            check_call=call_checker(current, endorsements, noter(journal, current.run_id)),
            concurrency=concurrency,
            trusted_steps=frozenset(s for s, c in analysis.steps.items() if c.tool.trusted_output),
            completed=completed,
            pause_at_checkpoints=budget,
        )
        result.replans = replans
        completed = {s: (v, frozenset(result.provenance[s])) for s, v in result.outputs.items()}
        if not budget or replanning is None or result.status == "succeeded":
            break
        if result.status == "failed" and result.error_kind in ("denied", "approval_refused"):
            break  # a person or the policy said no: that is not something to plan around
        revision = await _ask_revision(replanning, current, result, replans + 1)
        if result.status == "paused":
            await record(
                "checkpoint_reviewed",
                {"step": result.paused_at, "needs_revision": revision.needs_revision},
            )
            if not revision.needs_revision:
                continue
        if revision.gave_up:
            await record("replanned", {"attempt": replans + 1, "outcome": "gave_up"})
            _stop_at_checkpoint(result, "replan_gave_up", "the planner could not revise the plan")
            break
        revised = await _adopt(
            current, revision, result, replanning, approved, replans + 1, journal
        )
        if revised is None:
            _stop_at_checkpoint(result, "replan_rejected", "the revision could not be used")
            break
        current, approved = revised
        replans += 1
    result.replans = replans
    await record(
        "run_finished",
        {
            "status": result.status,
            "failed_step": result.failed_step,
            "error_kind": result.error_kind,
            "steps": result.statuses,
            "replans": replans,
        },
    )
    return result


def _stop_at_checkpoint(result: RunResult, kind: str, why: str) -> None:
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


async def _ask_revision(
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


async def _adopt(
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
        decision = await _ask_in_process(approver, request, note)
    except ApprovalRequired:
        raise ApprovalRequired(
            [f"the revised plan reaches beyond the approval: {'; '.join(beyond)}"]
        ) from None
    return settle_plan_answer(note, request, decision)


def in_process_waiter(
    approver: Approver,
    journal: Journal,
    run_id: str,
    endorsements: EndorsementStore | None = None,
) -> Callable[[ApprovalRequest], Awaitable[Decision]]:
    """Ask ``approver`` about a call and journal the answer; an approver that cannot ask a
    person (``auto``) denies. Values the person endorsed with a grant
    (``ApprovalRequest.endorse``) and bound to the request are kept in ``endorsements`` and
    journaled (``endorsement_added``)."""
    note = noter(journal, run_id)

    async def wait(request: ApprovalRequest) -> Decision:
        try:
            decision = await ask_approver(approver, request)
        except ApprovalRequired as exc:
            decision = request.deny("policy", "auto", str(exc))
        if binding_problem(decision, request) is None:  # a mismatch is journaled as refused
            record_answer(note, decision, request_id=request.id)
        if endorsements is not None:
            for e in bound_endorsements(decision, request):
                endorsements.add(e)
                note("endorsement_added", {**e.to_json(), "step": request.step_id})
        return decision

    return wait


async def run(
    plan: Plan,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    journal: Journal | None = None,
    approver: Approver = auto_approve,
    policy: Policy | None = None,
    llm: LLM | None = None,
    concurrency: int = 16,
    retries: int = 2,
    step_timeout: float | None = None,
    max_steps: int | None = None,
    run_id: str | None = None,
    replanner: Replanner | LLM | None = None,
    max_replans: int = 2,
    endorsements: EndorsementStore | None = None,
) -> RunResult:
    """Validate, assess, approve and execute a plan; journal every step of the way.

    Raises PlanInvalid, ApprovalRequired, ApprovalDenied or ApprovalMismatch (nothing ran).
    A step failure, including a call the policy stopped at run time, does not raise: the
    result says ``failed`` (see ``raise_for_status``). With ``replanner`` (the planner's LLM, or
    a ``Replanner``), failed steps and checkpoints may revise the rest of the plan, at most
    ``max_replans`` times; a revision beyond what was approved goes to ``approver`` again, and
    raises ApprovalRequired / ApprovalDenied if refused (the finished steps stay finished).

    ``endorsements`` (a ``MemoryEndorsements`` or ``SQLEndorsements``) holds the values a person
    endorsed: an untrusted or chosen value in a sensitive parameter with a live endorsement for
    its hash and source runs without asking; values endorsed during the run are added to it
    (without one, they last for this run only).
    """
    journal = journal if journal is not None else Journal()
    endorsements = endorsements if endorsements is not None else MemoryEndorsements()
    replanning = None
    if replanner is not None:
        if not isinstance(replanner, Replanner):
            replanner = Replanner(replanner, registry, journal=journal)
        replanning = Replanning(replanner, registry, approver, max_replans)
    prepared = await prepare(
        plan, registry, journal, inputs=inputs, policy=policy, max_steps=max_steps, run_id=run_id
    )
    grant = await authorize(prepared, approver, journal)
    return await execute(
        prepared,
        grant,
        journal,
        wait_for_approval=in_process_waiter(approver, journal, prepared.run_id, endorsements),
        llm=llm,
        concurrency=concurrency,
        retries=retries,
        step_timeout=step_timeout,
        replanning=replanning,
        endorsements=endorsements,
    )


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
