"""Working: a worker claims a run (an approved one, or one a dead worker left: its own after a
restart, or any whose lease expired), holds it with a lease it renews while it runs, uses the
plan grant (single use, checked against the journal) and executes the run, replaying what was
recorded (``_replay``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio

from planlock import telemetry
from planlock.agent import Prepared, call_checker, prepare
from planlock.approval import Approved, admit_grant, refuse_grant
from planlock.core import Plan, iso_ms
from planlock.db import Database
from planlock.errors import ApprovalDenied, ApprovalMismatch, PlanInvalid
from planlock.execution import InProcessEngine, RunResult, walk
from planlock.journal import Event
from planlock.llm import LLM
from planlock.policy import Policy, assess
from planlock.queue._replay import (
    HELD,
    Fence,
    Lease,
    OnceRecorder,
    RunCalls,
    completed_steps,
    renew_lease,
)
from planlock.queue._store import DEFAULT_EXPIRY, QueueStore
from planlock.tools import ToolRegistry
from planlock.validation import analyse

_log = logging.getLogger("planlock.queue")

__all__ = ["GRANT_JOURNAL_WAIT", "Claim", "QueueWorker"]

GRANT_JOURNAL_WAIT = 10.0
"""Seconds a worker waits for a plan grant it took from the queue to appear in the journal."""

_ACTIVE = HELD


@dataclass(frozen=True)
class Claim:
    """A run a worker took."""

    run_id: str
    recovered_from: str | None = None
    """The worker that held it before (a recovery), or None for a fresh run."""
    recovered: bool = False
    claimed_at: str = ""
    """When this claim was taken: with the worker id, what fences its events (``Fence``)."""


class QueueWorker(QueueStore):
    """The queue's workers: claim runs, hold their leases and execute them."""

    def claim(self, worker_id: str, lease: Lease | None = None) -> str | None:
        """Take a run (one whose lease expired, else the oldest approved one) and hold it with a
        lease; exactly one worker gets each. Returns its id."""
        taken = self.take(worker_id, lease)
        return None if taken is None else taken.run_id

    def take(
        self, worker_id: str, lease: Lease | None = None, *, own: bool = False
    ) -> Claim | None:
        """``claim``; with ``own``, first a run this worker id held before (the worker restarted:
        a worker id executes one run at a time, so any run it holds is left from before).
        Exactly one worker gets each run, also when the connection is lost during the claim's
        COMMIT: the row's ``claimed_by``/``claimed_at`` say whether it is ours."""
        held = lease or Lease()
        now = iso_ms()
        marks = ", ".join("?" for _ in _ACTIVE)

        def take(db: Database) -> Claim | None:
            row = db.execute(
                "SELECT run_id, claimed_by FROM runs "  # noqa: S608 (constants)
                f"WHERE status IN ({marks}) AND (claimed_by = ? OR lease_expires_at IS NULL "
                "OR lease_expires_at < ?) "
                "ORDER BY CASE WHEN claimed_by = ? THEN 0 ELSE 1 END, submitted_at, run_id "
                "LIMIT 1" + db.skip_locked,
                (*_ACTIVE, worker_id if own else None, now, worker_id),
            ).fetchone()
            recovered = row is not None
            if row is None:
                row = db.execute(
                    "SELECT run_id, NULL FROM runs WHERE status = 'approved' "  # noqa: S608  (a fixed lock clause)
                    "ORDER BY submitted_at, run_id LIMIT 1" + db.skip_locked
                ).fetchone()
            if row is None:
                return None
            claim = Claim(str(row[0]), row[1], recovered, now)
            db.execute(
                "UPDATE runs SET status = 'running', claimed_by = ?, claimed_at = ?, "
                "lease_expires_at = ? WHERE run_id = ?",
                (worker_id, now, held.expiry(), claim.run_id),
            )
            return claim

        def committed(claim: Claim | None) -> bool:
            if claim is None:
                return True
            row = self._db.execute(
                "SELECT claimed_by, claimed_at FROM runs WHERE run_id = ?", (claim.run_id,)
            ).fetchone()
            return row is not None and tuple(row) == (worker_id, now)

        claim = self._transact(take, committed)
        if claim is None:
            return None
        data: dict[str, Any] = {"worker": worker_id}
        if claim.recovered:
            data["recovered_from"] = claim.recovered_from
            data["reason"] = "restart" if claim.recovered_from == worker_id else "lease expired"
        self.journal.record(claim.run_id, "run_claimed", data)
        return claim

    async def _use_plan_grant(
        self, run_id: str, record: OnceRecorder, recovering: bool
    ) -> Approved:
        """Consume the run's plan grant (single use) and check it against the journal. A run
        recovered after the grant was used keeps that use."""
        try:
            return await self._take_plan_grant(run_id, record, recovering)
        except ApprovalMismatch as exc:
            refuse_grant(record.record, str(exc))

    async def _granted(self, run_id: str, approval_id: str) -> list[Event]:
        """The journal's ``approval_granted`` events for the grant. The person's answer is
        committed to the queue's tables first and journaled just after, so a worker that claims
        the run in between waits for the journal to catch up (``GRANT_JOURNAL_WAIT``, then the
        grant is refused as not matching the journal)."""
        deadline = time.monotonic() + GRANT_JOURNAL_WAIT
        pause = 0.02
        while True:
            journaled = [
                e
                for e in self.journal.events(run_id)
                if e.kind == "approval_granted" and e.data.get("id") == approval_id
            ]
            if journaled or time.monotonic() >= deadline:
                return journaled
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _take_plan_grant(
        self, run_id: str, record: OnceRecorder, recovering: bool
    ) -> Approved:
        statuses = "('approved', 'used')" if recovering else "('approved')"
        used_at = iso_ms()

        def take(db: Database) -> tuple[Any, ...]:
            row = db.execute(
                "SELECT id, plan_hash, decided_by, decided_via, decided_at, reason, expires_at, "  # noqa: S608
                f"status FROM approvals WHERE run_id = ? AND kind = 'plan' AND status IN {statuses}"
                + db.lock,
                (run_id,),
            ).fetchone()
            if row is None:
                raise ApprovalMismatch(f"run {run_id} has no unused plan grant")
            approval_id, expires_at, status = row[0], row[6], row[7]
            if status == "approved":
                if expires_at and expires_at < used_at:
                    db.execute(
                        "UPDATE approvals SET status = 'expired' WHERE id = ?", (approval_id,)
                    )
                    raise ApprovalMismatch(f"grant {approval_id} expired at {expires_at}")
                db.execute(
                    "UPDATE approvals SET status = 'used', used_at = ? WHERE id = ?",
                    (used_at, approval_id),
                )
            return tuple(row)

        def committed(row: tuple[Any, ...]) -> bool:
            if row[7] != "approved":
                return True  # a recovered run's grant, used before: nothing was written
            sql = "SELECT used_at FROM approvals WHERE id = ?"
            return bool(self._value(sql, (row[0],)) == used_at)

        approval_id, plan_hash, by, via, at, reason, _, _ = self._transact(take, committed)
        journaled = await self._granted(run_id, approval_id)
        if not journaled or journaled[-1].data.get("plan_hash") != plan_hash:
            raise ApprovalMismatch(f"grant {approval_id} does not match the journal")
        record.record("approval_used", {"id": approval_id, "plan_hash": plan_hash})
        return Approved(plan_hash, by, via, reason or "", at)

    async def work_one(
        self,
        registry: ToolRegistry,
        worker_id: str,
        *,
        llm: LLM | None = None,
        poll: float = 0.5,
        concurrency: int = 16,
        lease: Lease | None = None,
    ) -> RunResult | str | None:
        """Claim and execute one run. Returns its result, a status string when it could not run
        (``refused``, ``rejected``, or ``lost`` when its lease went to another worker), or None
        when nothing was waiting."""
        lease = lease or Lease()
        claim = self.take(worker_id, lease, own=True)
        if claim is None:
            return None
        outcome: RunResult | str = "lost"
        error: Exception | None = None
        with anyio.CancelScope() as scope:
            fence = Fence(
                self._db, self.journal, claim.run_id, (worker_id, claim.claimed_at), scope.cancel
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, claim.run_id, worker_id, lease, fence)
                try:
                    with telemetry.workflow(claim.run_id):  # the run's span, in this worker
                        outcome = await self._execute(
                            claim, registry, worker_id, llm, poll, concurrency, lease, fence
                        )
                except Exception as exc:  # raised below, not wrapped in the task group's
                    error = exc
                tg.cancel_scope.cancel()
        if fence.lost:
            _log.warning("run %s: its lease went to another worker", claim.run_id)
            return "lost"  # the run's events after that are the other worker's to write
        if error is not None:
            raise error
        if isinstance(outcome, str):
            if outcome != "lost":
                self._finish(claim.run_id, worker_id, outcome)
            return outcome
        self._finish(claim.run_id, worker_id, outcome.status)
        return outcome

    async def _heartbeat(self, run_id: str, worker_id: str, lease: Lease, fence: Fence) -> None:
        while True:
            await anyio.sleep(lease.renew.total_seconds())
            held = self._transact(
                lambda db: renew_lease(db, run_id, worker_id, lease),
                lambda _: False,  # renewing is idempotent: on a lost COMMIT, renew again
            )
            if not held:
                fence.lost_lease()  # another worker holds the run now: stop calling anything
                return

    async def _execute(
        self,
        claim: Claim,
        registry: ToolRegistry,
        worker_id: str,
        llm: LLM | None,
        poll: float,
        concurrency: int,
        lease: Lease,
        fence: Fence,
    ) -> RunResult | str:
        run_id = claim.run_id
        row = self._db.execute(
            "SELECT plan, inputs, policy FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        plan = Plan.parse(row[0])
        policy = Policy.model_validate_json(row[2])
        inputs = json.loads(row[1])
        record = OnceRecorder(self.journal, run_id, fence.write)
        try:
            if claim.recovered:
                prepared = self._reprepare(plan, registry, inputs, policy, run_id, record)
            else:
                prepared = await prepare(
                    plan,
                    registry,
                    self.journal,
                    inputs=inputs,
                    policy=policy,
                    run_id=run_id,
                    announce=False,
                )
                record = OnceRecorder(self.journal, run_id, fence.write)
            grant = await self._use_plan_grant(run_id, record, claim.recovered)
            admit_grant(record.record, grant, prepared.plan_request())
        except PlanInvalid:
            return "rejected"  # the issues were journaled
        except (ApprovalDenied, ApprovalMismatch):
            return "refused"  # journaled where it was decided
        calls = RunCalls(
            self._db,
            prepared,
            record,
            InProcessEngine(llm=llm, record=record).run_step,
            worker_id=worker_id,
            lease=lease,
            poll=poll,
            expiry=DEFAULT_EXPIRY,
            on_lost=fence.lost_lease,
            expire=self._expire,
            notify=lambda request: self._notify(run_id, request),
            checker=call_checker(prepared, self.endorsements, record.record),
        )
        analysis = prepared.analysis
        result = await walk(
            analysis,
            prepared.inputs,
            run_id=run_id,
            run_step=calls.run_step,
            wait_for_approval=calls.wait_for_approval,
            record=record,
            check_call=calls.check_call,
            concurrency=concurrency,
            trusted_steps=frozenset(s for s, c in analysis.steps.items() if c.tool.trusted_output),
            completed=completed_steps(self.journal, run_id),
        )
        record.record(
            "run_finished",
            {
                "status": result.status,
                "failed_step": result.failed_step,
                "error_kind": result.error_kind,
                "steps": result.statuses,
                "replans": 0,
            },
        )
        return result

    def _reprepare(
        self,
        plan: Plan,
        registry: ToolRegistry,
        inputs: dict[str, Any],
        policy: Policy,
        run_id: str,
        record: OnceRecorder,
    ) -> Prepared:
        """A recovered run's plan, validated again (quietly: the first claim journaled it)."""
        analysis = analyse(plan, registry, inputs=inputs)
        if analysis.issues:
            issues = [i.to_json() for i in analysis.issues]
            record.record("plan_rejected", {"hash": plan.hash, "issues": issues, "by": "worker"})
            record.record("run_finished", {"status": "rejected"})
            raise PlanInvalid(analysis.issues)
        return Prepared(run_id, analysis, assess(analysis, policy=policy), policy, inputs)

    def _finish(self, run_id: str, worker_id: str, status: str) -> None:
        def finish(db: Database) -> None:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, lease_expires_at = NULL "
                "WHERE run_id = ? AND claimed_by = ?",
                (status, iso_ms(), run_id, worker_id),
            )

        def committed(_: None) -> bool:
            row = self._db.execute(
                "SELECT status, claimed_by FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return row is None or row[1] != worker_id or row[0] == status

        self._transact(finish, committed)

    async def work(
        self,
        registry: ToolRegistry,
        worker_id: str,
        *,
        llm: LLM | None = None,
        poll: float = 0.5,
        once: bool = False,
        idle_exit: float | None = None,
        lease: Lease | None = None,
    ) -> int:
        """Execute runs until stopped; ``once`` drains what is claimable now and returns.
        ``idle_exit`` returns after that many seconds with nothing to do. Returns runs executed."""
        done = 0
        idle_since = time.monotonic()
        while True:
            outcome = await self.work_one(registry, worker_id, llm=llm, poll=poll, lease=lease)
            if outcome is not None:
                done += 1
                idle_since = time.monotonic()
                continue
            if once or (idle_exit is not None and time.monotonic() - idle_since >= idle_exit):
                return done
            await anyio.sleep(poll)
