"""Anchoring the journal's head outside the database.

The hash chain detects any edit *inside* the chain, but not the loss of its tail: delete the
last events and what remains is still a valid chain. Nor does it stop someone who can write the
database from rewriting it consistently (edit an event, recompute every later hash). Both are
detected by comparing the chain with records of its head (``seq`` and ``hash``) kept elsewhere:

- an **anchor**: one JSON object ``{"seq", "hash", "at"}`` (plus ``"mac"`` and ``"key_id"``
  when a key is set), appended as one line to an anchor file, carried by the queue's webhook,
  or printed by ``planlock journal head --json``;
- a **checkpoint** event, with a key only: the journal records ``checkpoint`` events whose data
  is the head before them and its MAC (HMAC-SHA256 under the key). Rewriting the chain changes
  the hashes they cover, and without the key the MACs cannot be recomputed.

``check_anchored`` verifies the chain, then every checkpoint (with the key), then every anchor:
an anchor beyond the journal's last event means a truncated tail; a different hash at the
anchor's seq means a rewritten chain.

Configuration (``Anchoring.from_env``): ``PLANLOCK_ANCHOR_KEY`` (the key itself) or
``PLANLOCK_ANCHOR_KEY_FILE`` (a file holding it), at least 16 bytes; ``PLANLOCK_ANCHOR_FILE``
(where anchors are appended); ``PLANLOCK_CHECKPOINT_EVERY`` (default 100).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from planlock.core import canonical_json
from planlock.errors import UsageError
from planlock.journal._events import Event, Head, VerifyReport, verify_events

__all__ = [
    "ANCHOR_FILE_ENV",
    "ANCHOR_KEY_ENV",
    "ANCHOR_KEY_FILE_ENV",
    "CHECKPOINT_EVERY_ENV",
    "CHECKPOINT_RUN",
    "Anchor",
    "Anchoring",
    "anchor_mac",
    "append_anchor",
    "check_anchored",
    "checkpoint_data",
    "key_id",
    "read_anchors",
]

ANCHOR_KEY_ENV = "PLANLOCK_ANCHOR_KEY"
ANCHOR_KEY_FILE_ENV = "PLANLOCK_ANCHOR_KEY_FILE"
ANCHOR_FILE_ENV = "PLANLOCK_ANCHOR_FILE"
CHECKPOINT_EVERY_ENV = "PLANLOCK_CHECKPOINT_EVERY"
CHECKPOINT_RUN = "journal"
"""The run id of ``checkpoint`` events (they belong to the journal, not to a run)."""
DEFAULT_EVERY = 100
MIN_KEY_BYTES = 16


def key_id(key: bytes) -> str:
    """A short name for a key (an HMAC of a constant): tells "another key" from "forged"."""
    return hmac.new(key, b"planlock anchor key id", hashlib.sha256).hexdigest()[:16]


def anchor_mac(key: bytes, seq: int, digest: str) -> str:
    """HMAC-SHA256 under ``key`` of the head ``(seq, hash)``."""
    message = canonical_json({"planlock_anchor": 1, "seq": seq, "hash": digest})
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Anchor:
    """A record of the journal's head, kept outside the journal."""

    seq: int
    hash: str
    at: str = ""
    """When it was taken (ISO 8601 UTC)."""
    mac: str | None = None
    """HMAC-SHA256 of ``(seq, hash)`` under the anchor key, when one is set."""
    key_id: str | None = None

    @classmethod
    def of(cls, head: Head, key: bytes | None) -> Anchor:
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        if key is None:
            return cls(head.seq, head.hash, at)
        return cls(head.seq, head.hash, at, anchor_mac(key, head.seq, head.hash), key_id(key))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "hash": self.hash, "at": self.at}
        if self.mac is not None:
            out |= {"mac": self.mac, "key_id": self.key_id}
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Anchor:
        """An anchor from its JSON (a line of an anchor file, a webhook's ``journal_head``)."""
        ok = (
            isinstance(obj, dict)
            and type(obj.get("seq")) is int
            and obj["seq"] >= 0
            and isinstance(obj.get("hash"), str)
            and all(isinstance(obj.get(k), str | None) for k in ("at", "mac", "key_id"))
        )
        if not ok:
            raise UsageError(f"{where}: not an anchor (want an object with seq and hash)")
        return cls(obj["seq"], obj["hash"], obj.get("at") or "", obj.get("mac"), obj.get("key_id"))


def checkpoint_data(head: Head, key: bytes) -> dict[str, Any]:
    """The data of a ``checkpoint`` event that follows ``head``."""
    return {
        "seq": head.seq,
        "hash": head.hash,
        "mac": anchor_mac(key, head.seq, head.hash),
        "key_id": key_id(key),
    }


def _read_key(environ: Mapping[str, str]) -> bytes | None:
    text, path = environ.get(ANCHOR_KEY_ENV), environ.get(ANCHOR_KEY_FILE_ENV)
    if text and path:
        raise UsageError(f"set {ANCHOR_KEY_ENV} or {ANCHOR_KEY_FILE_ENV}, not both")
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the anchor key file {path}: {exc.strerror}") from None
    elif text:
        key = text.encode()
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the anchor key is too short: at least {MIN_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class Anchoring:
    """When and where a journal anchors its head. Nothing happens unless a key or a file is set."""

    key: bytes | None = None
    """With a key, the journal records keyed ``checkpoint`` events; without, none."""
    file: Path | None = None
    """Where each anchor is appended (one JSON line each)."""
    every: int = DEFAULT_EVERY
    """Anchor after every ``every``-th event (by seq), and on ``Journal.close``."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise UsageError(f"checkpoints every {self.every} events: must be at least 1")
        if self.key is not None and len(self.key) < MIN_KEY_BYTES:
            raise UsageError(f"the anchor key is too short: at least {MIN_KEY_BYTES} bytes")

    @property
    def enabled(self) -> bool:
        return self.key is not None or self.file is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Anchoring:
        env = os.environ if environ is None else environ
        every = env.get(CHECKPOINT_EVERY_ENV) or str(DEFAULT_EVERY)
        if not every.isdigit():
            raise UsageError(f"{CHECKPOINT_EVERY_ENV} must be a whole number, not {every!r}")
        file = env.get(ANCHOR_FILE_ENV)
        return cls(_read_key(env), Path(file) if file else None, int(every))

    @classmethod
    def key_from_env(cls, environ: Mapping[str, str] | None = None) -> bytes | None:
        return _read_key(os.environ if environ is None else environ)


def read_anchors(path: str | Path) -> list[Anchor]:
    """The anchors in a file of JSON lines (blank lines are skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read anchor file {path}: {exc.strerror}") from None
    anchors = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{number}: not JSON") from None
        anchors.append(Anchor.from_json(obj, f"{path}:{number}"))
    return anchors


def append_anchor(path: str | Path, anchor: Anchor) -> None:
    """Append ``anchor`` as one line, in one write, synced to disk."""
    line = (json.dumps(anchor.to_json(), sort_keys=True) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write anchor file {path}: {exc.strerror}") from None
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _bad(count: int, seq: int | None, reason: str, checked: int = 0) -> VerifyReport:
    return VerifyReport(False, count, seq, reason, checkpoints=checked)


def _checkpoint_problem(e: Event, by_seq: Mapping[int, Event], key: bytes | None) -> str | None:
    d = e.data
    seq, digest = d.get("seq"), d.get("hash")
    if type(seq) is not int or not isinstance(digest, str):
        return "a checkpoint without seq and hash"
    target = by_seq.get(seq)
    if seq >= e.seq or (seq > 0 and target is None):
        return f"the checkpoint names event {seq}, which is not before it"
    if target is not None and target.hash != digest:
        return f"the checkpoint records another hash for event {seq}: the chain was rewritten"
    if key is None:
        return None
    if d.get("key_id") != key_id(key):
        return f"the checkpoint was made with another key (key id {d.get('key_id')})"
    if not hmac.compare_digest(str(d.get("mac")), anchor_mac(key, seq, digest)):
        return "the checkpoint's MAC does not match: the chain was rewritten"
    return None


def check_anchored(
    events: Sequence[Event], anchors: Iterable[Anchor] = (), key: bytes | None = None
) -> VerifyReport:
    """Verify the chain, its ``checkpoint`` events (their MACs when ``key`` is given) and that
    every anchor still matches: its event exists (else the tail was truncated) and has the
    anchored hash (else the chain was rewritten)."""
    report = verify_events(events)
    if not report.ok:
        return report
    count = report.count
    by_seq = {e.seq: e for e in events}
    end = events[-1].seq if events else 0
    checked = 0
    for e in events:
        if e.kind == "checkpoint":
            problem = _checkpoint_problem(e, by_seq, key)
            if problem:
                return _bad(count, e.seq, f"{problem} (checkpoint at event {e.seq})", checked)
            checked += key is not None
    seen = 0
    for seen, a in enumerate(anchors, 1):
        where = f"anchor {seen} (event {a.seq}, taken {a.at or 'at an unknown time'})"
        if key is not None and a.mac is not None:
            if a.key_id != key_id(key):
                return _bad(count, None, f"{where} was made with another key", checked)
            if not hmac.compare_digest(a.mac, anchor_mac(key, a.seq, a.hash)):
                return _bad(count, None, f"{where}: its MAC does not match (forged)", checked)
        if a.seq > end:
            reason = (
                f"tail truncated: {where} records event {a.seq}, but the journal ends at "
                f"event {end}"
            )
            return _bad(count, end + 1, reason, checked)
        if a.seq > 0 and by_seq[a.seq].hash != a.hash:
            reason = (
                f"chain rewritten: event {a.seq} has hash {by_seq[a.seq].hash[:16]}..., "
                f"{where} recorded {a.hash[:16]}..."
            )
            return _bad(count, a.seq, reason, checked)
    return VerifyReport(True, count, checkpoints=checked, anchors=seen)
