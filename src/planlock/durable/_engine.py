"""The DBOS engine's half of the walk: what a worker gives its runs (``WorkerContext``) and the
``Engine`` of one run inside its workflow (``DBOSEngine``): its steps, checks and waits, each a
DBOS step at an id reserved before the walk (see ``_workflow`` for why).

Each call of the walk (a step, or one item of a ``for_each`` step) has its own block of reserved
ids (``_Slots``): the endorsement lookup, the approval wait, up to ``MAX_RESUMES + 1`` tool
calls and ``MAX_RESUMES`` resume waits. A ``for_each`` step reserves ``max_items`` blocks (the
walk fails a longer list before any item runs). A revised plan (replanning) is walked with new
blocks, reserved after the revision was recorded, so the numbering stays the same on replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from dbos import DBOS, StepOptions, StepReservation

from planlock._version import __version__
from planlock.agent import Prepared, deferrable, read_tools, resume_request
from planlock.approval import (
    ApprovalRequest,
    Decision,
    Denied,
    EndorsementStore,
    SQLEndorsements,
    binding_problem,
)
from planlock.core import iso_ms
from planlock.durable._checks import (
    Lookups,
    NeedsLookup,
    capture_lookups,
    check_without_lookup,
    replayed_check,
)
from planlock.durable._state import DurableState, OnceRecorder, decision_from_json
from planlock.errors import UsageError
from planlock.execution import BATCH_SUFFIX, InProcessEngine, StepCall, StepOutcome
from planlock.journal import Journal, database_of
from planlock.llm import LLM
from planlock.planning import Replanner
from planlock.queue import Notifier, notify_request
from planlock.tools import LLM_TOOL, Tool, ToolRegistry
from planlock.validation import Analysis

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
    "install",
    "repeatable",
    "wait_for_answer",
    "worker",
]

APP_NAME = "planlock"
WORKFLOW_REVISION = 3
"""Bump when the workflow body's sequence of DBOS operations changes."""
APP_VERSION = f"planlock-{__version__}-wf{WORKFLOW_REVISION}"
QUEUE_NAME = "planlock-runs"
WORKFLOW_NAME = "planlock.run"
ANSWER_QUEUE = "planlock-answers"
"""Answers travel on their own queue, so runs waiting for them (which fill ``--concurrency``)
never hold them back."""
ANSWER_WORKFLOW = "planlock.answer"
ANSWER_KEY = "decision"
MAX_RESUMES = 3
"""How many times a person may let an interrupted, non-repeatable step run again."""
_STEP_OPTIONS: StepOptions = {"name": "planlock.step", "retries_allowed": False}
_WAIT_OPTIONS: StepOptions = {"name": "planlock.wait", "retries_allowed": False}
_LOOKUP_OPTIONS: StepOptions = {"name": "planlock.endorsements", "retries_allowed": False}
_STEP_EVENTS = frozenset(
    {"step_started", "step_finished", "step_failed", "step_skipped", "step_retrying"}
)


@dataclass
class WorkerContext:
    """What a worker process gives the workflows it runs (tools, journal, LLM, replanner)."""

    registry: ToolRegistry
    journal: Journal
    llm: LLM | None = None
    retries: int = 2
    step_timeout: float | None = None
    concurrency: int = 16
    expiry: timedelta = timedelta(days=7)
    """How long a run-time request waits for an answer before it expires (the call is not made),
    for runs submitted without their own ``expires_in``."""
    notifier: Notifier | None = None
    """Told about each request a run stores for a person (e.g. the queue's ``WebhookNotifier``)."""
    replanner: Replanner | None = None
    """Revises a run after a failed step or at a checkpoint (up to the run's ``max_replans``);
    None: runs on this worker are not replanned."""
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


def worker() -> WorkerContext:
    """The context ``install`` made current."""
    if not _CURRENT:
        raise UsageError("no durable worker is running in this process (see DurableWorker)")
    return _CURRENT[0]


def repeatable(tool: Tool) -> bool:
    """Whether running the tool again after a crash is harmless: declared idempotent, a read,
    or the quarantined LLM step (no effects)."""
    return tool.idempotent or tool.effect == "read" or tool.name == LLM_TOOL


@dataclass(frozen=True)
class _Slots:
    """The DBOS step ids reserved for one call (a step, or one item of a for_each step)."""

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


CallKey = tuple[str, int | None]
"""A call of the walk: step id and item (None outside a for_each step)."""


def _reserve(analysis: Analysis) -> dict[CallKey, _Slots]:
    """A block of step ids for every call the plan may make, in plan order."""
    slots: dict[CallKey, _Slots] = {}
    for step in analysis.plan.steps:
        compiled = analysis.steps[step.id]
        items: list[int | None] = (
            list(range(compiled.max_items or 0)) if compiled.for_each is not None else [None]
        )
        for item in items:
            slots[step.id, item] = _Slots.reserve()
    return slots


def answer_workflow_id(approval_id: str) -> str:
    """The id of the workflow that carries a person's answer to a request."""
    return f"{approval_id}.answer"


MAX_RECOVERIES = 100_000
"""How often DBOS may recover one run before it gives up on it (its default is 100). A worker
that crashes over and over (a crash loop, a supervisor restarting it) must not dead-letter the
runs it holds: what guards the side effects is planlock's own rule (an interrupted
non-idempotent call waits for a person's ``resume``, at most ``MAX_RESUMES`` times)."""


@DBOS.workflow(name=ANSWER_WORKFLOW, max_recovery_attempts=MAX_RECOVERIES)
async def answer_workflow(decision: dict[str, Any]) -> dict[str, Any]:
    """Publish a decision (``Approved``/``Denied`` as JSON) as this workflow's event; the run
    waiting for it reads it with ``DBOS.get_event`` (public API, with a timeout)."""
    await DBOS.set_event_async(ANSWER_KEY, decision)
    return decision


class DBOSEngine:
    """An ``Engine`` for one walk of a run inside its DBOS workflow. ``revision``: how many
    times the plan was revised before this walk (0: the approved plan)."""

    def __init__(
        self,
        context: WorkerContext,
        prepared: Prepared,
        record: OnceRecorder,
        request_expiry: timedelta | None = None,
        revision: int = 0,
    ) -> None:
        self.worker = context
        self.prepared = prepared
        self.recorder = record
        self.request_expiry = request_expiry
        self.revision = revision
        self.slots = _reserve(prepared.analysis)
        self._requests: dict[str, CallKey] = {}
        self.reads = read_tools(prepared.analysis)
        """Tools whose start the walk does not wait for (``deferrable``), as in process."""

    @property
    def run_id(self) -> str:
        return self.prepared.run_id

    def suffix(self, call: StepCall, sep: str) -> str:
        """What tells this call apart from others of the same step id: its item, its revision."""
        out = "" if call.item is None else f"{sep}{call.item}"
        return out + (f"@{self.revision}" if self.revision else "")

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        if self.revision and kind in _STEP_EVENTS:
            data = {**data, "revision": self.revision}
        if deferrable(kind, data, self.reads):
            self.recorder.defer(kind, data)
        else:
            await self.recorder.commit(kind, data)

    async def check_call(self, call: StepCall) -> ApprovalRequest | Denied | None:
        """The run-time policy check, with endorsements consulted as the queue engine does (see
        ``_checks``: a lookup is a DBOS step, so a replay decides as the first run did), and a
        request id that is the same on every replay."""
        key = (call.step.id, call.item)
        try:
            verdict = check_without_lookup(self.prepared, call)
        except NeedsLookup:
            slot = self.slots[key].endorsements
            found = await slot.run_async(_LOOKUP_OPTIONS, _lookup, self, call)
            verdict = replayed_check(self.prepared, found, self.recorder.record)(call)
        if isinstance(verdict, ApprovalRequest):
            rid = f"{self.run_id}.{call.step.id}{self.suffix(call, '.')}.call"
            self._requests[rid] = key
            return replace(verdict, id=rid)
        return verdict

    async def run_step(self, call: StepCall) -> StepOutcome:
        slots = self.slots[call.step.id, call.item]
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
        """Store the call request (``walk`` journaled it), notify, and wait for the answer."""
        await self.store(request, "call", request.to_json())
        # A loop's one request (``batch_request``) waits in its first call's slot.
        key = (
            self._requests.get(request.id) or self._requests[request.id.removesuffix(BATCH_SUFFIX)]
        )
        return await self._await_answer(request, self.slots[key].approval)

    async def store(self, request: ApprovalRequest, kind: str, stored: dict[str, Any]) -> None:
        """Store a request for a person (once: its id is fixed) and notify about it the first
        time (a crash between the two loses the notification, not the request)."""
        if self.worker.state.add_approval(
            request.id,
            self.run_id,
            kind,
            request.plan_hash,
            stored,
            step_id=request.step_id,
            args_hash=request.args_hash,
            expires_at=self._expires_at(),
        ) and (notifier := self.worker.notifier):
            journal = self.worker.journal
            await anyio.to_thread.run_sync(notify_request, notifier, journal, self.run_id, stored)

    async def _ask_resume(self, call: StepCall, round_no: int) -> Decision:
        sid = call.step.id
        request_id = f"{self.run_id}.{sid}{self.suffix(call, '.')}.resume{round_no}"
        request, stored = resume_request(self.prepared, call, round_no, request_id)
        await self.store(request, "resume", stored)
        await self.record(
            "approval_requested",
            {
                "kind": "resume",
                "id": request.id,
                "plan_hash": request.plan_hash,
                "step": sid,
                "item": call.item,
                "args_hash": call.args_hash,
                "round": round_no,
                "reasons": stored["reasons"],
            },
        )
        slot = self.slots[sid, call.item].resumes[round_no]
        decision = await self._await_answer(request, slot)
        problem = binding_problem(decision, request)
        if problem is not None:
            await self.record("approval_refused", {**decision.to_json(), "problem": problem})
            return request.deny("policy", "dbos", problem)
        return decision

    async def _await_answer(self, request: ApprovalRequest, slot: StepReservation) -> Decision:
        """Wait for the answer in a DBOS step at the request's reserved id: its outcome is
        recorded, so a replay takes the same answer (or the same expiry)."""
        state = self.worker.state
        state.set_status(self.run_id, "waiting_approval")
        out = await slot.run_async(_WAIT_OPTIONS, wait_for_answer, self, request)
        state.set_status(self.run_id, "running")
        return await self.take_answer(request, out)

    async def take_answer(self, request: ApprovalRequest, out: dict[str, Any]) -> Decision:
        """The decision ``wait_for_answer`` returned; an approval is marked used (journaled)."""
        if out.get("expired"):
            return request.deny("policy", "dbos", "the request expired")
        decision = decision_from_json(out)
        if decision.approved:
            self.worker.state.mark_used(request.id)
            await self.record("approval_used", {"id": request.id, "step": request.step_id})
        return decision

    @property
    def expiry(self) -> timedelta:
        """How long this run's requests wait: the run's ``expires_in``, else the worker's."""
        return self.request_expiry or self.worker.expiry

    def _expires_at(self) -> str:
        # The wait's deadline (``wait_for_answer`` reads it back from the stored request, so a
        # recovered run waits only for what is left of it).
        return iso_ms(datetime.now(UTC) + self.expiry)


async def wait_for_answer(engine: DBOSEngine, request: ApprovalRequest) -> dict[str, Any]:
    """Wait for a person (run inside a DBOS step): ``DBOS.get_event`` on the request's answer
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
    context = engine.worker
    if not repeatable(call.step.tool) and not context.state.mark_started(
        call.run_id, call.step.id, round_no, engine.suffix(call, ":")
    ):
        return {"ok": False, "uncertain": True}
    steps = InProcessEngine(
        llm=context.llm,
        retries=context.retries,
        default_timeout=context.step_timeout,
        record=engine.record,
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
