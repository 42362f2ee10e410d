"""What the DAG walk and the engines exchange: a resolved call, its outcome, a run's result, and
the three functions an engine gives the walk (run a step, wait for an approval, record an event).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from planlock.approval import ApprovalRequest, Decision, Denied
from planlock.core import Ref, Sources, canonical_json, sha256_hex
from planlock.errors import StepFailed
from planlock.validation import CompiledStep

__all__ = [
    "CheckCall",
    "Lookup",
    "Record",
    "RunResult",
    "RunStep",
    "StepCall",
    "StepOutcome",
    "WaitForApproval",
]


@dataclass(frozen=True)
class StepCall:
    """A step with its arguments resolved, about to run."""

    run_id: str
    step: CompiledStep
    args: dict[str, Any]
    """Resolved arguments (JSON values)."""
    provenance: dict[str, list[str]]
    """For each argument, the sorted sources it came from."""
    item: int | None = None
    """In a ``for_each`` step: the index of the item this call is for."""

    @property
    def args_hash(self) -> str:
        return sha256_hex(canonical_json(self.args))


@dataclass(frozen=True)
class StepOutcome:
    """What running a step produced."""

    ok: bool
    output: Any = None
    error_kind: str | None = None
    """Stable class of failure: timeout, tool_error, invalid_arguments, invalid_output, ..."""
    error_type: str | None = None
    """The exception's class name, when there was one."""
    error: str | None = None
    """The detail (journaled only; never given to a planner prompt, R9)."""
    attempts: int = 1


@dataclass
class RunResult:
    """The outcome of a run."""

    run_id: str
    status: Literal["succeeded", "failed", "paused"]
    outputs: dict[str, Any] = field(default_factory=dict)
    """Output of every step that finished."""
    statuses: dict[str, str] = field(default_factory=dict)
    """``finished``, ``failed``, ``skipped`` or ``pending`` (after a pause) for every step."""
    failed_step: str | None = None
    error_kind: str | None = None
    error: str | None = None
    error_type: str | None = None
    plan_hash: str = ""
    provenance: dict[str, list[str]] = field(default_factory=dict)
    """Source labels of every finished step's output."""
    paused_at: str | None = None
    """The checkpoint step after which the walk paused (``status == "paused"``)."""
    replans: int = 0
    """How many times the plan was revised during the run."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Why each step the walk skipped did not run: ``"condition"`` (its ``when`` did not hold),
    ``"condition:<id>"`` (it reads the output of step ``<id>``, skipped by its condition) or
    ``"failed:<id>"`` (it depends on step ``<id>``, which failed). A step skipped by a condition
    neither succeeded nor failed: a run whose only other outcomes are skips succeeds."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> RunResult:
        """Raise StepFailed if the run failed; return self otherwise."""

        if not self.ok:
            raise StepFailed(self.failed_step or "?", self.error_kind or "?", self.error or "")
        return self


RunStep = Callable[[StepCall], Awaitable[StepOutcome]]
WaitForApproval = Callable[[ApprovalRequest], Awaitable[Decision]]
Record = Callable[[str, dict[str, Any]], Awaitable[None]]
Lookup = Callable[[Ref], tuple[Any, Sources]]
CheckCall = Callable[
    [StepCall], "ApprovalRequest | Denied | Awaitable[ApprovalRequest | Denied | None] | None"
]
"""Decides a concrete call: None runs it, a Denied stops it, a request asks for approval. An
engine may decide asynchronously (the DBOS engine looks endorsements up in a durable step)."""
