"""The run-time policy check of a durable run, with endorsements looked up in a DBOS step.

``call_checker`` (the queue's and the in-process engine's check) asks an ``EndorsementStore``
whether a person endorsed a value. Whether an endorsement is live depends on the clock and on
other processes (a person may revoke one), so a replayed workflow must see the answer the first
run saw. The DBOS engine checks a call in two passes:

1. with a store that raises if asked (``_probe``): a call that offers nothing to endorse is decided
   without any lookup (and without a DBOS step);
2. otherwise a DBOS step at the call's reserved id runs the check against the real store through
   ``capture_lookups`` and returns what each lookup found (JSON); the workflow then decides
   over that recorded answer (``replayed_check``), journaling each endorsement used once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planlock.agent import Prepared, call_checker
from planlock.approval import ApprovalRequest, Denied, Endorsement, EndorsementStore, Note
from planlock.errors import UsageError
from planlock.execution import StepCall

__all__ = ["Lookups", "NeedsLookup", "capture_lookups", "check_without_lookup", "replayed_check"]

Lookups = list[list[Any]]
"""What a check's lookups found: ``[value_hash, source, target, endorsement JSON or None]``."""
Verdict = ApprovalRequest | Denied | None


class NeedsLookup(Exception):
    """The check must ask the endorsement store."""


Find = Callable[[str, str, str], Endorsement | None]


class _Store:
    """An ``EndorsementStore`` for one check: ``find`` answers by the given function."""

    def __init__(self, find: Find) -> None:
        self._find = find

    def find(
        self,
        value_hash: str,
        source: str,
        target: str,
        now: str | None = None,  # noqa: ARG002 (the lookup's own clock, or the recorded answer)
    ) -> Endorsement | None:
        return self._find(value_hash, source, target)

    def add(self, endorsement: Endorsement) -> Endorsement:  # noqa: ARG002
        raise UsageError("a run-time check adds no endorsement")


def _probe(_value_hash: str, _source: str, _target: str) -> Endorsement | None:
    raise NeedsLookup


def check_without_lookup(prepared: Prepared, call: StepCall) -> Verdict:
    """The check when it needs no endorsement lookup; raises NeedsLookup when it does."""
    return call_checker(prepared, _Store(_probe))(call)


def capture_lookups(prepared: Prepared, store: EndorsementStore, call: StepCall) -> Lookups:
    """Run the check against ``store`` (inside a DBOS step) and return what it found."""
    found: Lookups = []

    def capture(value_hash: str, source: str, target: str) -> Endorsement | None:
        hit = store.find(value_hash, source, target)
        found.append([value_hash, source, target, None if hit is None else hit.to_json()])
        return hit

    call_checker(prepared, _Store(capture))(call)
    return found


def replayed_check(prepared: Prepared, found: Lookups, note: Note) -> Callable[[StepCall], Verdict]:
    """The check over recorded lookups; each endorsement used is journaled through ``note``."""
    recorded = {(str(v), str(s), str(t)): e for v, s, t, e in found}

    def replay(value_hash: str, source: str, target: str) -> Endorsement | None:
        hit = recorded.get((value_hash, source, target))
        return None if hit is None else Endorsement.from_json(hit)

    return call_checker(prepared, _Store(replay), note)
