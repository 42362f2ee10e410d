"""What the harness watches while planlock runs a query: every call the executor started,
with its arguments' provenance labels, every step's output, and what a person approved (from
the journal's events), and the step being executed for the in-step models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planlock.core import normalize_path
from planlock.journal import Event
from planlock.tools import LLM_TOOL

__all__ = ["StepWatch", "WatchedCall"]


@dataclass(frozen=True)
class WatchedCall:
    """One call the executor started (a ``step_started`` event): the step, its tool, the
    resolved arguments and each argument's provenance labels (``step:<id>``, ``chosen:<id>``...)."""

    step: str
    tool: str
    args: dict[str, Any]
    provenance: dict[str, list[str]]
    item: int | None = None
    condition: tuple[str, ...] = ()
    """The steps whose outputs the step's condition (``when``) read, when it has one."""


@dataclass
class StepWatch:
    """The step being executed, for in-step LLMs that answer per step (oracle, worst case), and
    what the harness needs to know where data went in this query: every call started with its
    provenance, every step's output, and the calls a person approved."""

    task_id: str | None = None
    step_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, list[str]] = field(default_factory=dict)
    """The provenance labels of each argument of the current ``llm`` call."""
    item: int | None = None
    """The item of the current ``llm`` call in a ``for_each`` step."""
    calls: list[WatchedCall] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    """The output of every finished step."""
    approved: set[str] = field(default_factory=set)
    """Steps whose call a person approved at run time."""
    endorsed: set[tuple[str, str]] = field(default_factory=set)
    """(step, parameter) whose value a person's endorsement let through."""
    plan_approved: bool = False
    """A person (not the policy) approved the plan."""
    generation: int = 0
    """Counts queries: what a consumer caches per query is keyed by it."""

    def reset(self, task_id: str | None) -> None:
        """Forget the last query (a new one starts)."""
        self.task_id, self.step_id, self.item = task_id, None, None
        self.args, self.provenance, self.outputs = {}, {}, {}
        self.calls, self.approved, self.endorsed, self.plan_approved = [], set(), set(), False
        self.generation += 1

    def note(self, event: Event) -> None:
        """Keep what ``event`` says about calls, outputs and approvals."""
        data = event.data
        if event.kind == "step_started":
            step, args = str(data["step"]), dict(data["args"])
            prov = {
                str(k): [str(x) for x in v] for k, v in dict(data.get("provenance", {})).items()
            }
            item = data.get("item")
            read = {_ref_step(str(k)) for k in dict(data.get("condition_values") or {})}
            condition = tuple(sorted(x for x in read if x is not None))
            call = WatchedCall(step, str(data.get("tool")), args, prov, item, condition)
            self.calls.append(call)
            if call.tool == LLM_TOOL:
                self.step_id, self.args, self.provenance, self.item = step, args, prov, item
        elif event.kind == "step_finished":
            self.outputs[str(data["step"])] = data.get("output")
        elif event.kind == "endorsement_used":
            self.endorsed.add((str(data.get("step")), str(data.get("param"))))
        elif event.kind == "approval_granted" and data.get("by") != "policy":
            if data.get("step_id") is None:
                self.plan_approved = True
            else:
                self.approved.add(str(data["step_id"]))


def _ref_step(text: str) -> str | None:
    """The step a placeholder's text names (``steps.<id>.output...``), or None."""
    parts = normalize_path(text).split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "steps" else None
