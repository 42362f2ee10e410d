"""Approvals as data (R7): a request names exactly what is approved; the answer is bound to it.

An approver is any callable (sync or async) from an ``ApprovalRequest`` to ``Approved`` or
``Denied``. A request is either for a *plan* (bound to the plan hash) or for one *call* at run
time (bound to the plan hash, the step id and the SHA-256 of the resolved arguments). The
executor checks the answer against what it is about to run, and refuses a mismatch.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from planlock.approval._endorse import Endorsable, Endorsement, make_endorsements
from planlock.core import iso_ms
from planlock.errors import ApprovalRequired

if TYPE_CHECKING:
    from planlock.core import Plan
    from planlock.policy import Reason, RiskReport, StepAssessment

__all__ = [
    "ApprovalRequest",
    "Approved",
    "Approver",
    "Decision",
    "Denied",
    "approve_all",
    "ask_approver",
    "auto_approve",
    "binding_problem",
]


@dataclass(frozen=True)
class ApprovalRequest:
    """What a person (or policy) is asked to approve."""

    run_id: str
    plan: Plan
    plan_hash: str
    """SHA-256 of the plan's canonical JSON: the answer must name it."""
    report: RiskReport
    """Effects, the steps that need approval and why, and untrusted-to-sensitive flows."""
    step_id: str | None = None
    """For a call (run-time) request: the step about to run."""
    args_hash: str | None = None
    """For a call request: SHA-256 of the step's resolved arguments (canonical JSON)."""
    args: dict[str, Any] | None = None
    """For a call request: the exact arguments, as they will be passed."""
    provenance: dict[str, list[str]] | None = None
    """For a call request: where each argument came from."""
    reasons: tuple[Reason, ...] = ()
    """For a call request: why this call needs a person."""
    id: str = ""
    """Set when the request is stored in a queue."""
    endorsable: tuple[Endorsable, ...] = ()
    """For a call request: the values a person may endorse while approving it (each parameter
    whose untrusted or chosen value is why a person is asked), bound to hash and source."""

    @property
    def kind(self) -> Literal["plan", "call"]:
        return "call" if self.step_id is not None else "plan"

    @property
    def risks(self) -> tuple[StepAssessment, ...]:
        """The steps that need a person's approval on this plan."""
        return self.report.needs_plan_approval

    @property
    def effects(self) -> tuple[str, ...]:
        return self.report.effects

    def approve(
        self, by: str, via: str, reason: str = "", expires_at: str | None = None
    ) -> Approved:
        return Approved(
            self.plan_hash, by, via, reason, iso_ms(), self.step_id, self.args_hash, expires_at
        )

    def deny(self, by: str, via: str, reason: str) -> Denied:
        return Denied(self.plan_hash, by, via, reason, iso_ms(), self.step_id, self.args_hash)

    def endorse(
        self,
        by: str,
        via: str,
        label: str | Mapping[str, str],
        *,
        any_target: bool = False,
        expires_at: str | None = None,
        reason: str = "",
    ) -> Approved:
        """Approve this call and endorse the values it offers (``endorsable``): ``label`` for
        every one, or ``{param: label}`` for some. The endorsements ride on the grant; the run
        keeps and journals them (``endorsement_added``), so the same value from the same source
        reaches this tool's parameter (any sensitive one with ``any_target``) without asking."""
        labels = (
            label
            if isinstance(label, Mapping)
            else dict.fromkeys((o.param for o in self.endorsable), label)
        )
        made = make_endorsements(
            self.endorsable,
            labels,
            by=by,
            via=via,
            any_target=any_target,
            expires_at=expires_at,
        )
        granted = self.approve(by, via, reason or "approved and endorsed")
        return replace(granted, endorsements=made)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "run_id": self.run_id,
            "plan_hash": self.plan_hash,
            "plan": self.plan.canonical(),
            "report": self.report.to_json(),
            "step_id": self.step_id,
            "args_hash": self.args_hash,
            "args": self.args,
            "provenance": self.provenance,
            "reasons": [r.to_json() for r in self.reasons],
            "endorsable": [o.to_json() for o in self.endorsable],
        }


@dataclass(frozen=True, slots=True)
class Approved:
    """A grant, bound to the plan hash (and the step and argument hash for a call)."""

    plan_hash: str
    by: str
    via: str
    reason: str = ""
    at: str = field(default_factory=iso_ms)
    step_id: str | None = None
    args_hash: str | None = None
    expires_at: str | None = None
    """ISO 8601 UTC; a grant used after this is refused."""
    approved: Literal[True] = True
    endorsements: tuple[Endorsement, ...] = ()
    """Values the person endorsed with this grant (``ApprovalRequest.endorse``); journaled as
    ``endorsement_added`` events of their own, not in the grant's JSON."""

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k != "endorsements"}


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal, with the reason."""

    plan_hash: str
    by: str
    via: str
    reason: str
    at: str = field(default_factory=iso_ms)
    step_id: str | None = None
    args_hash: str | None = None
    approved: Literal[False] = False

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


Decision = Approved | Denied
Approver = Callable[[ApprovalRequest], "Decision | Awaitable[Decision]"]


def binding_problem(decision: Decision, request: ApprovalRequest) -> str | None:
    """Why ``decision`` cannot be used for ``request`` (R7), or None if it can."""
    if decision.plan_hash != request.plan_hash:
        return f"the answer names plan {decision.plan_hash[:12]}, not {request.plan_hash[:12]}"
    if decision.step_id != request.step_id:
        return f"the answer is for step {decision.step_id}, not {request.step_id}"
    if decision.args_hash != request.args_hash:
        return "the answer is for other arguments than the call's"
    if isinstance(decision, Approved) and decision.expires_at and _expired(decision.expires_at):
        return f"the grant expired at {decision.expires_at}"
    return None


def bound_endorsements(decision: Decision, request: ApprovalRequest) -> tuple[Endorsement, ...]:
    """The endorsements a grant carries that are bound to what ``request`` offered (same value
    hash and source, this call's target or none); any other is left out. A denial, or an answer
    bound to another call, endorses nothing."""
    if not isinstance(decision, Approved) or binding_problem(decision, request) is not None:
        return ()
    return tuple(
        e
        for e in decision.endorsements
        if any(
            (o.value_hash, o.source) == (e.value_hash, e.source) and e.target in (None, o.target)
            for o in request.endorsable
        )
    )


def _expired(stamp: str) -> bool:
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return True  # an unreadable expiry is treated as expired
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when < datetime.now(UTC)


def auto_approve(request: ApprovalRequest) -> Decision:
    """Risk-based, for unattended runs: never grants anything that needs a person."""
    if request.kind == "call":
        raise ApprovalRequired([r.message for r in request.reasons])
    raise ApprovalRequired([s.reason for s in request.risks] or ["a call will need a person"])


def approve_all(by: str = "operator") -> Callable[[ApprovalRequest], Decision]:
    """Grant every request the policy lets a person grant (deny rules still win)."""

    def approver(request: ApprovalRequest) -> Decision:
        return request.approve(by, "approve-all")

    return approver


async def ask_approver(approver: Approver, request: ApprovalRequest) -> Decision:
    """Call a sync or async approver."""
    answer = approver(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer
