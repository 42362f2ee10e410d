"""The durable engine's working state beside the journal, and its once-only journal recorder.

Three small tables live in the journal's database (SQLite file or PostgreSQL, through
``planlock.db``), next to the approval queue's ``approvals`` table, which durable runs share so that
``planlock approvals list`` shows their requests and ``planlock approve/deny`` answers them:

- ``durable_runs``: what was submitted to the durable engine and where it stands;
- ``durable_starts``: one row per attempt to run a non-repeatable step, committed *before* the
  tool is called. A row without a recorded DBOS result is how a restart knows the call may have
  happened (R11);
- ``durable_deliveries``: decided approvals already handed to DBOS (an enqueued run or answer);
- ``durable_workers``: each worker's liveness lease, renewed by its heartbeat. Open-source DBOS
  keeps no heartbeat of its executors, so this is how ``adopt`` tells a dead worker (lease
  ended, or stopped) from a live one (lease running), and refuses the live one.

DBOS runs a workflow body again on recovery, so journal events are written through
``OnceRecorder``: each event has a key (a step event by kind and step, an approval event by its
request id, any other by its content) and an event whose key the run already has is not written
again. The chain stays one unbroken, verifiable sequence, with no event lost or doubled.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from planlock.approval import Approved, Decision, Denied
from planlock.core import canonical_json, iso_ms, sha256_hex
from planlock.db import Database
from planlock.journal import Journal, database_of

__all__ = [
    "DurableState",
    "LiveWorker",
    "OnceRecorder",
    "StoredApproval",
    "decision_from_json",
    "event_key",
]

_FINAL = ("succeeded", "failed", "denied", "expired", "refused", "rejected")


@dataclass(frozen=True)
class StoredApproval:
    """A decided approval request of a durable run, ready to hand to DBOS."""

    id: str
    run_id: str
    kind: str
    """``plan``, ``call`` or ``resume``."""
    status: str
    """``approved``, ``denied``, ``expired`` or ``used``."""
    decision: Decision


@dataclass(frozen=True)
class LiveWorker:
    """A worker whose liveness lease is running (``DurableState.live_worker``)."""

    worker_id: str
    host: str
    pid: int
    heartbeat_at: str
    lease_until: str


class DurableState:
    """The durable engine's tables in the journal's database."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._db: Database = database_of(journal.store)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # -- runs -------------------------------------------------------------------------------

    def add_run(self, payload: dict[str, Any], approval_id: str, status: str, by: str) -> None:
        now = iso_ms()
        with self._lock, self._db.tx() as db:
            db.execute(
                "INSERT INTO durable_runs (run_id, plan, plan_hash, inputs, policy, approval_id, "
                "status, submitted_by, submitted_at, updated_at, expires_in, max_replans) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    payload["run_id"],
                    canonical_json(payload["plan"]),
                    payload["plan_hash"],
                    json.dumps(payload["inputs"]),
                    json.dumps(payload["policy"]),
                    approval_id,
                    status,
                    by,
                    now,
                    now,
                    payload.get("expires_in"),
                    payload.get("max_replans"),
                ),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        """A durable run's stored row (plan, inputs and policy parsed), or None."""
        with self._lock, self._db.tx() as db:
            row = db.execute(
                "SELECT run_id, plan, plan_hash, inputs, policy, approval_id, status, "
                "submitted_by, submitted_at, updated_at, expires_in, max_replans FROM durable_runs "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        if row is None:
            return None
        keys = ("run_id", "plan", "plan_hash", "inputs", "policy", "approval_id", "status")
        out = dict(zip(keys, row[:7], strict=True))
        for k in ("plan", "inputs", "policy"):
            out[k] = json.loads(out[k])
        out.update(submitted_by=row[7], submitted_at=row[8], updated_at=row[9])
        out.update(expires_in=row[10], max_replans=row[11])
        return out

    def rows(self, limit: int) -> list[dict[str, Any]]:
        """The newest durable runs first (as ``run`` gives them)."""
        with self._lock, self._db.tx() as db:
            ids = db.execute(
                "SELECT run_id FROM durable_runs ORDER BY submitted_at DESC, run_id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [r for r in (self.run(str(i[0])) for i in ids) if r is not None]

    def worker_lease(self, worker_id: str) -> str | None:
        """When ``worker_id``'s liveness lease ends (None: unknown or stopped)."""
        with self._lock, self._db.tx() as db:
            row = db.execute(
                "SELECT lease_until FROM durable_workers WHERE worker_id = ?", (worker_id,)
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def runs(self) -> list[tuple[str, str]]:
        """``(run_id, status)`` of every durable run, oldest first."""
        with self._lock, self._db.tx() as db:
            rows = db.execute(
                "SELECT run_id, status FROM durable_runs ORDER BY submitted_at, run_id"
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def set_status(self, run_id: str, status: str) -> None:
        """Move a run to ``status``; a finished run keeps its final status."""
        marks = ", ".join("?" for _ in _FINAL)
        with self._lock, self._db.tx() as db:
            db.execute(
                "UPDATE durable_runs SET status = ?, updated_at = ? "  # noqa: S608 (constants)
                f"WHERE run_id = ? AND status NOT IN ({marks})",
                (status, iso_ms(), run_id, *_FINAL),
            )

    # -- workers' liveness leases -----------------------------------------------------------

    def beat(self, worker_id: str, lease: timedelta, *, starting: bool = False) -> None:
        """Renew ``worker_id``'s liveness lease until now + ``lease`` (a heartbeat)."""
        with self._lock, self._db.tx() as db:
            _beat(db, worker_id, lease, starting=starting)

    @contextmanager
    def joining(self, worker_id: str, lease: timedelta) -> Iterator[list[LiveWorker]]:
        """Hold the workers lock (one worker joins at a time, in any process) while the body
        checks and sets what the workers of the queue share; yields the other live workers.
        When the body returns, ``worker_id``'s lease starts (as ``beat(starting=True)``); when
        it raises, nothing is written."""
        with self._lock, self._db.tx() as db:
            db.serialize("workers")
            rows = db.execute(
                "SELECT worker_id, host, pid, heartbeat_at, lease_until FROM durable_workers "
                "WHERE worker_id <> ? AND lease_until > ? ORDER BY worker_id",
                (worker_id, iso_ms()),
            ).fetchall()
            yield [_live(r) for r in rows]
            _beat(db, worker_id, lease, starting=True)

    def stopped(self, worker_id: str) -> None:
        """A worker that stops cleanly ends its lease at once (this process's row only)."""
        with self._lock, self._db.tx() as db:
            db.execute(
                "UPDATE durable_workers SET lease_until = NULL WHERE worker_id = ? AND host = ? "
                "AND pid = ?",
                (worker_id, socket.gethostname(), os.getpid()),
            )

    def live_worker(self, worker_id: str) -> LiveWorker | None:
        """The worker, when its lease is running now; None when it is unknown, stopped, or its
        last heartbeat is older than its lease (it is gone)."""
        with self._lock, self._db.tx() as db:
            return _live_worker(db, worker_id)

    @contextmanager
    def adopting(self, worker_ids: Sequence[str]) -> Iterator[list[LiveWorker]]:
        """Hold the adopt lock (one adopt at a time, in any process) while the body hands the
        workers' runs over; yields those of ``worker_ids`` that are alive (checked under it)."""
        with self._lock, self._db.tx() as db:
            db.serialize("adopt")
            yield [w for w in (_live_worker(db, i) for i in worker_ids) if w is not None]

    # -- step starts (R11) ------------------------------------------------------------------

    def mark_started(self, run_id: str, step_id: str, round_no: int, call: str = "") -> bool:
        """Record that attempt ``round_no`` of a step is about to call its tool; False when that
        attempt was started before (a crash came between the call and its recorded result).
        ``call`` tells apart the calls of one step id: ``:<item>`` of a for_each step,
        ``@<revision>`` of a revised plan's step."""
        key = f"{run_id}:{step_id}{call}:{round_no}"
        with self._lock, self._db.tx() as db:
            cur = db.execute(
                "INSERT INTO durable_starts (key, run_id, step_id, round, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, run_id, step_id, round_no, iso_ms()),
            )
            return cur.rowcount == 1

    # -- approvals --------------------------------------------------------------------------

    def add_approval(
        self,
        approval_id: str,
        run_id: str,
        kind: str,
        plan_hash: str,
        request: dict[str, Any],
        *,
        step_id: str | None = None,
        args_hash: str | None = None,
        expires_at: str | None = None,
        decided: Decision | None = None,
    ) -> bool:
        """Store a request in the shared ``approvals`` table (once: the id is deterministic);
        True when this call stored it."""
        status = "pending" if decided is None else ("approved" if decided.approved else "denied")
        with self._lock, self._db.tx() as db:
            cur = db.execute(
                "INSERT INTO approvals (id, run_id, kind, plan_hash, step_id, args_hash, request, "
                "status, created_at, expires_at, decided_by, decided_via, decided_at, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    approval_id,
                    run_id,
                    kind,
                    plan_hash,
                    step_id,
                    args_hash,
                    json.dumps(request),
                    status,
                    iso_ms(),
                    expires_at,
                    decided.by if decided else None,
                    decided.via if decided else None,
                    decided.at if decided else None,
                    decided.reason if decided else None,
                ),
            )
            return cur.rowcount == 1

    def expire(self) -> list[tuple[str, str]]:
        """Mark durable runs' pending requests past their expiry ``expired`` and journal
        ``approval_expired`` (once: whichever process expires a request first journals it, as
        the approval queue does); a run whose plan request expired is ``expired``. Returns the
        ``(approval id, run id)`` pairs this call expired."""
        now = iso_ms()
        done: list[tuple[str, str]] = []
        with self._lock, self._db.tx() as db:
            rows = db.execute(
                "SELECT a.id, a.run_id, a.kind FROM approvals a "
                "JOIN durable_runs r ON r.run_id = a.run_id "
                "WHERE a.status = 'pending' AND a.expires_at < ?",
                (now,),
            ).fetchall()
            for approval_id, run_id, kind in rows:
                cur = db.execute(
                    "UPDATE approvals SET status = 'expired' WHERE id = ? AND status = 'pending'",
                    (approval_id,),
                )
                if cur.rowcount != 1:
                    continue
                done.append((str(approval_id), str(run_id)))
                if kind == "plan":
                    db.execute(
                        "UPDATE durable_runs SET status = 'expired', updated_at = ? "
                        "WHERE run_id = ?",
                        (now, run_id),
                    )
        for approval_id, run_id in done:
            self.journal.record(run_id, "approval_expired", {"id": approval_id})
        return done

    def answer(self, approval_id: str) -> tuple[str, str | None, Decision | None]:
        """A stored request's status, expiry and, when decided, its decision."""
        with self._lock, self._db.tx() as db:
            row = db.execute(
                "SELECT id, run_id, kind, status, plan_hash, step_id, args_hash, decided_by, "
                "decided_via, decided_at, reason, expires_at FROM approvals WHERE id = ?",
                (approval_id,),
            ).fetchone()
        if row is None:
            raise KeyError(approval_id)
        status, expires_at = str(row[3]), row[11]
        if status in ("approved", "used", "denied"):
            decided = _stored(row[:11]).decision
            return status, expires_at, decided
        return status, expires_at, None

    def mark_used(self, approval_id: str) -> None:
        with self._lock, self._db.tx() as db:
            db.execute(
                "UPDATE approvals SET status = 'used', used_at = ? "
                "WHERE id = ? AND status = 'approved'",
                (iso_ms(), approval_id),
            )

    def undelivered(self) -> list[StoredApproval]:
        """Decided requests of durable runs that DBOS has not been given yet, oldest first."""
        with self._lock, self._db.tx() as db:
            rows = db.execute(
                "SELECT a.id, a.run_id, a.kind, a.status, a.plan_hash, a.step_id, a.args_hash, "
                "a.decided_by, a.decided_via, a.decided_at, a.reason FROM approvals a "
                "JOIN durable_runs r ON r.run_id = a.run_id "
                "WHERE a.status IN ('approved', 'denied', 'expired') AND NOT EXISTS "
                "(SELECT 1 FROM durable_deliveries d WHERE d.approval_id = a.id) "
                "ORDER BY a.decided_at, a.id"
            ).fetchall()
        return [_stored(r) for r in rows]

    def mark_delivered(self, approval_id: str) -> None:
        with self._lock, self._db.tx() as db:
            db.execute(
                "INSERT INTO durable_deliveries (approval_id, at) VALUES (?, ?) "
                "ON CONFLICT (approval_id) DO NOTHING",
                (approval_id, iso_ms()),
            )

    def approval_run(self, approval_id: str) -> str | None:
        """The durable run an approval request belongs to, or None (not a durable run's)."""
        with self._lock, self._db.tx() as db:
            row = db.execute(
                "SELECT a.run_id FROM approvals a JOIN durable_runs r ON r.run_id = a.run_id "
                "WHERE a.id = ?",
                (approval_id,),
            ).fetchone()
        return None if row is None else str(row[0])

    def pending_count(self) -> int:
        """Durable runs not finished yet (waiting, queued or running)."""
        marks = ", ".join("?" for _ in _FINAL)
        with self._lock, self._db.tx() as db:
            row = db.execute(
                f"SELECT COUNT(*) FROM durable_runs WHERE status NOT IN ({marks})",  # noqa: S608
                _FINAL,
            ).fetchone()
        return int(row[0])


def _stored(row: Any) -> StoredApproval:
    aid, run_id, kind, status, plan_hash, step_id, args_hash, by, via, at, reason = row
    decision: Decision
    if status in ("approved", "used"):
        decision = Approved(plan_hash, by, via, reason or "", at, step_id, args_hash)
    elif status == "denied":
        decision = Denied(
            plan_hash, by or "policy", via or "queue", reason or "", at, step_id, args_hash
        )
    else:
        decision = Denied(
            plan_hash, "policy", "queue", "the request expired", at or iso_ms(), step_id, args_hash
        )
    return StoredApproval(str(aid), str(run_id), str(kind), str(status), decision)


def decision_from_json(data: dict[str, Any]) -> Decision:
    """The inverse of ``Approved.to_json`` / ``Denied.to_json``."""
    plan_hash, by, via = str(data["plan_hash"]), str(data["by"]), str(data["via"])
    reason, at = str(data.get("reason") or ""), str(data.get("at") or "")
    step_id, args_hash = data.get("step_id"), data.get("args_hash")
    if data.get("approved") is True:
        expires_at = data.get("expires_at")
        return Approved(plan_hash, by, via, reason, at, step_id, args_hash, expires_at)
    return Denied(plan_hash, by, via, reason, at, step_id, args_hash)


def event_key(kind: str, data: dict[str, Any]) -> str:
    """What makes an event the same event when a workflow body runs again. A step event of a
    revised plan carries the revision's number (``revision``), so a revised step that reuses a
    failed step's id is a new event."""
    step = data.get("step")
    if "revision" in data:
        step = f"{step}@{data['revision']}"
    if kind == "step_started":
        return f"{kind}|{step}|{data.get('item')}"
    if kind == "step_retrying":
        return f"{kind}|{step}|{data.get('item')}|{data.get('attempt')}"
    if kind in ("step_finished", "step_failed", "step_skipped"):
        return f"{kind}|{step}"
    if kind.startswith("approval_") and (data.get("id") or step):
        return f"{kind}|{data.get('id')}|{step}|{data.get('kind')}"
    if kind == "run_claimed":
        return f"{kind}|{data.get('worker')}"
    if kind == "run_finished":
        return kind
    return f"{kind}|{sha256_hex(canonical_json(data))}"


class OnceRecorder:
    """Journals a run's events, skipping any the run already has (see ``event_key``)."""

    def __init__(self, journal: Journal, run_id: str) -> None:
        self.journal = journal
        self.run_id = run_id
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.reload()

    def reload(self) -> None:
        """Learn the events the run has now (a DBOS step may journal some directly)."""
        seen = {event_key(e.kind, e.data) for e in self.journal.events(self.run_id)}
        with self._lock:
            self._seen |= seen

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.record(kind, data)

    def record(self, kind: str, data: dict[str, Any]) -> bool:
        """Journal the event unless the run has it; True when it was written (durable, with
        every event deferred before it)."""
        if not self._first(kind, data):
            return False
        self.journal.record(self.run_id, kind, data)
        return True

    async def commit(self, kind: str, data: dict[str, Any]) -> None:
        """``record``, group-committed: durable when this returns (``Journal.commit``)."""
        if self._first(kind, data):
            await self.journal.commit(self.run_id, kind, data)

    def defer(self, kind: str, data: dict[str, Any]) -> None:
        """``record`` without waiting (``Journal.defer``): an event lost in a crash is written
        again by the replay, which finds the run without it."""
        if self._first(kind, data):
            self.journal.defer(self.run_id, kind, data)

    def _first(self, kind: str, data: dict[str, Any]) -> bool:
        """The run does not have this event yet (it is now counted as written)."""
        key = event_key(kind, data)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        return True


def _beat(db: Database, worker_id: str, lease: timedelta, *, starting: bool) -> None:
    now = datetime.now(UTC)
    row = (
        worker_id,
        socket.gethostname(),
        os.getpid(),
        iso_ms(now),
        iso_ms(now),
        iso_ms(now + lease),
    )
    db.execute(
        "INSERT INTO durable_workers (worker_id, host, pid, started_at, heartbeat_at, "  # noqa: S608 (constants)
        "lease_until) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
        "host = excluded.host, pid = excluded.pid, heartbeat_at = excluded.heartbeat_at, "
        "lease_until = excluded.lease_until"
        + (", started_at = excluded.started_at" if starting else ""),
        row,
    )


def _live_worker(db: Database, worker_id: str) -> LiveWorker | None:
    row = db.execute(
        "SELECT worker_id, host, pid, heartbeat_at, lease_until FROM durable_workers "
        "WHERE worker_id = ? AND lease_until > ?",
        (worker_id, iso_ms()),
    ).fetchone()
    return None if row is None else _live(row)


def _live(row: Any) -> LiveWorker:
    """A ``durable_workers`` row (worker_id, host, pid, heartbeat_at, lease_until)."""
    return LiveWorker(str(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]))
