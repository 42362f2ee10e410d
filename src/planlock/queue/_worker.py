"""Working: a worker claims an approved run, uses its plan grant (single use, checked against
the journal) and executes it, storing each call that needs a person and polling for the answer.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import anyio

from planlock.agent import Prepared, execute, noter, prepare
from planlock.approval import ApprovalRequest, Approved, Decision, Denied, now_iso, refuse_grant
from planlock.core import Plan
from planlock.db import Database
from planlock.errors import ApprovalDenied, ApprovalMismatch, PlanInvalid
from planlock.execution import RunResult
from planlock.journal import Event
from planlock.llm import LLM
from planlock.policy import Policy
from planlock.queue._store import DEFAULT_EXPIRY, QueueStore, iso
from planlock.tools import ToolRegistry

__all__ = ["GRANT_JOURNAL_WAIT", "QueueWorker"]

GRANT_JOURNAL_WAIT = 10.0
"""Seconds a worker waits for a plan grant it took from the queue to appear in the journal."""


class QueueWorker(QueueStore):
    """The queue's workers: claim approved runs and execute them."""

    def claim(self, worker_id: str) -> str | None:
        """Take the oldest approved run; exactly one worker gets each run (also when the
        connection is lost during the claim's COMMIT: the row says whether it is ours)."""
        at = now_iso()

        def take(db: Database) -> str | None:
            row = db.execute(
                "SELECT run_id FROM runs WHERE status = 'approved' "  # noqa: S608  (a fixed lock clause)
                "ORDER BY submitted_at, run_id LIMIT 1" + db.skip_locked
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', claimed_by = ?, claimed_at = ? "
                "WHERE run_id = ?",
                (worker_id, at, row[0]),
            )
            return str(row[0])

        def committed(run_id: str | None) -> bool:
            row = self._db.execute(
                "SELECT claimed_by, claimed_at FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return run_id is None or (row is not None and tuple(row) == (worker_id, at))

        run_id = self._transact(take, committed)
        if run_id is not None:
            self.journal.record(run_id, "run_claimed", {"worker": worker_id})
        return run_id

    async def _use_plan_grant(self, run_id: str) -> Approved:
        """Consume the run's plan grant (single use) and check it against the journal."""
        try:
            return await self._take_plan_grant(run_id)
        except ApprovalMismatch as exc:
            refuse_grant(noter(self.journal, run_id), str(exc))

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

    async def _take_plan_grant(self, run_id: str) -> Approved:
        used_at = now_iso()

        def take(db: Database) -> tuple[Any, ...]:
            row = db.execute(
                "SELECT id, plan_hash, decided_by, decided_via, decided_at, reason, expires_at "
                "FROM approvals WHERE run_id = ? AND kind = 'plan' AND status = 'approved'"
                + db.lock,
                (run_id,),
            ).fetchone()
            if row is None:
                raise ApprovalMismatch(f"run {run_id} has no unused plan grant")
            approval_id, expires_at = row[0], row[6]
            if expires_at and expires_at < used_at:
                db.execute("UPDATE approvals SET status = 'expired' WHERE id = ?", (approval_id,))
                raise ApprovalMismatch(f"grant {approval_id} expired at {expires_at}")
            db.execute(
                "UPDATE approvals SET status = 'used', used_at = ? WHERE id = ?",
                (used_at, approval_id),
            )
            return tuple(row)

        def committed(row: tuple[Any, ...]) -> bool:
            sql = "SELECT used_at FROM approvals WHERE id = ?"
            return bool(self._value(sql, (row[0],)) == used_at)

        approval_id, plan_hash, by, via, at, reason, _ = self._transact(take, committed)
        journaled = await self._granted(run_id, approval_id)
        if not journaled or journaled[-1].data.get("plan_hash") != plan_hash:
            raise ApprovalMismatch(f"grant {approval_id} does not match the journal")
        self.journal.record(run_id, "approval_used", {"id": approval_id, "plan_hash": plan_hash})
        return Approved(plan_hash, by, via, reason or "", at)

    async def work_one(
        self,
        registry: ToolRegistry,
        worker_id: str,
        *,
        llm: LLM | None = None,
        poll: float = 0.5,
        concurrency: int = 16,
    ) -> RunResult | str | None:
        """Claim and execute one approved run. Returns its result, a status string when it
        could not run (``refused``, ``rejected``), or None when nothing was waiting."""
        run_id = self.claim(worker_id)
        if run_id is None:
            return None
        row = self._db.execute(
            "SELECT plan, inputs, policy FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        try:
            plan = Plan.parse(row[0])
            policy = Policy.model_validate_json(row[2])
            prepared = await prepare(
                plan,
                registry,
                self.journal,
                inputs=json.loads(row[1]),
                policy=policy,
                run_id=run_id,
                announce=False,
            )
            grant = await self._use_plan_grant(run_id)
            result = await execute(
                prepared,
                grant,
                self.journal,
                wait_for_approval=self._waiter(prepared, poll),
                llm=llm,
                concurrency=concurrency,
                endorsements=self.endorsements,
            )
        except PlanInvalid:
            self._finish(run_id, "rejected")  # prepare journaled the issues
            return "rejected"
        except (ApprovalDenied, ApprovalMismatch):
            self._finish(run_id, "refused")  # journaled where it was decided
            return "refused"
        self._finish(run_id, result.status)
        return result

    def _finish(self, run_id: str, status: str) -> None:
        def finish(db: Database) -> None:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                (status, now_iso(), run_id),
            )

        def committed(_: None) -> bool:
            return bool(
                self._value("SELECT status FROM runs WHERE run_id = ?", (run_id,)) == status
            )

        self._transact(finish, committed)

    def _waiter(self, prepared: Prepared, poll: float) -> Any:
        """Store a call request, notify, and wait (polling) for a person's answer."""

        async def wait(request: ApprovalRequest) -> Decision:
            now = datetime.now(UTC)

            def store(db: Database) -> None:
                db.execute(
                    "INSERT INTO approvals (id, run_id, kind, plan_hash, step_id, args_hash, "
                    "request, status, created_at, expires_at) "
                    "VALUES (?, ?, 'call', ?, ?, ?, ?, 'pending', ?, ?)",
                    (
                        request.id,
                        prepared.run_id,
                        request.plan_hash,
                        request.step_id,
                        request.args_hash,
                        json.dumps(request.to_json()),
                        iso(now),
                        iso(now + DEFAULT_EXPIRY),
                    ),
                )
                db.execute(
                    "UPDATE runs SET status = 'waiting_approval' WHERE run_id = ?",
                    (prepared.run_id,),
                )

            def stored(_: None) -> bool:
                return bool(self._value("SELECT 1 FROM approvals WHERE id = ?", (request.id,)) == 1)

            self._transact(store, stored)
            await self._notify(prepared.run_id, request.to_json())
            while True:
                self._expire()
                row = self._db.execute(
                    "SELECT status, decided_by, decided_via, decided_at, reason "
                    "FROM approvals WHERE id = ?",
                    (request.id,),
                ).fetchone()
                status = row[0]
                if status == "approved":
                    if not self._use_call_grant(request.id, prepared.run_id):
                        return request.deny("policy", "queue", "the grant was already used")
                    self.journal.record(prepared.run_id, "approval_used", {"id": request.id})
                    return Approved(
                        request.plan_hash,
                        row[1],
                        row[2],
                        row[4] or "",
                        row[3],
                        request.step_id,
                        request.args_hash,
                    )
                if status in ("denied", "expired"):
                    reason = row[4] if status == "denied" else "the request expired"
                    return Denied(
                        request.plan_hash,
                        row[1] or "policy",
                        row[2] or "queue",
                        reason,
                        row[3] or now_iso(),
                        request.step_id,
                        request.args_hash,
                    )
                await anyio.sleep(poll)

        return wait

    def _use_call_grant(self, approval_id: str, run_id: str) -> bool:
        """Mark a call's grant used (once: False if it was used already); the run goes on."""
        used_at = now_iso()

        def use(db: Database) -> int:
            cur = db.execute(
                "UPDATE approvals SET status = 'used', used_at = ? "
                "WHERE id = ? AND status = 'approved'",
                (used_at, approval_id),
            )
            db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (run_id,))
            return cur.rowcount

        def used(count: int) -> bool:
            sql = "SELECT used_at FROM approvals WHERE id = ?"
            return count != 1 or bool(self._value(sql, (approval_id,)) == used_at)

        return self._transact(use, used) == 1

    async def work(
        self,
        registry: ToolRegistry,
        worker_id: str,
        *,
        llm: LLM | None = None,
        poll: float = 0.5,
        once: bool = False,
        idle_exit: float | None = None,
    ) -> int:
        """Execute approved runs until stopped; ``once`` drains what is approved now and returns.
        ``idle_exit`` returns after that many seconds with nothing to do. Returns runs executed."""
        done = 0
        idle_since = time.monotonic()
        while True:
            outcome = await self.work_one(registry, worker_id, llm=llm, poll=poll)
            if outcome is not None:
                done += 1
                idle_since = time.monotonic()
                continue
            if once or (idle_exit is not None and time.monotonic() - idle_since >= idle_exit):
                return done
            await anyio.sleep(poll)
