"""The durable engine on DBOS: a run is a DBOS workflow, each plan step a DBOS step (R10, R11).

How the DBOS pitfalls are handled:

- **Versioning.** ``APP_VERSION`` is a constant derived from planlock's version (never DBOS's
  source hash), so editing code does not strand running plans; recovery only takes workflows of
  the same version.
- **Determinism.** The workflow body is ``walk`` over the approved plan. Its parallel branches
  finish in any order, so DBOS's call-order step numbers are not used: before walking, the body
  reserves a fixed block of step ids for every plan step, in plan order (``_Slots``), and each
  DBOS operation of a step (its call, its approval wait, a resume decision and the retry)
  runs at its reserved id. No clock, no LLM call in the body; in-step ``llm`` calls run inside
  DBOS steps.
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

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dbos import DBOS, StepOptions, StepReservation

from planlock._version import __version__
from planlock.agent import Prepared
from planlock.approval import (
    ApprovalRequest,
    Decision,
    Denied,
    EndorsementStore,
    SQLEndorsements,
    admit_grant,
    binding_problem,
)
from planlock.core import Plan
from planlock.durable._checks import (
    Lookups,
    NeedsLookup,
    capture_lookups,
    check_without_lookup,
    replayed_check,
)
from planlock.durable._state import DurableState, OnceRecorder, decision_from_json
from planlock.errors import ApprovalMismatch, UsageError
from planlock.execution import InProcessEngine, StepCall, StepOutcome, walk
from planlock.journal import Journal, database_of
from planlock.llm import LLM
from planlock.policy import Policy, assess
from planlock.queue import Notifier
from planlock.tools import LLM_TOOL, Tool, ToolRegistry
from planlock.validation import analyse

__all__ = [
    "ANSWER_QUEUE",
    "ANSWER_WORKFLOW",
    "APP_NAME",
    "APP_VERSION",
    "MAX_RESUMES",
    "QUEUE_NAME",
    "WORKFLOW_NAME",
    "DBOSEngine",
    "WorkerContext",
    "answer_workflow_id",
]

APP_NAME = "planlock"
WORKFLOW_REVISION = 2
"""Bump when the workflow body's sequence of DBOS operations changes."""
APP_VERSION = f"planlock-{__version__}-wf{WORKFLOW_REVISION}"
QUEUE_NAME = "planlock-runs"
WORKFLOW_NAME = "planlock.run"
ANSWER_QUEUE = "planlock-answers"
"""Answers travel on their own queue, so runs waiting for them (which fill ``--concurrency``)
never hold them back."""
ANSWER_WORKFLOW = "planlock.answer"
ANSWER_KEY = "decision"
STEP_NAME = "planlock.step"
WAIT_NAME = "planlock.wait"
MAX_RESUMES = 3
"""How many times a person may let an interrupted, non-repeatable step run again."""
_STEP_OPTIONS: StepOptions = {"name": STEP_NAME, "retries_allowed": False}
_WAIT_OPTIONS: StepOptions = {"name": WAIT_NAME, "retries_allowed": False}
_LOOKUP_OPTIONS: StepOptions = {"name": "planlock.endorsements", "retries_allowed": False}


@dataclass
class WorkerContext:
    """What a worker process gives the workflows it runs (tools, journal, LLM)."""

    registry: ToolRegistry
    journal: Journal
    llm: LLM | None = None
    retries: int = 2
    step_timeout: float | None = None
    concurrency: int = 16
    expiry: timedelta = timedelta(days=7)
    """How long a run-time request waits for an answer before it expires (the call is not made)."""
    notifier: Notifier | None = None
    """Told about each request a run stores for a person (e.g. the queue's ``WebhookNotifier``)."""
    state: DurableState = field(init=False)
    endorsements: EndorsementStore = field(init=False)
    """The values people endorsed (the ``endorsements`` table beside the journal, shared with
    the approval queue and ``planlock endorse``)."""

    def __post_init__(self) -> None:
        self.state = DurableState(self.journal)
        self.endorsements = SQLEndorsements(database_of(self.journal.store))


_CURRENT: list[WorkerContext] = []


def install(context: WorkerContext) -> None:
    """Make ``context`` the one the workflows of this process use."""
    _CURRENT[:] = [context]


def _worker() -> WorkerContext:
    if not _CURRENT:
        raise UsageError("no durable worker is running in this process (see DurableWorker)")
    return _CURRENT[0]


def repeatable(tool: Tool) -> bool:
    """Whether running the tool again after a crash is harmless: declared idempotent, a read,
    or the quarantined LLM step (no effects)."""
    return tool.idempotent or tool.effect == "read" or tool.name == LLM_TOOL


@dataclass(frozen=True)
class _Slots:
    """The DBOS step ids reserved for one plan step, drawn in plan order before walking."""

    endorsements: StepReservation
    approval: StepReservation
    calls: tuple[StepReservation, ...]
    resumes: tuple[StepReservation, ...]

    @classmethod
    def reserve(cls) -> _Slots:
        endorsements = DBOS.reserve_step()
        approval = DBOS.reserve_step()
        calls = tuple(DBOS.reserve_step() for _ in range(MAX_RESUMES + 1))
        resumes = tuple(DBOS.reserve_step() for _ in range(MAX_RESUMES))
        return cls(endorsements, approval, calls, resumes)


def answer_workflow_id(approval_id: str) -> str:
    """The id of the workflow that carries a person's answer to a run-time request."""
    return f"{approval_id}.answer"


@DBOS.workflow(name=ANSWER_WORKFLOW)
async def answer_workflow(decision: dict[str, Any]) -> dict[str, Any]:
    """Publish a decision (``Approved``/``Denied`` as JSON) as this workflow's event; the run
    waiting for it reads it with ``DBOS.get_event`` (public API, with a timeout)."""
    await DBOS.set_event_async(ANSWER_KEY, decision)
    return decision


class DBOSEngine:
    """An ``Engine`` for one run inside its DBOS workflow."""

    def __init__(
        self,
        worker: WorkerContext,
        prepared: Prepared,
        slots: dict[str, _Slots],
        record: OnceRecorder,
        request_expiry: timedelta | None = None,
    ) -> None:
        self.worker = worker
        self.prepared = prepared
        self.slots = slots
        self.recorder = record
        self.request_expiry = request_expiry

    @property
    def run_id(self) -> str:
        return self.prepared.run_id

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        self.recorder.record(kind, data)

    async def check_call(self, call: StepCall) -> ApprovalRequest | Denied | None:
        """The run-time policy check, with endorsements consulted as the queue engine does (see
        ``_checks``: a lookup is a DBOS step, so a replay decides as the first run did), and a
        request id that is the same on every replay."""
        try:
            verdict = check_without_lookup(self.prepared, call)
        except NeedsLookup:
            slot = self.slots[call.step.id].endorsements
            found = await slot.run_async(_LOOKUP_OPTIONS, _lookup, self, call)
            verdict = replayed_check(self.prepared, found, self.recorder.record)(call)
        if isinstance(verdict, ApprovalRequest):
            return replace(verdict, id=f"{self.run_id}.{call.step.id}.call")
        return verdict

    async def run_step(self, call: StepCall) -> StepOutcome:
        slots = self.slots[call.step.id]
        out = await slots.calls[0].run_async(_STEP_OPTIONS, _run_tool, self, call, 0)
        round_no = 0
        while out.get("uncertain"):
            if round_no >= MAX_RESUMES:
                return StepOutcome(
                    False, error_kind="interrupted", error="interrupted again; not retried"
                )
            decision = await self._ask_resume(call, round_no)
            if not decision.approved:
                why = f"interrupted; {decision.by} marked it failed: {decision.reason}"
                return StepOutcome(False, error_kind="interrupted", error=why)
            round_no += 1
            out = await slots.calls[round_no].run_async(
                _STEP_OPTIONS, _run_tool, self, call, round_no
            )
        return StepOutcome(
            bool(out["ok"]),
            output=out.get("output"),
            error_kind=out.get("error_kind"),
            error_type=out.get("error_type"),
            error=out.get("error"),
            attempts=int(out.get("attempts", 1)),
        )

    async def wait_for_approval(self, request: ApprovalRequest) -> Decision:
        """Store the call request (``walk`` journaled it) and wait for the answer (``_wait``)."""
        assert request.step_id is not None
        state = self.worker.state
        state.add_approval(
            request.id,
            self.run_id,
            "call",
            request.plan_hash,
            request.to_json(),
            step_id=request.step_id,
            args_hash=request.args_hash,
            expires_at=self._expires_at(),
        )
        return await self._await_answer(request, self.slots[request.step_id].approval)

    async def _ask_resume(self, call: StepCall, round_no: int) -> Decision:
        sid = call.step.id
        base = self.prepared.plan_request()
        why = (
            f"step {sid} (tool {call.step.tool.name}, not idempotent) was interrupted after it "
            "started; it may or may not have taken effect. Approve to run it again, deny to mark "
            "it failed."
        )
        request = ApprovalRequest(
            self.run_id,
            base.plan,
            base.plan_hash,
            base.report,
            step_id=sid,
            args_hash=call.args_hash,
            args=call.args,
            provenance=call.provenance,
            id=f"{self.run_id}.{sid}.resume{round_no}",
        )
        reason = {"key": "resume_uncertain_step", "action": "require_approval", "message": why}
        stored = {**request.to_json(), "kind": "resume", "round": round_no, "reasons": [reason]}
        self.worker.state.add_approval(
            request.id,
            self.run_id,
            "resume",
            request.plan_hash,
            stored,
            step_id=sid,
            args_hash=call.args_hash,
            expires_at=self._expires_at(),
        )
        await self.record(
            "approval_requested",
            {
                "kind": "resume",
                "id": request.id,
                "plan_hash": request.plan_hash,
                "step": sid,
                "args_hash": call.args_hash,
                "round": round_no,
                "reasons": [reason],
            },
        )
        decision = await self._await_answer(request, self.slots[sid].resumes[round_no])
        problem = binding_problem(decision, request)
        if problem is not None:
            await self.record("approval_refused", {**decision.to_json(), "problem": problem})
            return request.deny("policy", "dbos", problem)
        return decision

    async def _await_answer(self, request: ApprovalRequest, slot: StepReservation) -> Decision:
        """Wait for the answer in a DBOS step at the request's reserved id (``_wait``): its
        outcome is recorded, so a replay takes the same answer (or the same expiry)."""
        state = self.worker.state
        state.set_status(self.run_id, "waiting_approval")
        out = await slot.run_async(_WAIT_OPTIONS, _wait, self, request)
        state.set_status(self.run_id, "running")
        if out.get("expired"):
            return request.deny("policy", "dbos", "the request expired")
        decision = decision_from_json(out)
        if decision.approved:
            state.mark_used(request.id)
            await self.record("approval_used", {"id": request.id, "step": request.step_id})
        return decision

    @property
    def expiry(self) -> timedelta:
        """How long this run's requests wait: the run's ``expires_in``, else the worker's."""
        return self.request_expiry or self.worker.expiry

    def _expires_at(self) -> str:
        # The wait's deadline (``_wait`` reads it back from the stored request, so a recovered
        # run waits only for what is left of it).
        return (datetime.now(UTC) + self.expiry).isoformat(timespec="milliseconds")


async def _wait(engine: DBOSEngine, request: ApprovalRequest) -> dict[str, Any]:
    """The DBOS step that waits for a person: ``DBOS.get_event`` on the request's answer
    workflow (``answer_workflow``), up to the request's stored deadline. At the deadline an
    answer stored in time is taken from the approvals table; otherwise the request expires
    (marked ``expired``, ``approval_expired`` journaled once) and ``{"expired": true}``."""
    state = engine.worker.state
    _, expires_at, _ = state.answer(request.id)
    deadline = datetime.fromisoformat(expires_at) if expires_at else None
    while True:
        left = 3600.0 if deadline is None else (deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            break
        message = await DBOS.get_event_async(
            answer_workflow_id(request.id), ANSWER_KEY, timeout_seconds=min(left, 3600.0)
        )
        if isinstance(message, dict):
            return message
    _, _, decided = state.answer(request.id)
    if decided is not None:
        return decided.to_json()
    state.expire()  # marks it expired and journals approval_expired, unless already done
    return {"expired": True}


async def _lookup(engine: DBOSEngine, call: StepCall) -> Lookups:
    """The DBOS step that asks the endorsement store (its answer is recorded for replays)."""
    return capture_lookups(engine.prepared, engine.worker.endorsements, call)


async def _run_tool(engine: DBOSEngine, call: StepCall, round_no: int) -> dict[str, Any]:
    """The DBOS step: call the tool (with the in-process engine's timeouts and retries)."""
    worker = engine.worker
    if not repeatable(call.step.tool) and not worker.state.mark_started(
        call.run_id, call.step.id, round_no
    ):
        return {"ok": False, "uncertain": True}
    steps = InProcessEngine(
        llm=worker.llm,
        retries=worker.retries,
        default_timeout=worker.step_timeout,
        record=engine.recorder,
    )
    outcome = await steps.run_step(call)
    return {
        "ok": outcome.ok,
        "output": outcome.output,
        "error_kind": outcome.error_kind,
        "error_type": outcome.error_type,
        "error": outcome.error,
        "attempts": outcome.attempts,
    }


@DBOS.workflow(name=WORKFLOW_NAME)
async def run_workflow(run: dict[str, Any]) -> dict[str, Any]:
    """One planlock run. ``run`` holds the approved plan, inputs, policy and the plan grant."""
    worker = _worker()
    run_id = str(run["run_id"])
    record = OnceRecorder(worker.journal, run_id)
    plan = Plan.parse(run["plan"])
    slots = {step.id: _Slots.reserve() for step in plan.steps}
    policy = Policy.model_validate(run["policy"])
    inputs = dict(run["inputs"])
    analysis = analyse(plan, worker.registry, inputs=inputs)
    if analysis.issues:
        issues = [i.to_json() for i in analysis.issues]
        record.record("plan_rejected", {"hash": plan.hash, "issues": issues, "by": "worker"})
        return _finish(worker, record, "rejected")
    prepared = Prepared(run_id, analysis, assess(analysis, policy=policy), policy, inputs)
    try:
        admit_grant(record.record, decision_from_json(run["grant"]), prepared.plan_request())
    except ApprovalMismatch:  # journaled, with the end of the run
        worker.state.set_status(run_id, "refused")
        return {"status": "refused"}
    worker.state.mark_used(str(run["approval_id"]))
    record.record("approval_used", {"id": run["approval_id"], "plan_hash": plan.hash})
    record.record("run_claimed", {"worker": DBOS.executor_id, "engine": "dbos"})
    worker.state.set_status(run_id, "running")
    expires_in = run.get("expires_in")
    expiry = timedelta(seconds=float(expires_in)) if expires_in else None
    engine = DBOSEngine(worker, prepared, slots, record, expiry)
    result = await walk(
        analysis,
        inputs,
        run_id=run_id,
        run_step=engine.run_step,
        wait_for_approval=engine.wait_for_approval,
        record=engine.record,
        check_call=engine.check_call,
        concurrency=worker.concurrency,
        trusted_steps=frozenset(s for s, c in analysis.steps.items() if c.tool.trusted_output),
    )
    return _finish(
        worker,
        record,
        result.status,
        failed_step=result.failed_step,
        error_kind=result.error_kind,
        steps=result.statuses,
    )


def _finish(
    worker: WorkerContext, record: OnceRecorder, status: str, **details: Any
) -> dict[str, Any]:
    data = {"status": status, **details}
    if "steps" in details:
        data["replans"] = 0
    record.record("run_finished", data)
    worker.state.set_status(record.run_id, status)
    return data
