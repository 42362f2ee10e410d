"""The one place that knows the order: validate -> assess -> approve -> execute, all journaled.

The phases are separate functions so the asynchronous queue can stop after ``prepare`` (submit),
and a worker can pick up at ``execute`` with a stored grant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ulid import ULID

from planlock import telemetry
from planlock.agent._calls import call_checker, in_process_waiter
from planlock.agent._prepare import Prepared, authorize, noter, prepare, read_tools, recorder
from planlock.agent._replan import Replanning, adopt, ask_revision, stop_at_checkpoint
from planlock.approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    EndorsementStore,
    MemoryEndorsements,
    admit_grant,
    auto_approve,
)
from planlock.core import Plan, run_blocking
from planlock.execution import InProcessEngine, RunResult, walk
from planlock.journal import Journal
from planlock.llm import LLM
from planlock.planning import Envelope, Replanner
from planlock.policy import Policy
from planlock.tools import ToolRegistry

__all__ = ["execute", "run", "run_sync"]


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
    With ``endorsements``, endorsed values reach sensitive parameters without asking.
    Traced as the run's ``invoke_workflow`` span (or in it, when ``run`` opened it)."""
    with telemetry.workflow(prepared.run_id) as span:
        span.set({"planlock.plan_hash": prepared.plan_hash})
        try:
            return await _execute(
                prepared,
                grant,
                journal,
                wait_for_approval=wait_for_approval,
                llm=llm,
                concurrency=concurrency,
                retries=retries,
                step_timeout=step_timeout,
                replanning=replanning,
                endorsements=endorsements,
            )
        finally:
            journal.flush()  # an outcome not yet durable (the walk was cancelled, or raised)


async def _execute(
    prepared: Prepared,
    grant: Approved,
    journal: Journal,
    *,
    wait_for_approval: Callable[[ApprovalRequest], Awaitable[Decision]],
    llm: LLM | None,
    concurrency: int,
    retries: int,
    step_timeout: float | None,
    replanning: Replanning | None,
    endorsements: EndorsementStore | None,
) -> RunResult:
    admit_grant(noter(journal, prepared.run_id), grant, prepared.plan_request())
    reads = set(read_tools(prepared.analysis))  # grows with the tools of adopted revisions
    record = recorder(journal, prepared.run_id, reads)
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
        revision = await ask_revision(replanning, current, result, replans + 1)
        if result.status == "paused":
            await record(
                "checkpoint_reviewed",
                {"step": result.paused_at, "needs_revision": revision.needs_revision},
            )
            if not revision.needs_revision:
                continue
        if revision.gave_up:
            await record("replanned", {"attempt": replans + 1, "outcome": "gave_up"})
            stop_at_checkpoint(result, "replan_gave_up", "the planner could not revise the plan")
            break
        revised = await adopt(current, revision, result, replanning, approved, replans + 1, journal)
        if revised is None:
            stop_at_checkpoint(result, "replan_rejected", "the revision could not be used")
            break
        current, approved = revised
        reads |= read_tools(current.analysis)
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
    run_id = run_id or str(ULID())
    with telemetry.workflow(run_id) as span:
        prepared = await prepare(
            plan,
            registry,
            journal,
            inputs=inputs,
            policy=policy,
            max_steps=max_steps,
            run_id=run_id,
        )
        span.set({"planlock.plan_hash": prepared.plan_hash})
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

    async def main() -> RunResult:
        return await run(plan, registry, **kwargs)

    return run_blocking(main, "run_sync() was called inside an event loop; await run() instead")
