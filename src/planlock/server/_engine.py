"""What ``planlock serve`` needs from an engine, and the engine over the approval queue.

The HTTP layer only talks to an ``Engine``: submit, read approvals and runs, decide, and run
workers. ``QueueEngine`` implements it with ``ApprovalQueue``; a durable engine can implement
the same few methods and be passed to ``create_app`` unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.to_thread

from planlock.approval import Decision, EndorseAs, Endorsement, revoke_endorsement
from planlock.core import Plan
from planlock.errors import DatabaseUnavailable, UsageError
from planlock.journal import Journal, database_of
from planlock.llm import LLM
from planlock.policy import Policy
from planlock.queue import ApprovalQueue, Lease, Submitted
from planlock.tools import ToolRegistry

__all__ = ["Engine", "QueueEngine", "RunScope"]

_RUN_COLUMNS = (
    "run_id",
    "status",
    "plan_hash",
    "submitted_by",
    "submitted_at",
    "claimed_by",
    "lease_expires_at",
    "finished_at",
    "plan",
    "inputs",
)


POLICY_VIA = ("auto", "policy")
"""``decided_via`` of the policy's own answers (its grant, its denial): requests no person was
asked to decide."""


@dataclass(frozen=True)
class RunScope:
    """Which runs a caller may see: those ``submitted_by`` them, and with ``asked`` also every
    run that has asked a person for approval (what an approver may decide): a request pending,
    answered by a person or expired, not one the policy granted by itself."""

    submitted_by: str
    asked: bool = False

    def holds(self, run: dict[str, Any]) -> bool:
        """Whether ``run`` (as ``Engine.run`` returns it) is in this scope."""
        if run["submitted_by"] == self.submitted_by:
            return True
        return self.asked and any(a["decided_via"] not in POLICY_VIA for a in run["approvals"])


class Engine(Protocol):
    """The operations the HTTP service calls. Approvals and runs are plain JSON dicts.

    The service calls every method but ``work`` in a worker thread (``submit`` on an event
    loop of that thread's own), so they may block on the database; they must be safe to call
    from several threads at once. ``DatabaseUnavailable`` from any of them answers 503."""

    journal: Journal
    registry: ToolRegistry
    policy: Policy

    async def submit(self, plan: Plan, *, inputs: dict[str, Any], by: str) -> Submitted:
        """Validate, assess and queue (raises PlanInvalid / ApprovalDenied)."""
        ...

    def pending(self) -> list[dict[str, Any]]:
        """Approval requests waiting for a person, oldest first."""
        ...

    def approval(self, approval_id: str) -> dict[str, Any] | None:
        """One approval request with ``submitted_by`` and ``goal`` of its run, or None."""
        ...

    def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str,
        endorse: EndorseAs | None = None,
    ) -> Decision:
        """Answer a pending request (UsageError if it is not pending any more); with
        ``endorse``, approving a call also endorses its values (the grant carries them)."""
        ...

    def endorsements(self, include_revoked: bool) -> list[Endorsement]:
        """Endorsements, oldest first."""
        ...

    def revoke(self, endorsement_id: str, by: str) -> Endorsement:
        """Revoke an endorsement (UsageError if unknown or revoked already)."""
        ...

    def runs(self, limit: int, scope: RunScope | None = None) -> list[dict[str, Any]]:
        """The newest runs first (only those in ``scope``; None: every run)."""
        ...

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its plan, inputs and approval ids, or None."""
        ...

    async def work(self, workers: int) -> None:
        """Execute approved runs with ``workers`` concurrent workers until cancelled."""
        ...


class QueueEngine:
    """The ``ApprovalQueue`` beside the journal (SQLite or PostgreSQL), with in-process workers."""

    def __init__(
        self,
        journal: Journal,
        registry: ToolRegistry,
        *,
        policy: Policy | None = None,
        tools_spec: str = "",
        llm: LLM | None = None,
        poll: float = 0.2,
        lease: Lease | None = None,
        server_id: str | None = None,
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.policy = policy or Policy()
        self.tools_spec = tools_spec
        self.llm = llm
        self.poll = poll
        self.lease = lease or Lease()
        """The in-server workers' lease on a run (a dead server's runs are recovered by any
        worker once it expires)."""
        self.server_id = server_id or f"{socket.gethostname()}:{os.getpid()}"
        """Worker N of this server is ``SERVER_ID:http-N``. A server restarted with the same id
        takes its own workers' unfinished runs back at once (as ``planlock worker --id`` does);
        so no two live servers may share one (``planlock serve`` defaults to
        ``HOST:ADDRESS:PORT``, the address and port it holds). The default here, ``HOST:PID``,
        is unique but new at each start: a dead server's runs then wait for their leases."""
        self.queue = ApprovalQueue(journal)
        self._db = database_of(journal.store)
        """A second connection, for the reads the queue has no method for (runs)."""

    async def submit(self, plan: Plan, *, inputs: dict[str, Any], by: str) -> Submitted:
        return await self.queue.submit(
            plan,
            self.registry,
            inputs=inputs,
            policy=self.policy,
            tools_spec=self.tools_spec,
            by=by,
        )

    def pending(self) -> list[dict[str, Any]]:
        return [self._with_run(a) for a in self.queue.pending()]

    def approval(self, approval_id: str) -> dict[str, Any] | None:
        try:
            item = self.queue.get(approval_id)
        except UsageError:
            return None
        return self._with_run(item)

    def _with_run(self, item: dict[str, Any]) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT submitted_by FROM runs WHERE run_id = ?", (item["run_id"],)
        ).fetchone()
        goal = item["request"].get("plan", {}).get("goal") or ""
        return {**item, "submitted_by": row[0] if row else None, "goal": goal}

    def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str,
        endorse: EndorseAs | None = None,
    ) -> Decision:
        return self.queue.decide(
            approval_id, approve=approve, by=by, reason=reason, via="http", endorse=endorse
        )

    def endorsements(self, include_revoked: bool) -> list[Endorsement]:
        return self.queue.endorsements.list(include_revoked=include_revoked)

    def revoke(self, endorsement_id: str, by: str) -> Endorsement:
        return revoke_endorsement(
            self.queue.endorsements, endorsement_id, by=by, journal=self.journal
        )

    def runs(self, limit: int, scope: RunScope | None = None) -> list[dict[str, Any]]:
        where = ""
        params: tuple[Any, ...] = ()
        if scope is not None:
            asked = (
                "EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.run_id "
                "AND (a.decided_via IS NULL OR a.decided_via NOT IN (?, ?)))"
            )
            where = f"WHERE submitted_by = ? OR (? = 1 AND {asked}) "
            params = (scope.submitted_by, int(scope.asked), *POLICY_VIA)
        rows = self._db.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs {where}"  # noqa: S608 (constants)
            "ORDER BY submitted_at DESC, run_id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_run_row(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?",  # noqa: S608
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        out = _run_row(row)
        ids = self._db.execute(
            "SELECT id FROM approvals WHERE run_id = ? ORDER BY created_at, id", (run_id,)
        ).fetchall()
        out["approvals"] = [self._with_run(self.queue.get(i[0])) for i in ids]
        return out

    async def work(self, workers: int) -> None:
        """Each worker in a thread of its own, on an event loop of its own: a run's journal
        writes never hold up the service's loop. Cancelled: the workers stop (a run under way is
        cancelled where it stands, as before) and their threads end."""
        stop = threading.Event()
        limiter = anyio.CapacityLimiter(max(1, workers))
        async with anyio.create_task_group() as tg:
            for i in range(workers):
                job = partial(anyio.run, self._worker_thread, self.worker_id(i), stop)
                tg.start_soon(partial(anyio.to_thread.run_sync, job, limiter=limiter))
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()

    def worker_id(self, index: int) -> str:
        """The id of in-server worker ``index`` (0-based): stable for a given ``server_id``."""
        return f"{self.server_id}:http-{index}"

    async def _worker_thread(self, worker_id: str, stop: threading.Event) -> None:
        async with anyio.create_task_group() as tg:

            async def until_stopped() -> None:
                while not stop.is_set():  # noqa: ASYNC110  (a threading.Event, set from the service's loop)
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()

            tg.start_soon(until_stopped)
            tg.start_soon(self._worker, worker_id)

    async def _worker(self, worker_id: str) -> None:
        down = False
        while True:
            try:
                outcome = await self.queue.work_one(
                    self.registry, worker_id, llm=self.llm, poll=self.poll, lease=self.lease
                )
                down = False
            except DatabaseUnavailable as exc:  # keep serving: try again once it is back
                if not down:
                    sys.stderr.write(f"planlock serve: worker {worker_id}: {exc}\n")
                down, outcome = True, None
            except Exception as exc:  # keep serving; the journal holds what the run recorded
                sys.stderr.write(f"planlock serve: worker {worker_id}: {exc!r}\n")
                outcome = None
            if outcome is None:
                await anyio.sleep(self.poll)

    def close(self) -> None:
        self._db.close()
        self.queue.close()


def _run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_RUN_COLUMNS, row, strict=True))
    out["plan"] = json.loads(out["plan"])
    out["inputs"] = json.loads(out["inputs"])
    out["goal"] = out["plan"].get("goal") or "" if isinstance(out["plan"], dict) else ""
    return out
