"""Reading runs and acting on one: where each run stands (``planlock runs``), re-queueing a
stranded run, resuming one that waits for a decision, and finding the approval request a run id
stands for (``planlock approve RUN_ID``).
"""

from __future__ import annotations

from typing import Any

from planlock.approval import Decision
from planlock.core import iso_ms
from planlock.errors import UsageError
from planlock.queue._decide import QueueDecisions
from planlock.queue._replay import HELD

__all__ = ["STATES", "QueueRuns", "run_state", "self_approval_problem"]

STATES = (
    "queued",
    "awaiting approval",
    "running",
    "stranded",
    "waiting for resume",
    "done",
    "failed",
    "denied",
    "expired",
)
"""What ``planlock runs`` shows, from a run's stored status and lease."""

_COLUMNS = (
    "run_id",
    "status",
    "plan_hash",
    "submitted_by",
    "submitted_at",
    "claimed_by",
    "claimed_at",
    "lease_expires_at",
    "finished_at",
)


def run_state(status: str, lease_expires_at: str | None, now: str) -> str:
    """A run's state: ``stranded`` when a worker holds it and its lease has expired (the worker
    is gone; any worker recovers it)."""
    if status in HELD and (lease_expires_at is None or lease_expires_at < now):
        return "stranded"
    return {
        "approved": "queued",
        "pending_approval": "awaiting approval",
        "waiting_approval": "awaiting approval",
        "running": "running",
        "waiting_resume": "waiting for resume",
        "succeeded": "done",
        "denied": "denied",
        "expired": "expired",
    }.get(status, "failed")


def self_approval_problem(submitted_by: str | None, by: str) -> str | None:
    """The rule ``planlock serve`` applies, in its words: nobody approves a run they submitted
    (unless allowed explicitly)."""
    if submitted_by is not None and submitted_by == by:
        return f"{by} submitted this run and may not approve it"
    return None


class QueueRuns(QueueDecisions):
    """Runs, their states and leases, and decisions addressed by run id."""

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every run, newest first, with its ``state`` and the ids of its pending requests."""
        self._expire()
        now = iso_ms()
        sql = (
            f"SELECT {', '.join(_COLUMNS)} FROM runs "  # noqa: S608 (constant columns)
            "ORDER BY submitted_at DESC, run_id DESC"
        )
        rows = self._db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        pending: dict[str, list[str]] = {}
        for run_id, approval_id in self._db.execute(
            "SELECT run_id, id FROM approvals WHERE status = 'pending' ORDER BY created_at, id"
        ).fetchall():
            pending.setdefault(run_id, []).append(approval_id)
        out = []
        for row in rows.fetchall():
            item = dict(zip(_COLUMNS, row, strict=True))
            item["state"] = run_state(item["status"], item["lease_expires_at"], now)
            item["pending_approvals"] = pending.get(item["run_id"], [])
            out.append(item)
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        """One run (as in ``runs``); UsageError when there is none."""
        for item in self.runs():
            if item["run_id"] == run_id:
                return item
        raise UsageError(f"no run {run_id}")

    def approval_for(self, ident: str) -> str:
        """The approval request ``ident`` names: an approval id, or a run id with exactly one
        pending request. Otherwise UsageError, naming the run's request ids."""
        self._expire()
        row = self._db.execute("SELECT id FROM approvals WHERE id = ?", (ident,)).fetchone()
        if row is not None:
            return str(row[0])
        rows = self._db.execute(
            "SELECT id, status FROM approvals WHERE run_id = ? ORDER BY created_at, id", (ident,)
        ).fetchall()
        if not rows and self.run_status(ident) is None:
            raise UsageError(f"no approval request {ident} (and no run with that id)")
        open_ = [str(r[0]) for r in rows if r[1] == "pending"]
        if len(open_) == 1:
            return open_[0]
        if open_:
            ids = ", ".join(open_)
            raise UsageError(f"run {ident} has {len(open_)} pending requests; name one: {ids}")
        ids = ", ".join(f"{r[0]} ({r[1]})" for r in rows) or "none"
        raise UsageError(f"run {ident} has no pending request; its requests: {ids}")

    def submitted_by(self, approval_id: str) -> str | None:
        row = self._db.execute(
            "SELECT r.submitted_by FROM approvals a JOIN runs r ON r.run_id = a.run_id "
            "WHERE a.id = ?",
            (approval_id,),
        ).fetchone()
        return None if row is None else str(row[0])

    def requeue(self, run_id: str, *, by: str, force: bool = False) -> None:
        """Hand a run a worker holds to the next worker now. Without ``force`` only a stranded
        run (its lease expired); with it, also a run whose lease is live, when you know its
        worker is gone. Safe either way: a worker that lost its lease starts no further call,
        and a call it had started with no recorded outcome waits for a resume decision."""
        item = self.run(run_id)
        held = item["state"] in ("running", "awaiting approval", "waiting for resume")
        if item["status"] not in HELD or (held and not force):
            holder = f" (held by {item['claimed_by']} until {item['lease_expires_at']})"
            why = f"{holder}; --force if that worker is gone" if held else ""
            raise UsageError(f"run {run_id} is {item['state']}{why}, not stranded")
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET lease_expires_at = NULL, claimed_by = NULL "
                "WHERE run_id = ? AND claimed_by = ?",
                (run_id, item["claimed_by"]),
            )
            if cur.rowcount != 1:
                raise UsageError(f"run {run_id} was taken by a worker meanwhile")
        self.journal.record(
            run_id,
            "run_requeued",
            {"by": by, "previous_worker": item["claimed_by"], "forced": held},
        )

    def resume(self, run_id: str, *, by: str, reason: str = "") -> Decision | None:
        """Let a run go on: approve its pending ``resume`` request (run the interrupted call
        again), or re-queue it when it is stranded (returns None)."""
        item = self.run(run_id)
        if item["state"] == "stranded":
            self.requeue(run_id, by=by)
            return None
        resumes = [
            r[0]
            for r in self._db.execute(
                "SELECT id FROM approvals WHERE run_id = ? AND kind = 'resume' "
                "AND status = 'pending' ORDER BY created_at, id",
                (run_id,),
            ).fetchall()
        ]
        if not resumes:
            raise UsageError(
                f"run {run_id} is {item['state']}: nothing to resume (it waits for no resume "
                "decision and is not stranded)"
            )
        if len(resumes) > 1:
            raise UsageError(
                f"run {run_id} waits for {len(resumes)} resumes; approve one of: "
                + ", ".join(resumes)
            )
        return self.decide(resumes[0], approve=True, by=by, reason=reason)
