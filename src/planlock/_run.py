"""The one place that knows the order: validate -> assess -> approve -> execute, all journaled.

The phases are separate functions so the asynchronous queue can stop after ``prepare`` (submit),
and a worker can pick up at ``execute`` with a stored grant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from ulid import ULID

from planlock._approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    Denied,
    ask_approver,
    auto_approve,
    binding_problem,
)
from planlock._assess import RiskReport, assess, label_trust
from planlock._errors import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequired,
    PlanInvalid,
    UsageError,
)
from planlock._execute import InProcessEngine, RunResult, StepCall, walk
from planlock._journal import Journal
from planlock._llm import LLM
from planlock._plan import Plan
from planlock._policy import Policy, evaluate
from planlock._tools import ToolRegistry
from planlock._validate import Analysis, analyse

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

    def plan_request(self) -> ApprovalRequest:
        return ApprovalRequest(self.run_id, self.plan, self.plan.hash, self.report)


def recorder(journal: Journal, run_id: str) -> Record:
    async def record(kind: str, data: dict[str, Any]) -> None:
        journal.record(run_id, kind, data)

    return record


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
) -> Prepared:
    """Validate against ``registry`` (R2) and assess under ``policy``; journal both.

    Raises PlanInvalid (nothing runs) and ApprovalDenied when the policy denies a step outright.
    """
    run_id = run_id or str(ULID())
    record = recorder(journal, run_id)
    inputs = dict(inputs or {})
    policy = policy or Policy()
    if announce:
        await record("run_started", {"goal": plan.goal, "inputs": inputs, "plan_hash": plan.hash})
        await record("plan_created", {"plan": plan.canonical(), "hash": plan.hash})
    analysis = analyse(plan, registry, inputs=inputs, max_steps=max_steps)
    if analysis.issues:
        issues = [i.to_json() for i in analysis.issues]
        await record("plan_rejected", {"hash": plan.hash, "issues": issues})
        await record("run_finished", {"status": "rejected"})
        raise PlanInvalid(analysis.issues)
    await record("plan_validated", {"hash": plan.hash, "steps": len(plan.steps)})
    report = assess(analysis, policy=policy)
    await record("risk_assessed", report.to_json())
    prepared = Prepared(run_id, analysis, report, policy, inputs)
    if report.denied:
        reasons = "; ".join(s.reason for s in report.denied)
        denial = prepared.plan_request().deny("policy", "policy", reasons)
        await record("approval_denied", denial.to_json())
        await record("run_finished", {"status": "denied"})
        raise ApprovalDenied(denial)
    return prepared


async def authorize(prepared: Prepared, approver: Approver, journal: Journal) -> Approved:
    """Get the plan approved: by the policy when nothing needs a person, else by ``approver``."""
    record = recorder(journal, prepared.run_id)
    request = prepared.plan_request()
    if not prepared.report.needs_person:
        grant = request.approve("policy", "auto", "nothing in this plan needs a person")
        await record("approval_granted", grant.to_json())
        return grant
    await record(
        "approval_requested",
        {
            "kind": "plan",
            "plan_hash": request.plan_hash,
            "needs_approval": [s.to_json() for s in prepared.report.needs_plan_approval],
            "call_approvals": [s.step_id for s in prepared.report.call_approvals],
        },
    )
    try:
        decision = await ask_approver(approver, request)
    except ApprovalRequired as exc:
        denial = request.deny("policy", "auto", str(exc))
        await record("approval_denied", denial.to_json())
        await record("run_finished", {"status": "denied"})
        raise
    return await check_plan_decision(prepared, decision, journal)


async def check_plan_decision(prepared: Prepared, decision: Decision, journal: Journal) -> Approved:
    """Journal the answer to a plan request; refuse one bound to anything else (R7)."""
    record = recorder(journal, prepared.run_id)
    problem = binding_problem(decision, prepared.plan_request())
    if problem is not None:
        await record("approval_refused", {**decision.to_json(), "problem": problem})
        await record("run_finished", {"status": "refused"})
        raise ApprovalMismatch(problem)
    if isinstance(decision, Denied):
        await record("approval_denied", decision.to_json())
        await record("run_finished", {"status": "denied"})
        raise ApprovalDenied(decision)
    await record("approval_granted", decision.to_json())
    return decision


def call_checker(
    prepared: Prepared,
) -> Callable[[StepCall], ApprovalRequest | Denied | None]:
    """The run-time policy check (R6): the same rules, now on the concrete values."""
    is_trusted, describe = label_trust(prepared.analysis)

    def check(call: StepCall) -> ApprovalRequest | Denied | None:
        tool = call.step.tool
        verdict = evaluate(prepared.policy, tool, call.args, call.provenance, is_trusted, describe)
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
        pending = tuple(
            r
            for r in verdict.concerns
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
) -> RunResult:
    """Run an approved plan. Refuses a grant that is not for this plan (R7)."""
    record = recorder(journal, prepared.run_id)
    problem = binding_problem(grant, prepared.plan_request())
    if problem is not None:
        await record("approval_refused", {**grant.to_json(), "problem": problem})
        await record("run_finished", {"status": "refused"})
        raise ApprovalMismatch(problem)
    engine = InProcessEngine(llm=llm, retries=retries, default_timeout=step_timeout, record=record)
    analysis = prepared.analysis
    trusted = frozenset(s for s, c in analysis.steps.items() if c.tool.trusted_output)
    result = await walk(
        analysis,
        prepared.inputs,
        run_id=prepared.run_id,
        run_step=engine.run_step,
        wait_for_approval=wait_for_approval,
        record=record,
        check_call=call_checker(prepared),
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


def in_process_waiter(
    approver: Approver, journal: Journal, run_id: str
) -> Callable[[ApprovalRequest], Awaitable[Decision]]:
    """Ask ``approver`` about a call and journal the answer; an approver that cannot ask a
    person (``auto``) denies."""
    record = recorder(journal, run_id)

    async def wait(request: ApprovalRequest) -> Decision:
        try:
            decision = await ask_approver(approver, request)
        except ApprovalRequired as exc:
            decision = request.deny("policy", "auto", str(exc))
        if binding_problem(decision, request) is None:  # a mismatch is journaled as refused
            kind = "approval_granted" if decision.approved else "approval_denied"
            await record(kind, {**decision.to_json(), "id": request.id})
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
) -> RunResult:
    """Validate, assess, approve and execute a plan; journal every step of the way.

    Raises PlanInvalid, ApprovalRequired, ApprovalDenied or ApprovalMismatch (nothing ran).
    A step failure, including a call the policy stopped at run time, does not raise: the
    result says ``failed`` (see ``raise_for_status``).
    """
    journal = journal if journal is not None else Journal()
    prepared = await prepare(
        plan, registry, journal, inputs=inputs, policy=policy, max_steps=max_steps, run_id=run_id
    )
    grant = await authorize(prepared, approver, journal)
    return await execute(
        prepared,
        grant,
        journal,
        wait_for_approval=in_process_waiter(approver, journal, prepared.run_id),
        llm=llm,
        concurrency=concurrency,
        retries=retries,
        step_timeout=step_timeout,
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
