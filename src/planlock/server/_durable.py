"""``planlock serve --engine dbos``: the HTTP service over the durable (DBOS) engine.

``DurableEngine`` implements the same ``Engine`` the queue engine does: submissions become
durable runs (``DurableClient``), approvals are the shared ``approvals`` table (answers are handed
to the waiting runs at once), and ``work`` runs a DBOS worker (``DurableWorker``) in the server
process. Runs are shown in the approval queue's terms: a run held by a worker whose liveness
lease ran out is ``stranded`` (``planlock durable adopt`` hands it to a live worker).
This module imports ``dbos``: the CLI loads it only for ``--engine dbos``.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio

from planlock.approval import Decision, EndorseAs, Endorsement, revoke_endorsement
from planlock.core import Plan
from planlock.durable import DurableClient, DurableWorker, WorkerContext
from planlock.errors import UsageError
from planlock.journal import Journal
from planlock.policy import Policy
from planlock.queue import ApprovalQueue, Submitted
from planlock.server._engine import RunScope
from planlock.tools import ToolRegistry

__all__ = ["DurableEngine"]

_FINAL = ("succeeded", "failed", "denied", "expired", "refused", "rejected")


class DurableEngine:
    """The durable engine behind ``planlock serve``: only durable runs and their requests."""

    def __init__(
        self,
        journal: Journal,
        registry: ToolRegistry,
        *,
        db_url: str,
        policy: Policy | None = None,
        context: WorkerContext | None = None,
        worker_id: str = "serve",
        worker_options: dict[str, Any] | None = None,
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.policy = policy or Policy()
        self.db_url = db_url
        self.client = DurableClient(journal, db_url)
        self.queue = ApprovalQueue(journal)
        self.state = self.client.state
        self.context = context or WorkerContext(registry, journal)
        self.worker_id = worker_id
        self.worker_options = worker_options or {}
        self._worker: DurableWorker | None = None

    async def submit(self, plan: Plan, *, inputs: dict[str, Any], by: str) -> Submitted:
        return await self.client.submit(
            plan, self.registry, inputs=inputs, policy=self.policy, by=by
        )

    def pending(self) -> list[dict[str, Any]]:
        self.state.expire()
        out = (self._with_run(a) for a in self.queue.pending())
        return [a for a in out if a["submitted_by"] is not None]

    def approval(self, approval_id: str) -> dict[str, Any] | None:
        try:
            item = self._with_run(self.queue.get(approval_id))
        except UsageError:
            return None
        return item if item["submitted_by"] is not None else None

    def _with_run(self, item: dict[str, Any]) -> dict[str, Any]:
        run = self.state.run(item["run_id"])
        goal = item["request"].get("plan", {}).get("goal") or ""
        return {**item, "submitted_by": run["submitted_by"] if run else None, "goal": goal}

    def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str,
        endorse: EndorseAs | None = None,
    ) -> Decision:
        if self.approval(approval_id) is None:
            raise UsageError(f"no approval request {approval_id} of a durable run")
        return self.client.decide(
            approval_id, approve=approve, by=by, reason=reason, via="http", endorse=endorse
        )

    def endorsements(self, include_revoked: bool) -> list[Endorsement]:
        return self.queue.endorsements.list(include_revoked=include_revoked)

    def revoke(self, endorsement_id: str, by: str) -> Endorsement:
        return revoke_endorsement(
            self.queue.endorsements, endorsement_id, by=by, journal=self.journal
        )

    def runs(self, limit: int, scope: RunScope | None = None) -> list[dict[str, Any]]:
        self.state.expire()
        rows = [self._row(r) for r in self.state.rows(limit)]
        return [r for r in rows if scope is None or scope.holds(r)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        found = self.state.run(run_id)
        return None if found is None else self._row(found)

    def _row(self, run: dict[str, Any]) -> dict[str, Any]:
        """A durable run in the queue's terms (``planlock.server`` shows those)."""
        run_id = run["run_id"]
        claims = [e.data for e in self.journal.events(run_id) if e.kind == "run_claimed"]
        claimed_by = str(claims[-1]["worker"]) if claims else None
        status = "approved" if run["status"] == "queued" else run["status"]
        ids = self.queue._db.execute(  # noqa: SLF001 (the queue's own connection; read only)
            "SELECT id FROM approvals WHERE run_id = ? ORDER BY created_at, id", (run_id,)
        ).fetchall()
        return {
            "run_id": run_id,
            "status": status,
            "plan_hash": run["plan_hash"],
            "submitted_by": run["submitted_by"],
            "submitted_at": run["submitted_at"],
            "claimed_by": claimed_by,
            "lease_expires_at": self.state.worker_lease(claimed_by) if claimed_by else None,
            "finished_at": run["updated_at"] if run["status"] in _FINAL else None,
            "plan": run["plan"],
            "inputs": run["inputs"],
            "goal": run["plan"].get("goal") or "",
            "approvals": [self._with_run(self.queue.get(str(i[0]))) for i in ids],
        }

    def join(self, workers: int) -> DurableWorker:
        """Make this server's DBOS worker and join it to the queue's workers now, before the
        server listens: a worker whose limit (``workers``) differs from the live workers' is
        refused here (``UsageError``), not once the server is up. ``work`` then starts it."""
        if self._worker is None:
            self._worker = DurableWorker(
                self.context,
                db_url=self.db_url,
                executor_id=self.worker_id,
                worker_concurrency=workers,
                **self.worker_options,
            )
        self._worker.join()
        return self._worker

    async def work(self, workers: int) -> None:
        """A DBOS worker in this process (``workers``: the most runs it takes at once) until
        cancelled; it recovers this server's unfinished runs when it starts."""
        worker = await anyio.to_thread.run_sync(self.join, workers)
        stop = threading.Event()
        try:
            await anyio.to_thread.run_sync(worker.start)
            await anyio.to_thread.run_sync(lambda: worker.serve(stop=stop), abandon_on_cancel=True)
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(worker.close)

    def close(self) -> None:
        if self._worker is not None:  # joined, perhaps never started: its lease ends now
            self._worker.close()
        self.client.close()
        self.queue.close()
