"""Adaptive replanning that cannot be steered by untrusted text (R8, R9, R11).

Two strategies from the seed, made safe:

* **Replan on error.** When a step fails, the planner model is asked for a revised continuation.
  It sees the trusted goal and context shape, the plan, which steps finished (ids and status,
  never their output), the failed step and the *kind* of error. Never the exception text or a
  tool's output, which may carry injected words.
* **Checkpoint review.** After a step marked ``"checkpoint": true``, the model is asked whether
  the remaining plan still holds. It sees only *typed* values: outputs of trusted tools, and
  outputs of quarantined ``llm`` steps whose declared schema admits only numbers, booleans,
  enums and strings with a length bound.

A revision keeps every finished step (they are never re-run), is validated like any plan, and
is checked against the approval envelope: no tool, effect, sensitive flow, or extra side-effecting
call beyond what was approved. Inside the envelope it proceeds; beyond it needs a new approval.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planlock import telemetry
from planlock.core import Plan
from planlock.errors import LLMError
from planlock.execution import RunResult
from planlock.journal import Journal, llm_called
from planlock.llm import LLM, LLMRequest, Message, call_model
from planlock.planning._plan_schema import plan_schema
from planlock.planning._planner import plan_attributes
from planlock.planning._prompt import context_shape, describe_tools
from planlock.policy import RiskReport
from planlock.tools import LLM_TOOL, ToolRegistry
from planlock.validation import Analysis

__all__ = ["Envelope", "Replanner", "Revision", "diff_steps", "typed_value"]

MAX_TYPED_STRING = 120
"""The longest string bound a checkpoint may show the model (a short, bounded answer)."""

_SYSTEM = (
    "You revise plans for a deterministic executor. Some steps of an approved plan already ran. "
    "Reply with JSON only. New steps may use the same tools and the same placeholders as the "
    "plan: {{steps.<id>.output...}} for finished steps' outputs and {{<input>...}} for trusted "
    "context. Keep finished steps out of your reply: they are kept as they are and never run "
    "again. Use new step ids. Prefer the smallest change that reaches the goal.\n\nTools:\n"
)


@dataclass(frozen=True)
class Revision:
    """What the model proposed: the steps that replace everything not yet finished."""

    needs_revision: bool
    new_steps: tuple[dict[str, Any], ...] = ()
    gave_up: str | None = None
    """Set when the model answered ``cannot_plan`` (its text is not shown to anyone's planner)."""


def typed_value(schema: Any, depth: int = 0) -> bool:
    """Whether a schema admits only numbers, booleans, enums and bounded short strings."""
    if not isinstance(schema, dict) or depth > 6:
        return False
    if "enum" in schema or "const" in schema:
        return True
    kind = schema.get("type")
    if kind in ("number", "integer", "boolean", "null"):
        return True
    if kind == "string":
        return int(schema.get("maxLength", MAX_TYPED_STRING + 1)) <= MAX_TYPED_STRING
    if kind == "object":
        props = schema.get("properties", {})
        closed = schema.get("additionalProperties") is False or "additionalProperties" not in schema
        return closed and all(typed_value(p, depth + 1) for p in props.values())
    if kind == "array":
        bounded = int(schema.get("maxItems", 11)) <= 10
        return bounded and typed_value(schema.get("items"), depth + 1)
    return False


def diff_steps(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    """Which remaining steps a revision removed, added or changed (by id)."""
    before = {s["id"]: s for s in old}
    after = {s["id"]: s for s in new}
    return {
        "removed": [sid for sid in before if sid not in after],
        "added": [after[sid] for sid in after if sid not in before],
        "changed": [
            {"id": sid, "before": before[sid], "after": after[sid]}
            for sid in after
            if sid in before and before[sid] != after[sid]
        ],
    }


@dataclass(frozen=True)
class Envelope:
    """What an approval covered (R8): tools, effects, sensitive flows, side-effecting calls."""

    tools: frozenset[str]
    effects: frozenset[str]
    flows: frozenset[tuple[str, str, frozenset[str]]]
    """(tool, parameter, tools the untrusted data came from)."""
    side_effects: Counter[str]
    """How many calls of each non-read tool were approved."""

    @classmethod
    def of(cls, analysis: Analysis, report: RiskReport) -> Envelope:
        steps = analysis.steps
        flows = frozenset(
            (f.tool, f.param, frozenset(_tool_of(s, steps) for s in f.sources))
            for f in report.flows
        )
        calls: Counter[str] = Counter()
        for s in steps.values():
            if not s.tool.read_only:  # a for_each step may call its tool up to max_items times
                calls[s.tool.name] += (s.max_items or 1) if s.for_each is not None else 1
        return cls(
            frozenset(s.tool.name for s in steps.values()),
            frozenset(report.effects),
            flows,
            calls,
        )

    def beyond(self, other: Envelope) -> list[str]:
        """How ``other`` reaches beyond this envelope (empty when it stays inside)."""
        out = [f"new tool '{t}'" for t in sorted(other.tools - self.tools)]
        out += [f"new effect '{e}'" for e in sorted(other.effects - self.effects)]
        for tool, param, sources in sorted(other.flows, key=repr):
            if not any(t == tool and p == param and sources <= s for t, p, s in self.flows):
                out.append(
                    f"new untrusted flow into {tool}.{param} from {', '.join(sorted(sources))}"
                )
        for tool, n in sorted(other.side_effects.items()):
            if n > self.side_effects.get(tool, 0):
                out.append(
                    f"{n} call(s) of '{tool}' where {self.side_effects.get(tool, 0)} were approved"
                )
        return out


def _tool_of(label: str, steps: Mapping[str, Any]) -> str:
    kind, _, name = label.partition(":")
    return steps[name].tool.name if kind == "step" and name in steps else label


class Replanner:
    """Asks the planner model for revisions, with prompts built only from trusted data (R9)."""

    def __init__(
        self,
        llm: LLM,
        registry: ToolRegistry,
        *,
        journal: Journal | None = None,
        max_tokens: int = 768,
    ) -> None:
        self.llm = llm
        self.registry = registry
        self.journal = journal
        self.max_tokens = max_tokens
        self.system_prompt = _SYSTEM + describe_tools(registry)
        # Revisions are small continuations: no loops or conditions offered (a small model fills
        # in every optional field it is shown, and a revised loop is a new envelope question).
        full = plan_schema(registry, loops=False, conditions=False)
        steps_schema = full["anyOf"][0]
        self._steps_schema = {**steps_schema, "$defs": full.get("$defs", {})}
        defs = self._steps_schema.pop("$defs")
        items = steps_schema["properties"]["steps"]["items"]
        self.review_schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                "check": {"type": "string", "maxLength": 200},
                "needs_revision": {"type": "boolean"},
                "new_steps": {"type": "array", "items": items},
            },
            "required": ["needs_revision"],
            "additionalProperties": False,
            **({"$defs": defs} if defs else {}),
        }
        self.replan_schema = plan_schema(registry, loops=False, conditions=False)

    def _header(self, plan: Plan, context: Mapping[str, Any], result: RunResult) -> str:
        shape = "\n".join(context_shape(context)) or "none"
        statuses = "\n".join(f"- step {sid}: {status}" for sid, status in result.statuses.items())
        return (
            f"Goal: {plan.goal or '(not stated)'}\n\n"
            f"Trusted context (use as placeholders):\n{shape}"
            f"\n\nThe approved plan:\n{json.dumps(plan.canonical()['steps'])}\n\n"
            f"Step status:\n{statuses}\n"
        )

    async def after_failure(
        self,
        plan: Plan,
        context: Mapping[str, Any],
        result: RunResult,
        *,
        run_id: str,
        attempt: int,
    ) -> Revision:
        """A continuation after ``result.failed_step`` failed. Sees the error's kind only."""
        kind = result.error_kind or "error"
        if result.error_type:
            kind += f" ({result.error_type})"
        user = (
            self._header(plan, context, result)
            + f"\nStep {result.failed_step} failed with error kind: {kind}.\n"
            "Write the steps that should run instead of the failed and skipped ones, as "
            '{"steps": [...]}, or {"cannot_plan": "<why>"} if the goal cannot be reached.'
        )
        data = await self._ask(user, self.replan_schema, "replan", run_id, attempt)
        if "cannot_plan" in data:
            return Revision(needs_revision=True, gave_up="the planner could not revise the plan")
        return Revision(needs_revision=True, new_steps=tuple(data.get("steps", ())))

    async def at_checkpoint(
        self,
        plan: Plan,
        analysis: Analysis,
        context: Mapping[str, Any],
        result: RunResult,
        *,
        run_id: str,
        attempt: int,
    ) -> Revision:
        """Is the rest of the plan still valid? Sees typed values only."""
        steps = {s["id"]: s for s in plan.canonical()["steps"]}
        seen: list[str] = []
        for sid, output in result.outputs.items():
            step = analysis.steps[sid]
            if step.tool.name == LLM_TOOL:
                schema = plan.steps[step.index].args.get("output_schema") or {"type": "string"}
                shown = typed_value(schema)
            else:
                shown = step.tool.trusted_output
            call = f"step {sid}: {step.tool.name}({json.dumps(steps[sid]['args'])})"
            seen.append(f"- {call} returned {json.dumps(output) if shown else '(not shown)'}")
        remaining = [
            f"- step {s['id']}: {s['tool']}({json.dumps(s['args'])})"
            for s in steps.values()
            if result.statuses.get(s["id"]) == "pending"
        ]
        shape = "\n".join(context_shape(context)) or "none"
        user = (
            f"Goal: {plan.goal or '(not stated)'}\n\n"
            f"Trusted context (use as placeholders):\n{shape}\n\n"
            f"Checkpoint after step {result.paused_at}. "
            "Finished steps and what they returned (typed values only):\n"
            + "\n".join(seen)
            + "\n\nSteps still to run:\n"
            + ("\n".join(remaining) or "none")
            + "\n\nGiven what the finished steps returned, do the steps still to run do what the "
            'goal asks? If yes, reply {"check": "<short reason>", "needs_revision": false}. If '
            'not, reply {"check": "<short reason>", "needs_revision": true, "new_steps": [...]} '
            "where new_steps do what the goal asks instead (any tool of the list)."
        )
        data = await self._ask(user, self.review_schema, "checkpoint", run_id, attempt)
        needs = bool(data.get("needs_revision"))
        return Revision(
            needs_revision=needs, new_steps=tuple(data.get("new_steps", ())) if needs else ()
        )

    async def _ask(
        self, user: str, schema: dict[str, Any], purpose: str, run_id: str, attempt: int
    ) -> dict[str, Any]:
        request = LLMRequest(
            messages=(Message("system", self.system_prompt), Message("user", user)),
            purpose=purpose,
            json_schema=schema,
            max_tokens=self.max_tokens,
        )
        attributes = plan_attributes(self.llm, run_id, purpose)
        with telemetry.span("plan", attributes, kind="plan", run_id=run_id):
            reply = await call_model(self.llm, request)
        if self.journal is not None:
            event = llm_called(purpose, self.llm, request, reply, attempt=attempt)
            self.journal.record(run_id, "llm_called", event)
        try:
            data = json.loads(reply.text)
        except json.JSONDecodeError as exc:
            raise LLMError(self.llm.name, f"{purpose} reply is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LLMError(self.llm.name, f"{purpose} reply is not a JSON object")
        return data
