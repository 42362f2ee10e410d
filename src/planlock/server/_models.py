"""Request and response bodies of ``planlock serve`` (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from planlock.server._limits import json_problem

__all__ = [
    "ApprovalDetail",
    "ApprovalSummary",
    "DecisionIn",
    "DecisionOut",
    "DenyIn",
    "EndorsableOut",
    "EndorseIn",
    "EndorseOut",
    "EndorsementOut",
    "ErrorOut",
    "EventOut",
    "FlowOut",
    "GoalIn",
    "GraphEdge",
    "GraphNode",
    "GraphOut",
    "IssueOut",
    "MeOut",
    "PlanIn",
    "ReasonOut",
    "ReportOut",
    "RunDetail",
    "RunSummary",
    "StepAssessmentOut",
    "SubmittedOut",
    "VerifyOut",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @field_validator("*")
    @classmethod
    def json_safe(cls, value: Any, info: ValidationInfo) -> Any:
        """Every field of every request body: JSON that can be hashed and journaled."""
        return _finite(value, f"$.{info.field_name}")


def _finite(value: Any, where: str) -> Any:
    """``value`` unchanged, unless it cannot be hashed and journaled as JSON (``NaN``, an
    infinity, a lone surrogate) or is nested deeper than ``MAX_DEPTH``."""
    problem = json_problem(value, where)
    if problem is not None:
        raise ValueError(problem)
    return value


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)


class PlanIn(_In):
    """A plan to validate, assess and queue."""

    plan: dict[str, Any] | list[Any]
    """The plan: canonical form (an object) or the seed form (an array of steps)."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Trusted inputs the plan's placeholders refer to."""


class GoalIn(_In):
    """A goal for the server's planner model; the plan it writes is queued like a submitted one."""

    goal: str = Field(min_length=1)
    """What to do (at most the server's ``max_goal_chars``, 8,000 by default)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Trusted context: becomes the run's inputs (the planner sees names and shapes only)."""


class DecisionIn(_In):
    """An approval, bound to what the approver saw."""

    plan_hash: str = Field(min_length=64, max_length=64)
    """The plan hash shown with the request: a different one is refused (409)."""
    args_hash: str | None = None
    """For a call request: the arguments' hash shown with it (must match)."""
    reason: str = Field(default="", max_length=2000)


class DenyIn(DecisionIn):
    """A denial: the reason is required."""

    reason: str = Field(min_length=1, max_length=2000)


class EndorseIn(DecisionIn):
    """Approve a call and endorse the value(s) it offers, bound to what the approver saw."""

    label: str = Field(min_length=1, max_length=200)
    """What the value is: ``landlord``, ``Sarah``."""
    params: list[str] | None = None
    """Which of the call's endorsable parameters (default: every one)."""
    any_target: bool = False
    """Let the value reach any sensitive parameter, not only this call's tool and parameter."""


class IssueOut(_Out):
    code: str
    path: str
    message: str


class ErrorOut(_Out):
    """Every error response."""

    detail: str
    issues: list[IssueOut] = Field(default_factory=list)
    """For an invalid plan: every validation issue with its JSON path."""


class SubmittedOut(_Out):
    run_id: str
    status: str
    """``pending_approval``, or ``approved`` when nothing in the plan needs a person."""
    approval_id: str | None
    plan_hash: str
    plan: dict[str, Any]
    """The plan as queued (canonical form)."""


class ReasonOut(_Out):
    key: str
    action: str
    message: str
    at_call: bool
    certain: bool
    params: list[str]


class StepAssessmentOut(_Out):
    step: str
    tool: str
    effect: str
    action: str
    reasons: list[ReasonOut]


class FlowOut(_Out):
    """Untrusted data reaching a sensitive parameter."""

    step: str
    tool: str
    param: str
    sources: list[str]
    action: str


class ReportOut(_Out):
    """The risk report: effects, steps with concerns, untrusted-to-sensitive flows."""

    plan_hash: str
    effects: list[str]
    steps: list[StepAssessmentOut]
    flows: list[FlowOut]
    denied: list[str]


class GraphNode(_Out):
    id: str
    tool: str
    effect: str
    action: str
    """What the policy says about the step: allow, require_approval or deny."""
    level: int
    """Longest dependency chain before it (0 for a step with no dependency)."""


class GraphEdge(_Out):
    source: str
    target: str


class GraphOut(_Out):
    """The plan's dependency graph (steps, and which step's output each one uses)."""

    nodes: list[GraphNode]
    edges: list[GraphEdge]


class EndorsableOut(_Out):
    param: str
    value_hash: str
    """SHA-256 of the value's canonical JSON."""
    source: str
    """Where the value comes from, without step ids: ``tool:NAME#PATH``."""
    target: str
    """``tool.param`` of the call."""


class ApprovalSummary(_Out):
    id: str
    run_id: str
    kind: Literal["plan", "call", "resume", "revision"]
    """``plan``: approve the whole plan; ``call``: approve one call at run time; ``resume``: run
    again a non-idempotent call that was interrupted after it started (deny: it is marked
    failed); ``revision``: a replanned run's revision beyond the approved envelope."""
    status: str
    """``pending``, ``approved``, ``denied``, ``used`` or ``expired``."""
    plan_hash: str
    """SHA-256 of the plan's canonical JSON: an answer must name it."""
    step_id: str | None
    """For a call request: the step about to run."""
    args_hash: str | None
    """For a call request: SHA-256 of the exact arguments; an answer must name it."""
    created_at: str
    expires_at: str | None
    submitted_by: str | None
    goal: str
    why: list[str]
    """The reasons a person is asked."""


class ApprovalDetail(ApprovalSummary):
    decided_by: str | None
    decided_at: str | None
    reason: str | None
    plan: dict[str, Any]
    report: ReportOut
    graph: GraphOut
    inputs: dict[str, Any]
    args: dict[str, Any] | None
    """For a call request: the exact arguments."""
    provenance: dict[str, list[str]] | None
    endorsable: list[EndorsableOut] = Field(default_factory=list)
    """For a call request: the values an approver may endorse with their approval."""
    warnings: list[IssueOut] = Field(default_factory=list)
    """Goal coverage: the parts of the goal that no step of the plan seems to serve (advice for
    the approver; they do not make the plan invalid)."""


class DecisionOut(_Out):
    approval_id: str
    run_id: str
    approved: bool
    by: str
    reason: str
    plan_hash: str
    step_id: str | None
    args_hash: str | None
    at: str


class EndorsementOut(_Out):
    id: str
    value_hash: str
    source: str
    target: str | None
    """``tool.param`` it may reach; null: any sensitive parameter."""
    label: str
    by: str
    via: str
    at: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None


class EndorseOut(DecisionOut):
    endorsements: list[EndorsementOut]


class RunSummary(_Out):
    run_id: str
    status: str
    """``pending_approval``, ``approved``, ``running``, ``waiting_approval``,
    ``waiting_resume``, ``succeeded``, ``failed``, ``denied``, ``refused``, ``rejected`` or
    ``expired``."""
    state: str
    """What ``planlock runs`` shows: queued, awaiting approval, running, stranded (a worker holds
    it and its lease expired), waiting for resume, done, failed, denied or expired."""
    plan_hash: str
    goal: str
    submitted_by: str
    submitted_at: str
    claimed_by: str | None
    lease_expires_at: str | None
    """When the lease of the worker holding the run expires (renewed while it runs)."""
    finished_at: str | None


class EventOut(_Out):
    seq: int
    run_id: str
    kind: str
    at: str
    data: dict[str, Any]
    hash: str


class RunDetail(RunSummary):
    plan: dict[str, Any]
    inputs: dict[str, Any]
    approvals: list[ApprovalSummary]
    events: list[EventOut]
    """The run's journal events, without its ``http_request`` events (the journal has them)."""


class VerifyOut(_Out):
    ok: bool
    """Whether the whole hash chain recomputes."""
    events: int
    """Events checked."""
    first_bad: int | None
    """The sequence number of the first event that does not match."""
    reason: str


class MeOut(_Out):
    name: str
    roles: list[str]
