"""The queue's tables and what reads them: ``runs`` and ``approvals`` beside the journal, their
expiry, and the notifier; ``ApprovalQueue`` (``_queue``) builds on this with decisions
(``_decide``) and workers (``_worker``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, TypeVar

from planlock.approval import SQLEndorsements
from planlock.core import iso_ms
from planlock.db import Database, transact
from planlock.errors import UsageError
from planlock.journal import Journal, database_of
from planlock.queue._notify import Notifier, notify_request

__all__ = ["DEFAULT_EXPIRY", "QueueStore", "parse_duration"]

DEFAULT_EXPIRY = timedelta(days=7)
T = TypeVar("T")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d`` or a number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        raise UsageError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 7d)") from None


class QueueStore:
    """The queue's state in a journal's database: runs, approval requests, endorsements."""

    def __init__(self, journal: Journal, notifier: Notifier | None = None) -> None:
        self._db: Database = database_of(journal.store)
        self.journal = journal
        self.notifier = notifier
        self.endorsements = SQLEndorsements(self._db)
        """The values people endorsed, beside the queue: a worker's runs use them."""

    def _tx(self) -> AbstractContextManager[Database]:
        return self._db.tx()

    def _transact(
        self, body: Callable[[Database], T], committed: Callable[[T], bool] | None = None
    ) -> T:
        """``body`` in one transaction, run again if the connection is lost before its COMMIT;
        lost during COMMIT, ``committed`` re-reads to tell (``planlock.db.transact``)."""
        return transact(self._db, body, committed=committed)

    def _value(self, sql: str, params: tuple[Any, ...]) -> Any:
        row = self._db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    async def _notify(self, run_id: str, request: dict[str, Any]) -> None:
        if self.notifier is not None:
            notify_request(self.notifier, self.journal, run_id, request)

    # -- reading ----------------------------------------------------------------------------

    def _expire(self) -> None:
        now = iso_ms()

        def expire(db: Database) -> list[tuple[str, str]]:
            expired = []
            rows = db.execute(
                "SELECT id, run_id FROM approvals WHERE status = 'pending' AND expires_at < ?",
                (now,),
            ).fetchall()
            for approval_id, run_id in rows:
                cur = db.execute(
                    "UPDATE approvals SET status = 'expired' WHERE id = ? AND status = 'pending'",
                    (approval_id,),
                )
                if cur.rowcount != 1:
                    continue  # another process expired it first (and journals it)
                expired.append((approval_id, run_id))
                # A run waiting at a run-time request stays with its worker, which reads the
                # expiry as a denial of that call (and recovers it, if the worker died).
                db.execute(
                    "UPDATE runs SET status = 'expired' WHERE run_id = ? "
                    "AND status = 'pending_approval'",
                    (run_id,),
                )
            return expired

        def committed(expired: list[tuple[str, str]]) -> bool:
            status = "SELECT status FROM approvals WHERE id = ?"
            return all(self._value(status, (a,)) == "expired" for a, _ in expired)

        for approval_id, run_id in self._transact(expire, committed):
            self.journal.record(run_id, "approval_expired", {"id": approval_id})

    def pending(self) -> list[dict[str, Any]]:
        """Approval requests waiting for a person, oldest first."""
        self._expire()
        rows = self._db.execute(
            "SELECT id FROM approvals WHERE status = 'pending' ORDER BY created_at, id"
        ).fetchall()
        return [self.get(r[0]) for r in rows]

    def get(self, approval_id: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT id, run_id, kind, plan_hash, step_id, args_hash, request, status, created_at, "
            "expires_at, decided_by, decided_via, decided_at, reason, used_at "
            "FROM approvals WHERE id = ?",
            (approval_id,),
        ).fetchone()
        if row is None:
            raise UsageError(f"no approval request {approval_id}")
        keys = [
            "id",
            "run_id",
            "kind",
            "plan_hash",
            "step_id",
            "args_hash",
            "request",
            "status",
            "created_at",
            "expires_at",
            "decided_by",
            "decided_via",
            "decided_at",
            "reason",
            "used_at",
        ]
        out = dict(zip(keys, row, strict=True))
        out["request"] = json.loads(out["request"])
        inputs = self._db.execute(
            "SELECT inputs FROM runs WHERE run_id = ?", (out["run_id"],)
        ).fetchone()
        out["inputs"] = json.loads(inputs[0]) if inputs else {}
        return out

    def run_status(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._db.close()
