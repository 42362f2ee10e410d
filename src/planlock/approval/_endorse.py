"""Endorsement: a person approves a *value* once, not each action that uses it (issue 12).

A person who sees a concrete value in a call ("DE89 3704 ... is my landlord", "sarah@example.com
is Sarah") endorses it: an ``Endorsement`` names the SHA-256 of the value's canonical JSON, the
value's **source** and, optionally, the **target** it may reach, with a label (the value's human
meaning), who endorsed it and when; it may expire and be revoked. Later calls whose untrusted or
chosen value in a sensitive parameter has a live endorsement with the same hash *and* source
(and target, if set) run without asking (the policy's ``flow:<p>`` / ``choice:<p>`` reason is
settled, see ``settle``). A different value, a different source, an expired or revoked
endorsement settles nothing: the person is asked as before.

The source says where the value came from in words that hold across runs and plans (never a
step id): the producing tool and the output path, ``tool:get_transactions#[*].recipient``
(a list index is written ``[*]``: an item's position is not part of what was endorsed);
``input:<name>`` for a trusted input; ``llm#<field>(<what it read>)`` for a quarantined llm
step's output; ``chosen:<where the allowed values come from>`` for a value an llm step chose
among trusted values (``choices``); several origins (an interpolated string, an object built
from several references) are joined with ``+``. Chosen values and loop items may be endorsed
like any other value: the endorsement covers this one value, so the attacker can at most steer
the agent to a value the person vouched for, from the place the person saw it come from.

Endorsements live in an ``EndorsementStore``: ``MemoryEndorsements`` (one process) or
``SQLEndorsements`` (the ``endorsements`` table beside the journal, SQLite or PostgreSQL).
Creating, using and revoking one is journaled (``endorsement_added``, ``endorsement_used``,
``endorsement_revoked``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ulid import ULID

from planlock.core import ANY_ITEM, Ref, canonical_json, refs_of, sha256_hex
from planlock.db import Database, connect, migrate
from planlock.errors import UsageError
from planlock.journal import Journal, database_of
from planlock.policy import Reason
from planlock.tools import LLM_TOOL
from planlock.validation import CompiledStep, expand_items

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ENDORSEMENTS_RUN",
    "Endorsable",
    "EndorseAs",
    "Endorsement",
    "EndorsementStore",
    "MemoryEndorsements",
    "SQLEndorsements",
    "endorse",
    "insert_endorsement",
    "make_endorsements",
    "offers",
    "record_added",
    "revoke_endorsement",
    "settle",
    "value_hash",
    "value_source",
]

ENDORSEMENTS_RUN = "endorsements"
"""The journal run id of endorsement events made outside any run (CLI, Python API)."""
ENDORSABLE_KEYS = ("flow:", "choice:")
"""The policy reasons an endorsement can settle: the default untrusted-to-sensitive and
chosen-to-sensitive flows (never a deny, never a rule the policy's author wrote)."""
MAX_LABEL = 200


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _utc(stamp: str | None) -> str | None:
    """An ISO 8601 time as UTC with milliseconds (comparable as text); a naive one is UTC."""
    if stamp is None:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise UsageError(f"not an ISO 8601 time: {stamp!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def value_hash(value: Any) -> str:
    """SHA-256 of a value's canonical JSON: what an endorsement is bound to."""
    return sha256_hex(canonical_json(value))


# -- sources --------------------------------------------------------------------------------


def _path_text(path: Iterable[str]) -> str:
    """``("*", "recipient")`` as ``[*].recipient``; list indexes are written ``[*]`` too."""
    out = ""
    for seg in path:
        out += "[*]" if seg == ANY_ITEM or seg.isdigit() else f".{seg}"
    return out.removeprefix(".")


def _origin(steps: Mapping[str, CompiledStep], ref: Ref) -> str:
    if ref.source == "input":
        path = _path_text(ref.path)
        return f"input:{ref.name}" + (f".{path}" if path and not path.startswith("[") else path)
    step = steps.get(ref.name)
    if ref.source != "step" or step is None:
        return f"{ref.source}:{ref.name}"
    path = _path_text(ref.path)
    if step.tool.name != LLM_TOOL:
        return f"tool:{step.tool.name}" + (f"#{path}" if path else "")
    inner = ref.path[1:] if step.for_each is not None else ref.path
    for fld, allowed in step.choices:
        if fld is None or inner[:1] == (fld,):
            return f"chosen:{_origin(steps, allowed)}"
    read = sorted({_origin(steps, r) for r in _refs(step, step.args.values())})
    return f"llm{'#' + path if path else ''}({','.join(read)})"


def _refs(step: CompiledStep, templates: Iterable[Any]) -> Iterable[Ref]:
    for t in templates:
        yield from refs_of(expand_items(t, step.for_each) if step.for_each else t)


def value_source(steps: Mapping[str, CompiledStep], step: CompiledStep, param: str) -> str:
    """Where the value of ``step``'s argument ``param`` comes from, stated without step ids (see
    the module docstring); ``plan`` for a literal the plan wrote."""
    template = step.args.get(param)
    if template is None:
        return "plan"
    origins = sorted({_origin(steps, r) for r in _refs(step, (template,))})
    return "+".join(origins) or "plan"


# -- the model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endorsable:
    """What a call offers to endorse: one parameter's value, bound like an endorsement."""

    param: str
    value_hash: str
    source: str
    target: str
    """``tool.param`` of the call."""

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endorsable:
        return cls(
            str(data["param"]), str(data["value_hash"]), str(data["source"]), str(data["target"])
        )


@dataclass(frozen=True, slots=True)
class Endorsement:
    """A person's word that one concrete value, from one source, is what its label says."""

    value_hash: str
    """SHA-256 of the value's canonical JSON."""
    source: str
    """Where the value came from (``tool:get_transactions#[*].recipient``); see the module."""
    label: str
    """The value's human meaning: ``landlord``, ``Sarah``."""
    by: str
    """Who endorsed it."""
    target: str | None = None
    """``tool.param`` it may reach; None: any sensitive parameter."""
    at: str = field(default_factory=_now)
    expires_at: str | None = None
    """ISO 8601 UTC; not used after this."""
    revoked_at: str | None = None
    revoked_by: str | None = None
    via: str = "api"
    """How it was given: ``terminal``, ``cli``, ``http``, ``api``."""
    id: str = field(default_factory=lambda: str(ULID()))

    def __post_init__(self) -> None:
        if len(self.value_hash) != 64:
            raise UsageError("an endorsement names a SHA-256 value hash (64 hex digits)")
        if not self.source:
            raise UsageError("an endorsement needs a source")
        if not self.label.strip() or len(self.label) > MAX_LABEL:
            raise UsageError(f"an endorsement needs a label (1 to {MAX_LABEL} characters)")
        if not self.by:
            raise UsageError("an endorsement needs a name (who endorses)")
        if self.target is not None and "." not in self.target:
            raise UsageError(f"a target is TOOL.PARAM, not {self.target!r}")
        object.__setattr__(self, "expires_at", _utc(self.expires_at))

    def live(self, now: str | None = None) -> bool:
        """Neither revoked nor expired at ``now`` (ISO 8601 UTC; default: now)."""
        now = now or _now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def covers(self, value_hash: str, source: str, target: str, now: str | None = None) -> bool:
        """Whether this endorsement lets a value with this hash, from this source, reach
        ``target`` (``tool.param``) at ``now``."""
        return (
            self.value_hash == value_hash
            and self.source == source
            and self.target in (None, target)
            and self.live(now)
        )

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endorsement:
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})

    @classmethod
    def of_value(cls, value: Any, **fields: Any) -> Endorsement:
        """An endorsement of ``value`` (hashed here): ``Endorsement.of_value(iban, source=...,
        label="landlord", by="dana")``."""
        return cls(value_hash(value), **fields)


@dataclass(frozen=True, slots=True)
class EndorseAs:
    """A person's request to endorse, with their approval of a call, the values it offers."""

    label: str
    params: tuple[str, ...] | None = None
    """Which of the call's endorsable parameters; None: every one."""
    any_target: bool = False
    """Let the values reach any sensitive parameter, not only this call's tool and parameter."""
    expires_at: str | None = None

    def labels(self, offered: Sequence[Endorsable]) -> dict[str, str]:
        names = self.params if self.params is not None else tuple(o.param for o in offered)
        return dict.fromkeys(names, self.label)


def make_endorsements(
    offered: Sequence[Endorsable],
    labels: Mapping[str, str],
    *,
    by: str,
    via: str,
    any_target: bool = False,
    expires_at: str | None = None,
) -> tuple[Endorsement, ...]:
    """The endorsements a person gives for a call's offers (``labels``: param -> label). A
    parameter the call does not offer is a UsageError."""
    by_param = {o.param: o for o in offered}
    if not by_param:
        raise UsageError("this request offers no value to endorse")
    unknown = sorted(set(labels) - set(by_param))
    if unknown or not labels:
        offers_text = ", ".join(sorted(by_param))
        raise UsageError(f"endorse one of this call's values: {offers_text} (not {unknown})")
    at = _now()
    return tuple(
        Endorsement(
            o.value_hash,
            o.source,
            labels[p],
            by,
            target=None if any_target else o.target,
            at=at,
            expires_at=expires_at,
            via=via,
        )
        for p, o in by_param.items()
        if p in labels
    )


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
        now = now or _now()
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
            revoked = replace(current, revoked_at=_now(), revoked_by=by)
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
        now = now or _now()
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
        at = _now()
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


def offers(
    steps: Mapping[str, CompiledStep],
    step: CompiledStep,
    args: Mapping[str, Any],
    reasons: Iterable[Reason],
) -> tuple[Endorsable, ...]:
    """What a call may have endorsed: the value of each parameter whose default flow reason
    (``flow:<p>`` / ``choice:<p>``) asks a person."""
    params = sorted(
        {
            p
            for r in reasons
            if r.action == "require_approval" and r.key.startswith(ENDORSABLE_KEYS)
            for p in r.params
            if p in args
        }
    )
    target = step.tool.name
    return tuple(
        Endorsable(p, value_hash(args[p]), value_source(steps, step, p), f"{target}.{p}")
        for p in params
    )


def settle(
    store: EndorsementStore, offered: Sequence[Endorsable], reasons: Sequence[Reason]
) -> tuple[tuple[Reason, ...], tuple[tuple[Endorsable, Endorsement], ...]]:
    """The reasons with every flow a live endorsement covers turned into ``allow`` ("endorsed
    by X as 'landlord'"), and the endorsements used."""
    by_param = {o.param: o for o in offered}
    now = _now()
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
