"""Journal events and their hash chain (R10).

Each event's hash is the SHA-256 of its canonical JSON (sorted keys) *including the previous
event's hash*, so editing, inserting or deleting an event breaks the chain from there on.
``verify_events`` recomputes the chain and names the first bad event.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from planlock.core import canonical_json, sha256_hex
from planlock.errors import JournalCorrupt, UsageError

__all__ = [
    "EVENT_KINDS",
    "GENESIS",
    "Event",
    "EventKind",
    "Head",
    "VerifyReport",
    "chain_hash",
    "chain_next",
    "now",
    "row_event",
    "verify_events",
]

EventKind = Literal[
    "run_started",
    "plan_created",
    "plan_validated",
    "plan_rejected",
    "risk_assessed",
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "approval_refused",
    "llm_called",
    "step_started",
    "step_retrying",
    "step_finished",
    "step_failed",
    "step_skipped",
    "run_finished",
    "run_queued",
    "run_claimed",
    "run_requeued",
    "approval_used",
    "approval_expired",
    "notification_sent",
    "notification_failed",
    "replanned",
    "checkpoint_reviewed",
    "http_request",
    "http_anonymous",
    "request_failed",
    "endorsement_added",
    "endorsement_used",
    "endorsement_revoked",
    "checkpoint",
    "planning_progress",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
GENESIS = "0" * 64


class Event(BaseModel):
    """One journal entry."""

    model_config = ConfigDict(frozen=True)

    seq: int
    """Position in the journal, from 1, without gaps."""
    run_id: str
    """The run the event belongs to."""
    kind: EventKind
    """What happened."""
    at: str
    """When, as ISO 8601 UTC."""
    data: dict[str, Any]
    """The event's content (JSON)."""
    prev_hash: str
    """Hash of the previous event (64 zeros for the first)."""
    hash: str
    """SHA-256 of this event's canonical JSON, prev_hash included."""


def _content_hash(
    seq: int, run_id: str, kind: str, at: str, data: dict[str, Any], prev: str
) -> str:
    body = {"seq": seq, "run_id": run_id, "kind": kind, "at": at, "data": data, "prev_hash": prev}
    return sha256_hex(canonical_json(body))


def chain_hash(seq: int, run_id: str, kind: str, at: str, data_json: str, prev: str) -> str:
    """``_content_hash`` from the data's canonical JSON, already written (the SQL stores keep
    that text): the same bytes, since the body's keys sorted are at, data, kind, prev_hash,
    run_id, seq, and a nested value is written as it is alone. Serializes the data once."""
    enc = _string
    return _body_hash(enc(at), data_json, enc(kind), enc(prev), enc(run_id), seq)


def _body_hash(at: str, data_json: str, kind: str, prev: str, run_id: str, seq: int) -> str:
    """The hash of an event from its fields' JSON texts (strings quoted already)."""
    body = (
        f'{{"at":{at},"data":{data_json},"kind":{kind},'
        f'"prev_hash":{prev},"run_id":{run_id},"seq":{int(seq)}}}'
    )
    return sha256(body.encode()).hexdigest()


_PLAIN = re.compile(r"[ !#-\[\]-~]*")
"""Printable ASCII but ``"`` and ``\\``: what canonical JSON writes as is, between quotes."""


def _string(text: str) -> str:
    """``canonical_json(text)`` for a string, without the encoder for the usual plain ones
    (timestamps, hashes, kinds, run ids)."""
    if type(text) is str and _PLAIN.fullmatch(text):
        return f'"{text}"'
    return canonical_json(text)


_KIND_JSON: dict[str, str] = {kind: _string(kind) for kind in EVENT_KINDS}
"""Each event kind as JSON, written once; a kind not in it is not an event kind."""
_RUN_JSON: dict[str, str] = {}
"""Run ids as JSON, written once per run id (a run records many events); at most
``_RUN_JSON_MAX`` kept."""
_RUN_JSON_MAX = 4096


def _run_json(run_id: str) -> str:
    if type(run_id) is not str:
        return _string(run_id)
    text = _RUN_JSON.get(run_id)
    if text is None:
        if len(_RUN_JSON) >= _RUN_JSON_MAX:
            _RUN_JSON.clear()  # a bound, not a policy: a process records few runs at once
        text = _RUN_JSON[run_id] = _string(run_id)
    return text


def _hash_json(digest: str) -> str:
    """A previous hash as JSON: a hex digest as it is, quoted; anything else (a stored head
    that is not one) written by the encoder."""
    if type(digest) is str and digest.isascii() and digest.isalnum():
        return f'"{digest}"'
    return _string(digest)


_SECOND: tuple[int, str] = (-1, "")
"""The last second ``now`` formatted (``YYYY-MM-DDTHH:MM:SS``): events come many per second."""


def now() -> str:
    """An event's ``at``: ISO 8601 UTC with microseconds, as
    ``datetime.now(UTC).isoformat(timespec="microseconds")`` writes it, at a third of its cost
    (the date and time of day are formatted once per second)."""
    global _SECOND  # noqa: PLW0603  (a cache; a race only formats one second twice)
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        day = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _SECOND = (second, day)
    return f"{cached[1]}.{micros:06d}+00:00"


def chain_next(
    last: tuple[int, str] | None,
    run_id: str,
    kind: str,
    data: dict[str, Any],
    *,
    at: str | None = None,
    data_json: str | None = None,
) -> Event:
    """The event that follows ``last`` (its seq and hash). ``at`` defaults to now; ``data_json``
    (``canonical_json(data)``, when the caller has it) saves serializing the data again.

    The event is built without Pydantic validation (``model_construct``): its fields are made
    here, and ``kind`` is checked against ``EVENT_KINDS``. The hash is ``chain_hash``'s, with
    the texts that recur (the kind, the run id) written once, and ``now()``'s (plain ASCII by
    construction) quoted without a check."""
    kind_json = _KIND_JSON.get(kind) if type(kind) is str else None
    if kind_json is None:
        raise UsageError(f"unknown event kind '{kind}'")
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    if at is None:
        at = now()
        at_json = f'"{at}"'
    else:
        at_json = _string(at)
    text = data_json if data_json is not None else canonical_json(data)
    digest = _body_hash(at_json, text, kind_json, _hash_json(prev), _run_json(run_id), seq)
    return _event(
        {
            "seq": seq,
            "run_id": run_id,
            "kind": kind,
            "at": at,
            "data": dict(data),
            "prev_hash": prev,
            "hash": digest,
        }
    )


_FIELDS = frozenset(Event.model_fields)


def _constructed(fields: dict[str, Any]) -> Event:
    """``Event.model_construct(**fields)`` for a complete set of fields, at a quarter of its
    cost: what model_construct leaves in a model, set directly (checked at import)."""
    event = Event.__new__(Event)
    object.__setattr__(event, "__dict__", fields)
    object.__setattr__(event, "__pydantic_fields_set__", set(_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def _same_as_construct() -> bool:
    fields: dict[str, Any] = {
        "seq": 1,
        "run_id": "r",
        "kind": "checkpoint",
        "at": "t",
        "data": {},
        "prev_hash": GENESIS,
        "hash": GENESIS,
    }
    fast, slow = _constructed(dict(fields)), Event.model_construct(**fields)
    return (
        fast == slow
        and fast.__dict__ == slow.__dict__
        and fast.__pydantic_fields_set__ == slow.__pydantic_fields_set__
        and fast.__pydantic_extra__ == slow.__pydantic_extra__
        and fast.__pydantic_private__ == slow.__pydantic_private__
        and fast.model_dump() == fields
    )


def _construct(fields: dict[str, Any]) -> Event:
    return Event.model_construct(**fields)


_event: Callable[[dict[str, Any]], Event] = _constructed if _same_as_construct() else _construct
"""How events are built: directly, or through model_construct if Pydantic changed its layout."""


def row_event(seq: int, rid: str, kind: Any, at: str, data: str, prev: str, digest: str) -> Event:
    try:
        parsed = json.loads(data)
        if not isinstance(parsed, dict):
            parsed = {"__not_an_object__": parsed}
    except json.JSONDecodeError:
        parsed = {"__unparseable__": data}
    return Event.model_construct(
        seq=seq, run_id=rid, kind=kind, at=at, data=parsed, prev_hash=prev, hash=digest
    )


@dataclass(frozen=True)
class Head:
    """The end of the chain: the last event's seq and hash (``0`` and ``GENESIS`` when empty)."""

    seq: int
    hash: str


@dataclass(frozen=True)
class VerifyReport:
    """The result of verifying a chain."""

    ok: bool
    count: int
    """Events checked."""
    first_bad: int | None = None
    """Sequence number of the first bad event (for a truncated tail: the first missing one)."""
    reason: str = ""
    checkpoints: int = 0
    """``checkpoint`` events whose MAC was checked (only with the key)."""
    anchors: int = 0
    """Anchors (outside records of the head) checked against the chain."""

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise JournalCorrupt(self.first_bad or 0, self.reason)


def verify_events(events: Iterable[Event]) -> VerifyReport:
    """Recompute the hash chain; report the first event that does not match."""
    prev_seq, prev_hash, count = 0, GENESIS, 0
    for e in events:
        count += 1
        if e.seq != prev_seq + 1:
            return VerifyReport(
                False, count, e.seq, f"expected event {prev_seq + 1}, found {e.seq}"
            )
        if e.prev_hash != prev_hash:
            return VerifyReport(False, count, e.seq, "prev_hash does not match the previous event")
        if e.kind not in EVENT_KINDS:
            return VerifyReport(False, count, e.seq, f"unknown event kind '{e.kind}'")
        if _content_hash(e.seq, e.run_id, e.kind, e.at, e.data, e.prev_hash) != e.hash:
            return VerifyReport(False, count, e.seq, "content does not match its hash")
        prev_seq, prev_hash = e.seq, e.hash
    return VerifyReport(True, count)
