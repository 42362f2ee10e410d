"""The durable engine on DBOS: a run is a DBOS workflow, each plan step a DBOS step (R10, R11).

How the DBOS pitfalls are handled:

- **Versioning.** ``APP_VERSION`` is a constant derived from planlock's version (never DBOS's
  source hash), so editing code does not strand running plans; recovery only takes workflows of
  the same version.
- **Determinism.** The workflow body is ``walk`` over the approved plan (the in-process
  engine's walk, with its conditions, ``for_each`` loops and checkpoints). Its parallel branches
  finish in any order, so DBOS's call-order step numbers are not used inside a walk: before
  walking, the body reserves a fixed block of step ids for every call, in plan order (see
  ``_engine``), and each DBOS operation of a call (endorsement lookup, approval wait, tool call,
  resume wait) runs at its reserved id. Between walks the body is sequential: a replan (the
  replanner's LLM call, then validating, assessing and, beyond the approved envelope, a person's
  answer) is two DBOS steps in call order, so a replay takes the recorded revision. No clock,
  no LLM call in the body itself.
- **At least once.** Tools get ``StepContext.idempotency_key`` (``run_id:step_id``). Before a tool
  that is not repeatable (not ``idempotent``, not a read) is called, a start row is committed; a
  restart that finds the row but no DBOS result does not call again: the run asks a person
  (an approval request of kind ``resume``; approve = run it again, deny = mark it failed).
- **JSON, not pickle.** DBOS is configured with its portable JSON serializer: workflow inputs,
  step outputs, messages and errors are stored as JSON.
- **Journal.** Events are written through ``OnceRecorder``, so a replayed body does not write
  an event twice and a crash loses none.
- **Executors.** Workers have stable executor ids (``--id``); a restarted worker recovers its
  own runs, and ``adopt`` hands a dead worker's runs to the live ones.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from dbos import DBOS, StepOptions

from planlock.agent import Prepared, Replanning, adopt, ask_revision, stop_at_checkpoint
from planlock.approval import ApprovalRequest, Decision, admit_grant, settle_plan_answer
from planlock.core import Plan
from planlock.durable._engine import (
    ANSWER_QUEUE,
    ANSWER_WORKFLOW,
    APP_NAME,
    APP_VERSION,
    MAX_RECOVERIES,
    MAX_RESUMES,
    QUEUE_NAME,
    WORKFLOW_NAME,
    DBOSEngine,
    WorkerContext,
    answer_workflow_id,
    install,
    wait_for_answer,
    worker,
)
from planlock.durable._state import OnceRecorder, decision_from_json
from planlock.errors import ApprovalDenied, ApprovalMismatch
from planlock.execution import RunResult, walk
from planlock.planning import Envelope, Revision
from planlock.policy import Policy, assess
from planlock.validation import analyse

__all__ = [
    "ANSWER_QUEUE",
    "ANSWER_WORKFLOW",
    "APP_NAME",
    "APP_VERSION",
    "MAX_RESUMES",
    "QUEUE_NAME",
    "WORKFLOW_NAME",
    "WorkerContext",
    "answer_workflow_id",
    "install",
]

_REVISE_OPTIONS: StepOptions = {"name": "planlock.revise", "retries_allowed": False}
_ADOPT_OPTIONS: StepOptions = {"name": "planlock.adopt", "retries_allowed": False}
_WAIT_OPTIONS: StepOptions = {"name": "planlock.wait", "retries_allowed": False}


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=MAX_RECOVERIES)
async def run_workflow(run: dict[str, Any]) -> dict[str, Any]:
    """One planlock run. ``run`` holds the approved plan, inputs, policy and the plan grant,
    and the run's ``expires_in`` (seconds) and ``max_replans``."""
    context = worker()
    run_id = str(run["run_id"])
    record = OnceRecorder(context.journal, run_id)
    plan = Plan.parse(run["plan"])
    policy = Policy.model_validate(run["policy"])
    inputs = dict(run["inputs"])
    analysis = analyse(plan, context.registry, inputs=inputs)
    if analysis.issues:
        issues = [i.to_json() for i in analysis.issues]
        record.record("plan_rejected", {"hash": plan.hash, "issues": issues, "by": "worker"})
        return _finish(context, record, "rejected")
    prepared = Prepared(run_id, analysis, assess(analysis, policy=policy), policy, inputs)
    try:
        admit_grant(record.record, decision_from_json(run["grant"]), prepared.plan_request())
    except ApprovalMismatch:  # journaled, with the end of the run
        context.state.set_status(run_id, "refused")
        return {"status": "refused"}
    context.state.mark_used(str(run["approval_id"]))
    record.record("approval_used", {"id": run["approval_id"], "plan_hash": plan.hash})
    record.record("run_claimed", {"worker": DBOS.executor_id, "engine": "dbos"})
    context.state.set_status(run_id, "running")
    expires_in = run.get("expires_in")
    expiry = timedelta(seconds=float(expires_in)) if expires_in else None
    max_replans = int(run.get("max_replans") or 0) if context.replanner is not None else 0
    return await _execute(context, prepared, record, expiry, max_replans)


async def _execute(
    context: WorkerContext,
    prepared: Prepared,
    record: OnceRecorder,
    expiry: timedelta | None,
    max_replans: int,
) -> dict[str, Any]:
    """``planlock.agent.execute``'s loop on DBOS: walk; after a failure or at a checkpoint, while
    the budget lasts, revise (a DBOS step), adopt the revision (a DBOS step) and walk again."""
    current = prepared
    approved = Envelope.of(prepared.analysis, prepared.report)
    completed: dict[str, tuple[Any, frozenset[str]]] = {}
    replans = 0
    while True:
        engine = DBOSEngine(context, current, record, expiry, revision=replans)
        analysis = current.analysis
        budget = replans < max_replans
        result = await walk(
            analysis,
            current.inputs,
            run_id=current.run_id,
            run_step=engine.run_step,
            wait_for_approval=engine.wait_for_approval,
            record=engine.record,
            check_call=engine.check_call,
            concurrency=context.concurrency,
            trusted_steps=frozenset(s for s, c in analysis.steps.items() if c.tool.trusted_output),
            completed=completed,
            pause_at_checkpoints=budget,
        )
        completed = {s: (v, frozenset(result.provenance[s])) for s, v in result.outputs.items()}
        if not budget or result.status == "succeeded":
            break
        if result.status == "failed" and result.error_kind in ("denied", "approval_refused"):
            break  # a person or the policy said no: that is not something to plan around
        attempt = replans + 1
        revision = _revision(
            await DBOS.reserve_step().run_async(
                _REVISE_OPTIONS, _revise, context, current, result, attempt
            )
        )
        if result.status == "paused":
            record.record(
                "checkpoint_reviewed",
                {"step": result.paused_at, "needs_revision": revision.needs_revision},
            )
            if not revision.needs_revision:
                continue
        if revision.gave_up:
            record.record("replanned", {"attempt": attempt, "outcome": "gave_up"})
            stop_at_checkpoint(result, "replan_gave_up", "the planner could not revise the plan")
            break
        adopted = await DBOS.reserve_step().run_async(
            _ADOPT_OPTIONS, _adopt, context, current, revision, result, approved, attempt
        )
        record.reload()  # the step journaled the revision's events itself
        if adopted.get("plan") is None:
            stop_at_checkpoint(result, "replan_rejected", "the revision could not be used")
            break
        revised = _prepared(context, current, adopted["plan"])
        if adopted.get("ask"):
            refused = await _authorize(engine, revised, record, attempt)
            if refused is not None:  # journaled with the end of the run
                context.state.set_status(current.run_id, refused)
                return {"status": refused, "replans": replans}
        if adopted["beyond"]:
            approved = Envelope.of(revised.analysis, revised.report)
        current = revised
        replans += 1
    result.replans = replans
    return _finish(
        context,
        record,
        result.status,
        failed_step=result.failed_step,
        error_kind=result.error_kind,
        steps=result.statuses,
        replans=replans,
    )


def _revision(data: dict[str, Any]) -> Revision:
    steps = tuple(data.get("new_steps") or ())
    return Revision(bool(data["needs_revision"]), steps, data.get("gave_up"))


def _prepared(context: WorkerContext, current: Prepared, plan: dict[str, Any]) -> Prepared:
    """The adopted revision, validated and assessed again (deterministic; nothing journaled)."""
    analysis = analyse(Plan.parse(plan), context.registry, inputs=current.inputs)
    report = assess(analysis, policy=current.policy)
    return Prepared(current.run_id, analysis, report, current.policy, current.inputs)


async def _revise(
    context: WorkerContext, current: Prepared, result: RunResult, attempt: int
) -> dict[str, Any]:
    """The DBOS step that asks the replanner (its answer is recorded for replays)."""
    assert context.replanner is not None
    replanning = Replanning(context.replanner, context.registry)
    revision = await ask_revision(replanning, current, result, attempt)
    return {
        "needs_revision": revision.needs_revision,
        "new_steps": list(revision.new_steps),
        "gave_up": revision.gave_up,
    }


class _AskPerson(Exception):
    pass


def _ask_person(request: ApprovalRequest) -> Decision:
    raise _AskPerson(request.plan.canonical())


async def _adopt(
    context: WorkerContext,
    current: Prepared,
    revision: Revision,
    result: RunResult,
    approved: Envelope,
    attempt: int,
) -> dict[str, Any]:
    """The DBOS step that validates and assesses a revision (``planlock.agent``'s ``adopt``,
    journaled as in process). Returns the revised plan (None when it cannot be used), whether
    the approved envelope grew, and ``ask`` when the revision reaches beyond it: then the
    body asks a person (``_authorize``), so the wait is not inside this step."""
    assert context.replanner is not None
    replanning = Replanning(context.replanner, context.registry, _ask_person)
    try:
        out = await adopt(current, revision, result, replanning, approved, attempt, context.journal)
    except _AskPerson as asked:
        return {"plan": asked.args[0], "beyond": True, "ask": True}
    if out is None:
        return {"plan": None}
    revised, envelope = out
    return {"plan": revised.plan.canonical(), "beyond": envelope is not approved}


async def _authorize(
    engine: DBOSEngine, revised: Prepared, record: OnceRecorder, attempt: int
) -> str | None:
    """A revision beyond the approved envelope, stored for a person (kind ``revision``, in
    ``planlock approvals list``, notified) and answered as a call request is: the wait is a
    DBOS step. None when approved; ``denied`` or ``refused`` (journaled, the run ends)."""
    request = replace(revised.plan_request(), id=f"{engine.run_id}.replan{attempt}")
    await engine.store(request, "revision", {**request.to_json(), "kind": "revision"})
    out = await DBOS.reserve_step().run_async(_WAIT_OPTIONS, wait_for_answer, engine, request)
    decision = await engine.take_answer(request, out)
    record.reload()  # the answer may have been journaled by the process that decided it
    try:
        settle_plan_answer(record.record, request, decision)
    except ApprovalDenied:
        return "denied"
    except ApprovalMismatch:
        return "refused"
    return None


def _finish(
    context: WorkerContext, record: OnceRecorder, status: str, **details: Any
) -> dict[str, Any]:
    data = {"status": status, **details}
    record.record("run_finished", data)
    context.state.set_status(record.run_id, status)
    return data
