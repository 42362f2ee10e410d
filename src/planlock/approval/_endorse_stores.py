"""Where endorsements live (``EndorsementStore``: ``MemoryEndorsements``, ``SQLEndorsements``),
and giving, revoking and using them (``endorse``, ``revoke_endorsement``, ``settle``), journaled.
The model and the sources are in ``_endorse``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from planlock.approval._endorse import (
    ENDORSABLE_KEYS,
    ENDORSEMENTS_RUN,
    Endorsable,
    Endorsement,
)
from planlock.core import iso_ms
from planlock.db import Database, connect, migrate
from planlock.errors import UsageError
from planlock.journal import Journal, database_of
from planlock.policy import Reason

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "EndorsementStore",
    "MemoryEndorsements",
    "SQLEndorsements",
    "endorse",
    "insert_endorsement",
    "record_added",
    "revoke_endorsement",
    "settle",
]

# -- stores ---------------------------------------------------------------------------------


class EndorsementStore(Protocol):
    """Where endorsements live."""

    def find(
        self, value_hash: str, source: str, target: str, now: str | None = None
    ) -> Endorsement | None:
        """The newest live endorsement covering this value, source and target, or None."""
        ...

    def add(self, endorsement: Endorsement) -> Endorsement:
        """Keep a new endorsement; return it."""
        ...


class MemoryEndorsements:
    """Endorsements in memory (tests, one process)."""

    def __init__(self, endorsements: Iterable[Endorsement] = ()) -> None:
        self._items: dict[str, Endorsement] = {e.id: e for e in endorsements}
        self._lock = threading.Lock()

    def find(
        self, value_hash: str, source: str, target: str, now: str | None = None
    ) -> Endorsement | None:
        now = now or iso_ms()
        with self._lock:
            found = [e for e in self._items.values() if e.covers(value_hash, source, target, now)]
        return max(found, key=lambda e: (e.at, e.id), default=None)

    def add(self, endorsement: Endorsement) -> Endorsement:
        with self._lock:
            if endorsement.id in self._items:
                raise UsageError(f"endorsement {endorsement.id} exists already")
            self._items[endorsement.id] = endorsement
        return endorsement

    def get(self, endorsement_id: str) -> Endorsement:
        try:
            return self._items[endorsement_id]
        except KeyError:
            raise UsageError(f"no endorsement {endorsement_id}") from None

    def list(self, *, include_revoked: bool = False) -> list[Endorsement]:
        """Oldest first; without ``include_revoked``, live ones only."""
        items = sorted(self._items.values(), key=lambda e: (e.at, e.id))
        return [e for e in items if include_revoked or e.live()]

    def revoke(self, endorsement_id: str, by: str) -> Endorsement:
        with self._lock:
            current = self.get(endorsement_id)
            if current.revoked_at is not None:
                raise UsageError(f"endorsement {endorsement_id} was revoked already")
            revoked = replace(current, revoked_at=iso_ms(), revoked_by=by)
            self._items[endorsement_id] = revoked
        return revoked


_COLUMNS = (
    "id",
    "value_hash",
    "source",
    "target",
    "label",
    "endorsed_by",
    "via",
    "at",
    "expires_at",
    "revoked_at",
    "revoked_by",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM endorsements"  # noqa: S608  (constant columns)


def _row(row: Sequence[Any]) -> Endorsement:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["by"] = d.pop("endorsed_by")
    return Endorsement(**d)


def insert_endorsement(db: Database, e: Endorsement) -> None:
    """Insert one row (inside the caller's transaction: the queue endorses as it decides)."""
    db.execute(
        f"INSERT INTO endorsements ({', '.join(_COLUMNS)}) "  # noqa: S608  (constant columns)
        f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
        (
            e.id,
            e.value_hash,
            e.source,
            e.target,
            e.label,
            e.by,
            e.via,
            e.at,
            e.expires_at,
            e.revoked_at,
            e.revoked_by,
        ),
    )


class SQLEndorsements:
    """Endorsements in the ``endorsements`` table of a journal's database (SQLite or
    PostgreSQL), kept across runs: saved payees, known contacts."""

    def __init__(self, db: Database) -> None:
        """Over an open, migrated database (``open`` / ``beside`` migrate or find it so)."""
        self._db = db
        self._lock = threading.Lock()

    @classmethod
    def open(cls, spec: str | Path) -> SQLEndorsements:
        """The table in an SQLite file or a ``postgresql://`` database (migrated if needed)."""
        db = connect(spec)
        migrate(db)
        return cls(db)

    @classmethod
    def beside(cls, journal: Journal) -> SQLEndorsements:
        """The table in the database that holds ``journal`` (an SQL journal)."""
        return cls(database_of(journal.store))

    def find(
        self, value_hash: str, source: str, target: str, now: str | None = None
    ) -> Endorsement | None:
        now = now or iso_ms()
        with self._lock:
            rows = self._db.execute(
                _SELECT + " WHERE value_hash = ? AND source = ? AND revoked_at IS NULL "
                "ORDER BY at DESC, id DESC",
                (value_hash, source),
            ).fetchall()
        return next((e for e in map(_row, rows) if e.covers(value_hash, source, target, now)), None)

    def add(self, endorsement: Endorsement) -> Endorsement:
        with self._lock, self._db.tx() as db:
            insert_endorsement(db, endorsement)
        return endorsement

    def get(self, endorsement_id: str) -> Endorsement:
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE id = ?", (endorsement_id,)).fetchone()
        if row is None:
            raise UsageError(f"no endorsement {endorsement_id}")
        return _row(row)

    def list(self, *, include_revoked: bool = False) -> list[Endorsement]:
        """Oldest first; without ``include_revoked``, live ones only."""
        with self._lock:
            rows = self._db.execute(_SELECT + " ORDER BY at, id").fetchall()
        return [e for e in map(_row, rows) if include_revoked or e.live()]

    def revoke(self, endorsement_id: str, by: str) -> Endorsement:
        at = iso_ms()
        with self._lock, self._db.tx() as db:
            cur = db.execute(
                "UPDATE endorsements SET revoked_at = ?, revoked_by = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (at, by, endorsement_id),
            )
            changed = cur.rowcount == 1
        found = self.get(endorsement_id)  # raises for an unknown id
        if not changed:
            raise UsageError(f"endorsement {endorsement_id} was revoked already")
        return found

    def close(self) -> None:
        self._db.close()


class _Revocable(EndorsementStore, Protocol):
    def revoke(self, endorsement_id: str, by: str) -> Endorsement: ...


# -- giving, revoking and using endorsements --------------------------------------------------


def record_added(
    journal: Journal | None, run_id: str, endorsement: Endorsement, **context: Any
) -> None:
    """Journal ``endorsement_added`` (with ``context``, e.g. the step it was given at)."""
    if journal is not None:
        journal.record(run_id, "endorsement_added", {**endorsement.to_json(), **context})


def endorse(
    store: EndorsementStore,
    value: Any,
    *,
    source: str,
    label: str,
    by: str,
    target: str | None = None,
    expires_at: str | None = None,
    via: str = "api",
    journal: Journal | None = None,
    run_id: str = ENDORSEMENTS_RUN,
) -> Endorsement:
    """Endorse ``value`` from ``source`` as ``label``, attributed to ``by``; keep it in ``store``
    and journal it (``endorsement_added``) when a ``journal`` is given."""
    made = Endorsement.of_value(
        value, source=source, label=label, by=by, target=target, expires_at=expires_at, via=via
    )
    store.add(made)
    record_added(journal, run_id, made)
    return made


def revoke_endorsement(
    store: _Revocable,
    endorsement_id: str,
    *,
    by: str,
    journal: Journal | None = None,
    run_id: str = ENDORSEMENTS_RUN,
) -> Endorsement:
    """Revoke an endorsement (it settles nothing from now on); journal ``endorsement_revoked``."""
    if not by:
        raise UsageError("a revocation needs a name (who revokes)")
    revoked = store.revoke(endorsement_id, by)
    if journal is not None:
        journal.record(run_id, "endorsement_revoked", revoked.to_json())
    return revoked


def settle(
    store: EndorsementStore, offered: Sequence[Endorsable], reasons: Sequence[Reason]
) -> tuple[tuple[Reason, ...], tuple[tuple[Endorsable, Endorsement], ...]]:
    """The reasons with every flow a live endorsement covers turned into ``allow`` ("endorsed
    by X as 'landlord'"), and the endorsements used."""
    by_param = {o.param: o for o in offered}
    now = iso_ms()
    out: list[Reason] = []
    used: list[tuple[Endorsable, Endorsement]] = []
    for r in reasons:
        offer = by_param.get(r.params[0]) if len(r.params) == 1 else None
        endorsable = r.action == "require_approval" and r.key.startswith(ENDORSABLE_KEYS)
        if offer is None or not endorsable:
            out.append(r)
            continue
        found = store.find(offer.value_hash, offer.source, offer.target, now)
        if found is None:
            out.append(r)
            continue
        used.append((offer, found))
        message = f"endorsed by {found.by} as '{found.label}'"
        out.append(Reason(r.key, "allow", message, at_call=True, params=r.params))
    return tuple(out), tuple(used)
