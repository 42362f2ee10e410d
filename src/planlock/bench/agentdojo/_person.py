"""The simulated person of an unattended benchmark, and the endorsements it keeps (issue 12).

``BenchApprover`` stands in for the person. A plan whose only concerns are run-time checks is
granted by the policy (no person); anything else is a request to a person, counted (one touch)
and answered by the mode:

- ``deny``: refuses it (fully autonomous);
- ``all``: grants it (a person who approves each call);
- ``endorse``: grants it, and when the call offers values to endorse (``request.endorsable``)
  endorses them with the grant: the run keeps the endorsements in its store, so a later call or
  task with the same value from the same source (saved payee, known contact) asks nobody.

``FrozenEndorsements`` is a read-only copy of the endorsements made on a suite's benign tasks:
the store attacked runs see. It finds what was endorsed and refuses anything new, so no value an
attacker planted can ever be endorsed by the simulation; the person is never asked to endorse in
a run over a frozen store either (``frozen``: it approves the call only).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from planlock.approval import (
    ApprovalRequest,
    Decision,
    Endorsement,
    EndorsementStore,
    MemoryEndorsements,
)
from planlock.errors import UsageError

__all__ = [
    "ENDORSE_LABEL",
    "PERSON",
    "ApproveMode",
    "BenchApprover",
    "FrozenEndorsements",
    "ask_summary",
    "count_asks",
]

ApproveMode = Literal["deny", "all", "endorse"]
PERSON = "simulated-person"
ENDORSE_LABEL = "vouched for by the simulated person"


@dataclass
class BenchApprover:
    """Stands in for the person (see the module docstring). ``asked`` holds one entry per touch:
    its kind, step, reasons (messages and keys) and the answer (approved, endorsed, denied)."""

    mode: ApproveMode = "deny"
    asked: list[dict[str, Any]] = field(default_factory=list)
    frozen: bool = False
    """The run's endorsement store is frozen: the person may approve, never endorse."""

    def __call__(self, request: ApprovalRequest) -> Decision:
        if request.kind == "plan" and not request.report.needs_plan_approval:
            return request.approve("policy", "policy", "only run-time checks; decided per call")
        if request.kind == "plan":
            keys = sorted(
                {
                    r.key
                    for s in request.risks
                    for r in s.reasons
                    if r.action == "require_approval" and r.certain and not r.at_call
                }
            )
        else:
            keys = sorted({r.key for r in request.reasons})
        endorse = self.mode == "endorse" and bool(request.endorsable) and not self.frozen
        answer = "denied" if self.mode == "deny" else "endorsed" if endorse else "approved"
        self.asked.append(
            {
                "kind": request.kind,
                "step": request.step_id,
                "reasons": [r.message for r in request.reasons]
                or [s.reason for s in request.risks],
                "keys": keys,
                "answer": answer,
            }
        )
        if answer == "endorsed":
            return request.endorse(PERSON, "bench", ENDORSE_LABEL)
        if answer == "approved":
            return request.approve(PERSON, "bench")
        return request.deny(PERSON, "bench", "an unattended run grants nothing")


def ask_summary(asked: Sequence[dict[str, Any]]) -> tuple[int, list[str]]:
    """The endorsements among a run's touches, and what each touch was about
    (``call flow:recipient``, ``plan effect:send``), in order."""
    endorsed = sum(a.get("answer") == "endorsed" for a in asked)
    return endorsed, [f"{a['kind']} {'+'.join(a.get('keys') or ['?'])}" for a in asked]


def count_asks(asks: Iterable[str]) -> str:
    """``call flow:recipient x2, plan effect:send`` (most frequent first)."""
    return ", ".join(k if n == 1 else f"{k} x{n}" for k, n in Counter(asks).most_common())


class FrozenEndorsements:
    """A read-only copy of endorsements (``EndorsementStore``): ``find`` works, ``add`` refuses."""

    def __init__(self, endorsements: Iterable[Endorsement] = ()) -> None:
        self._store = MemoryEndorsements(endorsements)

    @classmethod
    def of(cls, store: EndorsementStore | None) -> FrozenEndorsements:
        """A frozen copy of ``store``'s live endorsements, as they are now (a store that cannot
        list them, or None: nothing endorsed)."""
        listed = getattr(store, "list", None)
        return cls(listed() if callable(listed) else ())

    def find(
        self, value_hash: str, source: str, target: str, now: str | None = None
    ) -> Endorsement | None:
        return self._store.find(value_hash, source, target, now)

    def add(self, endorsement: Endorsement) -> Endorsement:
        raise UsageError(
            f"this endorsement store is frozen: {endorsement.source} cannot be endorsed here"
        )

    def list(self) -> list[Endorsement]:
        return self._store.list()
