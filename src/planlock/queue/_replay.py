"""Executing a claimed run so that a worker's crash loses and repeats nothing (R11).

A queue worker executes every run, a fresh one or one it recovers from a dead worker, the same
way: it walks the approved plan again and replays it from what was recorded.

- **Completed steps** come from the journal (``step_finished``: output and provenance) and are
  not run again.
- **Every tool call** has a row in ``queue_calls`` (run, step, item, round), committed before
  the tool is called, in the same transaction that checks (and renews) the worker's lease: a
  worker that lost its lease calls nothing more. The call's outcome is stored in the row when it
  returns; a replay takes a stored outcome instead of calling again.
- **A call that started with no stored outcome** is run again if its tool is *repeatable*
  (declared ``idempotent``, a ``read``, or a quarantined ``llm`` step). Otherwise the run asks a
  person: an approval request of kind ``resume`` (the durable engine's rule and wording);
  approve runs the call again, deny marks the step failed (``error_kind: interrupted``). At most
  ``MAX_RESUMES`` resumes per call.
- **Approval requests** made while a run executes have ids fixed by the run, step and item, so
  a replay waits for the same request (or takes its answer) instead of asking again.
- **Events** are written through ``OnceRecorder``: an event the run already has (the same step
  event, the same request id) is not written again, so the journal has each once.
- **Every event is fenced** (``Fence``): it is inserted in a transaction that first locks the
  run's row and checks that this claim (worker id and claim time) still holds it. A worker that
  lost its lease while it was still alive (slow, not dead) cannot journal a step's outcome after
  the worker that recovered the run read the journal, so each step event stays once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import anyio

from planlock.agent import Prepared, resume_request
from planlock.approval import ApprovalRequest, Approved, Decision, Denied, binding_problem
from planlock.core import canonical_json, iso_ms, sha256_hex
from planlock.db import Database, transact
from planlock.errors import UsageError
from planlock.execution import StepCall, StepOutcome
from planlock.journal import Event, Journal, insert_event
from planlock.tools import LLM_TOOL, Tool

__all__ = [
    "HELD",
    "MAX_RESUMES",
    "Fence",
    "Lease",
    "LeaseLost",
    "OnceRecorder",
    "RunCalls",
    "completed_steps",
    "event_key",
    "renew_lease",
    "repeatable",
]

MAX_RESUMES = 3
"""How many times a person may let an interrupted, non-repeatable call run again."""
HELD = ("running", "waiting_approval", "waiting_resume")
"""The statuses of a run that a worker holds (and that a dead worker strands)."""
_ACTIVE = "(" + ", ".join(f"'{s}'" for s in HELD) + ")"


@dataclass(frozen=True)
class Lease:
    """How long a claimed run stays a worker's without a heartbeat, and how often the worker
    renews it. A run whose lease expired can be recovered by any worker."""

    duration: timedelta = timedelta(seconds=30)
    renew: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        if not timedelta(0) < self.renew < self.duration:
            msg = (
                f"the lease renewal ({self.renew}) must be shorter than the lease ({self.duration})"
            )
            raise UsageError(msg)

    def expiry(self) -> str:
        """When a lease taken or renewed now expires."""
        return iso_ms(datetime.now(UTC) + self.duration)


def renew_lease(db: Database, run_id: str, worker_id: str, lease: Lease) -> bool:
    """Extend ``worker_id``'s lease on a run it holds; False when the run is not its own any
    more (another worker recovered it, or it finished)."""
    cur = db.execute(
        "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND claimed_by = ? "  # noqa: S608 (a constant)
        f"AND status IN {_ACTIVE}",
        (lease.expiry(), run_id, worker_id),
    )
    return cur.rowcount == 1


def repeatable(tool: Tool) -> bool:
    """Whether running the tool again after a crash is harmless: declared idempotent, a read,
    or the quarantined LLM step (no effects). The durable engine's rule."""
    return tool.idempotent or tool.effect == "read" or tool.name == LLM_TOOL


def event_key(kind: str, data: dict[str, Any]) -> str:
    """What makes an event the same event when a run is replayed."""
    step = data.get("step")
    if kind == "step_started":
        return f"{kind}|{step}|{data.get('item')}"
    if kind == "step_retrying":
        return f"{kind}|{step}|{data.get('item')}|{data.get('attempt')}"
    if kind in ("step_finished", "step_failed", "step_skipped"):
        return f"{kind}|{step}"
    if kind.startswith("approval_") and data.get("id"):
        return f"{kind}|{data.get('id')}"
    if kind == "run_finished":
        return kind
    return f"{kind}|{sha256_hex(canonical_json(data))}"


class Fence:
    """A claim's hold on its run, checked in the transaction of every event it journals.

    ``write(kind, data)`` locks the run's row, checks that it is still claimed by this worker
    at this claim's time, and inserts the event in the same transaction. When another claim
    holds the run, nothing is written: ``lost`` turns True and ``on_lost`` is called (it cancels
    the execution). On PostgreSQL the row lock orders the write against a recovering worker's
    claim (which skips a locked row); on SQLite every write transaction is serialized."""

    def __init__(
        self,
        db: Database,
        journal: Journal,
        run_id: str,
        claim: tuple[str, str],
        on_lost: Callable[[], None],
    ) -> None:
        self._db = db
        self._journal = journal
        self._run_id = run_id
        self._claim = claim
        self._on_lost = on_lost
        self.lost = False

    def write(self, kind: str, data: dict[str, Any]) -> None:
        if self.lost:
            return
        sql = "SELECT claimed_by, claimed_at FROM runs WHERE run_id = ?" + self._db.lock  # noqa: S608 (a fixed lock clause)

        def body(db: Database) -> Event | None:
            row = db.execute(sql, (self._run_id,)).fetchone()
            if row is None or tuple(row) != self._claim:
                return None
            return insert_event(db, self._run_id, kind, data)

        def committed(event: Event | None) -> bool:
            if event is None:
                return True
            row = self._db.execute("SELECT hash FROM events WHERE seq = ?", (event.seq,))
            found = row.fetchone()
            return found is not None and found[0] == event.hash

        event = transact(self._db, body, committed=committed)
        if event is None:
            self.lost_lease()
            return
        self._journal.recorded(event)

    def lost_lease(self) -> None:
        """The run is another claim's now: write nothing more and stop the execution."""
        self.lost = True
        self._on_lost()


class OnceRecorder:
    """Journals a run's events, skipping any the run already has (see ``event_key``); through
    ``write`` when given (a ``Fence``'s), else straight to the journal."""

    def __init__(
        self,
        journal: Journal,
        run_id: str,
        write: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self._write = write
        self._seen = {event_key(e.kind, e.data) for e in journal.events(run_id)}
        self._lock = threading.Lock()

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.record(kind, data)

    def record(self, kind: str, data: dict[str, Any]) -> None:
        key = event_key(kind, data)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        if self._write is not None:
            self._write(kind, data)
        else:
            self.journal.record(self.run_id, kind, data)


def completed_steps(journal: Journal, run_id: str) -> dict[str, tuple[Any, frozenset[str]]]:
    """The steps the journal says finished: their outputs and source labels."""
    return {
        str(e.data["step"]): (e.data.get("output"), frozenset(e.data.get("provenance") or ()))
        for e in journal.events(run_id)
        if e.kind == "step_finished"
    }


def _outcome_json(outcome: StepOutcome) -> str:
    return json.dumps(
        {
            "ok": outcome.ok,
            "output": outcome.output,
            "error_kind": outcome.error_kind,
            "error_type": outcome.error_type,
            "error": outcome.error,
            "attempts": outcome.attempts,
        }
    )


def _outcome(text: str) -> StepOutcome:
    d = json.loads(text)
    return StepOutcome(
        bool(d["ok"]),
        output=d.get("output"),
        error_kind=d.get("error_kind"),
        error_type=d.get("error_type"),
        error=d.get("error"),
        attempts=int(d.get("attempts") or 1),
    )


class LeaseLost(Exception):
    """The run's lease went to another worker."""


class RunCalls:
    """One claimed run's calls, approvals and lease, for ``walk`` (see the module docstring).

    ``on_lost`` is called when the run's lease turns out to belong to another worker; it
    cancels the execution (nothing more is called)."""

    def __init__(
        self,
        db: Database,
        prepared: Prepared,
        record: OnceRecorder,
        run_tool: Callable[[StepCall], Any],
        *,
        worker_id: str,
        lease: Lease,
        poll: float,
        expiry: timedelta,
        on_lost: Callable[[], None],
        expire: Callable[[], None],
        notify: Callable[[dict[str, Any]], Any],
        checker: Callable[[StepCall], ApprovalRequest | Denied | None],
    ) -> None:
        self._db = db
        self.prepared = prepared
        self.run_id = prepared.run_id
        self.record = record
        self._run_tool = run_tool
        self.worker_id = worker_id
        self.lease = lease
        self.poll = poll
        self.expiry = expiry
        self._on_lost = on_lost
        self._expire = expire
        self._notify = notify
        self._checker = checker

    # -- the lease --------------------------------------------------------------------------

    def _renew(self, db: Database) -> bool:
        return renew_lease(db, self.run_id, self.worker_id, self.lease)

    async def _lost(self) -> NoReturn:
        self._on_lost()
        await anyio.sleep_forever()  # cancelled by on_lost
        raise AssertionError  # pragma: no cover

    def _again(self, sql: str, params: tuple[Any, ...]) -> None:
        """An idempotent statement in a transaction, run again if the connection is lost, also
        during its COMMIT (``planlock.db.transact``)."""
        transact(self._db, lambda db: db.execute(sql, params), committed=lambda _: False)

    def _set_status(self, status: str) -> None:
        self._again(
            "UPDATE runs SET status = ? WHERE run_id = ? AND claimed_by = ? "  # noqa: S608
            f"AND status IN {_ACTIVE}",
            (status, self.run_id, self.worker_id),
        )

    # -- calls ------------------------------------------------------------------------------

    def check_call(self, call: StepCall) -> ApprovalRequest | Denied | None:
        """The run-time policy check, with a request id that is the same on every replay."""
        verdict = self._checker(call)
        if isinstance(verdict, ApprovalRequest):
            return replace(verdict, id=f"{self._base(call, '.')}.call")
        return verdict

    def _base(self, call: StepCall, sep: str) -> str:
        base = f"{self.run_id}{sep}{call.step.id}"
        return base if call.item is None else f"{base}{sep}{call.item}"

    async def run_step(self, call: StepCall) -> StepOutcome:
        """Call the tool at most once per round; take a stored outcome; ask a person about a
        call that started and has no outcome (unless its tool is repeatable)."""
        again = repeatable(call.step.tool)
        for round_no in range(MAX_RESUMES + 1):
            key = f"{self._base(call, ':')}:{round_no}"
            try:
                started, outcome = self._start(key, call, round_no)
            except LeaseLost:
                await self._lost()
            if outcome is not None:
                return outcome
            if started or again:
                out = await self._run_tool(call)
                assert isinstance(out, StepOutcome)
                self._again(
                    "UPDATE queue_calls SET outcome = ? WHERE key = ?", (_outcome_json(out), key)
                )
                return out
            decision = await self._ask_resume(call, round_no)
            if not decision.approved:
                why = f"interrupted; {decision.by} marked it failed: {decision.reason}"
                return StepOutcome(False, error_kind="interrupted", error=why)
        return StepOutcome(False, error_kind="interrupted", error="interrupted again; not retried")

    def _start(self, key: str, call: StepCall, round_no: int) -> tuple[bool, StepOutcome | None]:
        """Record the call as started (if it was not) while holding the lease. Returns (whether
        this attempt started it, its stored outcome if it has one); raises LeaseLost when the
        run is no longer this worker's. A COMMIT lost on the way is resolved by the row: this
        worker's, started at this attempt's time."""
        at = iso_ms()

        def start(db: Database) -> tuple[bool, StepOutcome | None]:
            if not self._renew(db):
                raise LeaseLost(self.run_id)
            row = db.execute("SELECT outcome FROM queue_calls WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return False, None if row[0] is None else _outcome(row[0])
            db.execute(
                "INSERT INTO queue_calls (key, run_id, step_id, item, round, worker, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, self.run_id, call.step.id, call.item, round_no, self.worker_id, at),
            )
            return True, None

        def committed(result: tuple[bool, StepOutcome | None]) -> bool:
            if not result[0]:
                return True  # nothing written but the lease's renewal
            row = self._db.execute(
                "SELECT worker, started_at FROM queue_calls WHERE key = ?", (key,)
            ).fetchone()
            return row is not None and tuple(row) == (self.worker_id, at)

        result: tuple[bool, StepOutcome | None] = transact(self._db, start, committed=committed)
        return result

    # -- approvals while the run executes ---------------------------------------------------

    async def wait_for_approval(self, request: ApprovalRequest) -> Decision:
        """Store the call request (``walk`` journaled it; once: its id is fixed), notify, and
        wait for the answer."""
        if self._store(request, "call", request.to_json()):
            await self._notify(request.to_json())
        return await self._await(request, "waiting_approval")

    async def _ask_resume(self, call: StepCall, round_no: int) -> Decision:
        sid = call.step.id
        request, stored = resume_request(
            self.prepared, call, round_no, f"{self._base(call, '.')}.resume{round_no}"
        )
        if self._store(request, "resume", stored):
            await self._notify(stored)
        self.record.record(
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
        decision = await self._await(request, "waiting_resume")
        problem = binding_problem(decision, request)
        if problem is not None:
            self.record.record("approval_refused", {**decision.to_json(), "problem": problem})
            return request.deny("policy", "queue", problem)
        return decision

    def _store(self, request: ApprovalRequest, kind: str, stored: dict[str, Any]) -> bool:
        """Store a run-time request once; True when this call stored it."""
        now = datetime.now(UTC)
        created = iso_ms(now)

        def store(db: Database) -> bool:
            cur = db.execute(
                "INSERT INTO approvals (id, run_id, kind, plan_hash, step_id, args_hash, "
                "request, status, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    request.id,
                    self.run_id,
                    kind,
                    request.plan_hash,
                    request.step_id,
                    request.args_hash,
                    json.dumps(stored),
                    created,
                    iso_ms(now + self.expiry),
                ),
            )
            return cur.rowcount == 1

        def committed(inserted: bool) -> bool:
            if not inserted:
                return True
            row = self._db.execute(
                "SELECT created_at FROM approvals WHERE id = ?", (request.id,)
            ).fetchone()
            return row is not None and row[0] == created

        return bool(transact(self._db, store, committed=committed))

    async def _await(self, request: ApprovalRequest, waiting: str) -> Decision:
        """Poll for the answer. An approval is used once: by this wait, or (on a replay) it was
        used by the same call of the same run before the crash."""
        self._set_status(waiting)
        while True:
            self._expire()
            row = self._db.execute(
                "SELECT status, decided_by, decided_via, decided_at, reason "
                "FROM approvals WHERE id = ?",
                (request.id,),
            ).fetchone()
            status, by, via, at, reason = row
            if status in ("approved", "used"):
                if status == "approved":
                    self._again(
                        "UPDATE approvals SET status = 'used', used_at = ? "
                        "WHERE id = ? AND status = 'approved'",
                        (iso_ms(), request.id),
                    )
                self.record.record("approval_used", {"id": request.id, "step": request.step_id})
                self._set_status("running")
                return Approved(
                    request.plan_hash, by, via, reason or "", at, request.step_id, request.args_hash
                )
            if status in ("denied", "expired"):
                self._set_status("running")
                return Denied(
                    request.plan_hash,
                    by or "policy",
                    via or "queue",
                    reason if status == "denied" else "the request expired",
                    at or iso_ms(),
                    request.step_id,
                    request.args_hash,
                )
            await anyio.sleep(self.poll)
