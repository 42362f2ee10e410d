"""Plans and answers: what a plan source gives for a prompt, and the reply a run leaves.

The reply is planlock's own ``render_reply``: built from executed results only (a step that did
not run reads ``[not done: ...]``, and a run that did not succeed says so first), with values of
untrusted origin quoted and their links defanged. AgentDojo's utility checks look for facts
(names, dates, amounts) in the reply; quoting keeps those as the tools gave them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from planlock.core import Plan
from planlock.execution import RunResult, render_reply
from planlock.tools import LLM_TOOL, ToolRegistry

__all__ = ["PlanSource", "PlannedTask", "answer_template", "render_answer"]


@dataclass(frozen=True)
class PlannedTask:
    """What a planner produced for a prompt: the plan and how to word the answer."""

    plan: Plan
    answer: str | None = None
    """A template for the final answer (``{{steps.<id>.output...}}`` placeholders), or None:
    then the output of the last ``llm`` step is the answer."""
    task_id: str | None = None


class PlanSource(Protocol):
    """Gives a plan for a prompt (a plan corpus, or a real planner)."""

    name: str

    def plan_for(self, prompt: str, registry: ToolRegistry, suite: str) -> PlannedTask | str:
        """The plan, or a reason why there is none."""
        ...


def answer_template(planned: PlannedTask) -> str | None:
    """The task's answer template; without one, the output of the plan's last ``llm`` step (None
    when it has none: the reply then lists the steps that ran)."""
    if planned.answer is not None:
        return planned.answer
    for step in reversed(planned.plan.steps):
        if step.tool == LLM_TOOL:
            return f"{{{{steps.{step.id}.output}}}}"
    return None


def render_answer(planned: PlannedTask, result: RunResult, registry: ToolRegistry) -> str:
    """The reply to the user after ``result``, a run of ``planned.plan`` (``render_reply``)."""
    return render_reply(answer_template(planned), planned.plan, result, registry)
