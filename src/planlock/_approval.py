"""Approvals as data (R7): a request names exactly what is approved; the answer is bound to it.

An approver is any callable (sync or async) from an ``ApprovalRequest`` to ``Approved`` or
``Denied``. The executor checks that the answer names the plan hash (and, for a run-time request,
the step and the hash of its arguments) of what it is about to run, and refuses otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from planlock._errors import ApprovalRequired
from planlock._plan import Plan

__all__ = [
    "ApprovalRequest",
    "Approved",
    "Approver",
    "Decision",
    "Denied",
    "StepRisk",
    "approve_all",
    "ask_approver",
    "auto_approve",
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class StepRisk:
    """Why one step needs a person."""

    step_id: str
    tool: str
    effect: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {
            "step": self.step_id,
            "tool": self.tool,
            "effect": self.effect,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ApprovalRequest:
    """What a person (or policy) is asked to approve."""

    run_id: str
    plan: Plan
    plan_hash: str
    """SHA-256 of the plan's canonical JSON: the answer must name it."""
    risks: tuple[StepRisk, ...]
    """The steps that need approval, and why; empty for a read-only plan."""
    effects: tuple[str, ...]
    """Every effect in the plan, sorted."""
    step_id: str | None = None
    """For a run-time request: the step about to run."""
    args_hash: str | None = None
    """For a run-time request: SHA-256 of the step's resolved arguments."""
    args: dict[str, Any] | None = None

    @property
    def needs_person(self) -> bool:
        return bool(self.risks)

    def approve(self, by: str, via: str, reason: str = "") -> Approved:
        return Approved(self.plan_hash, by, via, reason, _now(), self.step_id, self.args_hash)

    def deny(self, by: str, via: str, reason: str) -> Denied:
        return Denied(self.plan_hash, by, via, reason, _now(), self.step_id, self.args_hash)


@dataclass(frozen=True, slots=True)
class Approved:
    """A grant, bound to the plan hash (and step and argument hash for a run-time request)."""

    plan_hash: str
    by: str
    via: str
    reason: str = ""
    at: str = field(default_factory=_now)
    step_id: str | None = None
    args_hash: str | None = None
    approved: Literal[True] = True

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal, with the reason."""

    plan_hash: str
    by: str
    via: str
    reason: str
    at: str = field(default_factory=_now)
    step_id: str | None = None
    args_hash: str | None = None
    approved: Literal[False] = False

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


Decision = Approved | Denied
Approver = Callable[[ApprovalRequest], "Decision | Awaitable[Decision]"]


def auto_approve(request: ApprovalRequest) -> Decision:
    """Risk-based: a plan with only read-only steps passes; anything else needs a person."""
    if request.needs_person:
        raise ApprovalRequired([r.reason for r in request.risks])
    return request.approve("policy", "auto", "read-only plan")


def approve_all(by: str = "operator") -> Callable[[ApprovalRequest], Decision]:
    """Grant every request (``--approve all``): for tests and trusted batch use."""

    def approver(request: ApprovalRequest) -> Decision:
        return request.approve(by, "approve-all")

    return approver


async def ask_approver(approver: Approver, request: ApprovalRequest) -> Decision:
    """Call a sync or async approver."""
    answer = approver(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer
