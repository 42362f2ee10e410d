"""The risk report: what a plan will do, and what a person must approve, before anything runs.

Provenance is computed on the DAG with the same template resolution the executor uses, so the
static flows are exactly the run-time ones (R5, R6). Argument conditions are decided statically
only where the argument is a literal; otherwise the run decides them on the concrete values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planlock.core import Lit, Plan, Ref, Sources, resolve
from planlock.policy._policy import Action, Policy, Reason, Verdict, evaluate
from planlock.tools import LLM_TOOL, ToolRegistry, effect_rank
from planlock.validation import (
    CHOSEN,
    Analysis,
    CompiledStep,
    analyse,
    expand_items,
    ref_sources,
    trusted_label,
)

__all__ = ["Flow", "RiskReport", "StepAssessment", "assess", "label_trust"]


@dataclass(frozen=True, slots=True)
class Flow:
    """Untrusted data reaching a sensitive parameter."""

    step_id: str
    tool: str
    param: str
    sources: tuple[str, ...]
    """The untrusted source labels (``step:<id>``), or for a value an llm step chose among
    trusted values, the ``chosen:<id>`` labels."""
    action: Action
    """What the policy does about it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step_id,
            "tool": self.tool,
            "param": self.param,
            "sources": list(self.sources),
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class StepAssessment:
    """The policy's static verdict on one step."""

    step_id: str
    tool: str
    effect: str
    action: Action
    reasons: tuple[Reason, ...]

    @property
    def reason(self) -> str:
        return f"step {self.step_id} ({self.tool}): " + "; ".join(r.message for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step_id,
            "tool": self.tool,
            "effect": self.effect,
            "action": self.action,
            "reasons": [r.to_json() for r in self.reasons],
        }


@dataclass(frozen=True)
class RiskReport:
    """Effects, the steps that need approval and why, and every untrusted-to-sensitive flow."""

    plan_hash: str
    effects: tuple[str, ...]
    steps: tuple[StepAssessment, ...]
    flows: tuple[Flow, ...]

    @property
    def denied(self) -> tuple[StepAssessment, ...]:
        """Steps the policy denies outright: the plan cannot run."""
        return tuple(s for s in self.steps if s.action == "deny")

    @property
    def needs_plan_approval(self) -> tuple[StepAssessment, ...]:
        """Steps a person must approve on the plan."""
        return tuple(
            s
            for s in self.steps
            if any(
                r.action == "require_approval" and r.certain and not r.at_call for r in s.reasons
            )
        )

    @property
    def call_approvals(self) -> tuple[StepAssessment, ...]:
        """Steps whose concrete call will (or may) need a person at run time."""
        return tuple(
            s
            for s in self.steps
            if any(r.action == "require_approval" and r.at_call for r in s.reasons)
        )

    @property
    def needs_person(self) -> bool:
        """Whether any person may be asked, now or during the run."""
        return any(r.action == "require_approval" for s in self.steps for r in s.reasons)

    def covered(self, step_id: str) -> frozenset[str]:
        """Reason keys that an approval of the plan settles for this step."""
        return self._covered.get(step_id, frozenset())

    @functools.cached_property
    def _covered(self) -> dict[str, frozenset[str]]:
        return {
            s.step_id: frozenset(r.key for r in s.reasons if r.certain and not r.at_call)
            for s in self.steps
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_hash": self.plan_hash,
            "effects": list(self.effects),
            "steps": [s.to_json() for s in self.steps if s.reasons],
            "flows": [f.to_json() for f in self.flows],
            "denied": [s.step_id for s in self.denied],
        }


def label_trust(analysis: Analysis) -> tuple[Any, Any]:
    """``is_trusted(label)`` and ``describe(label)`` for a plan's provenance labels."""
    steps = analysis.steps

    def is_trusted(label: str) -> bool:
        kind, _, name = label.partition(":")
        if kind in ("plan", "input"):
            return True
        field = trusted_label(label, steps)
        if field is not None:
            return field
        step = steps.get(name)
        return bool(step and step.tool.trusted_output and step.tool.name != LLM_TOOL)

    def describe(label: str) -> str:
        kind, _, name = label.partition(":")
        if kind == CHOSEN and name in steps:
            return f"a trusted value chosen by step {name} (llm) after reading its input"
        sid, _, path = name.partition("#")
        if kind == "step" and sid in steps:
            where = f" output {path}, declared trusted" if path else ""
            return f"step {sid} ({steps[sid].tool.name}){where}"
        return f"input '{name}'" if kind == "input" else label

    return is_trusted, describe


def static_provenance(analysis: Analysis) -> dict[str, dict[str, Sources]]:
    """Per step, per argument: the source labels, computed on the DAG (no values needed)."""
    out_labels: dict[str, Sources] = {}
    result: dict[str, dict[str, Sources]] = {}

    def lookup(ref: Ref) -> tuple[Any, Sources]:
        if ref.source == "step":
            general = out_labels.get(ref.name, frozenset((f"step:{ref.name}",)))
            return None, ref_sources(analysis.steps, ref.name, ref.path, general)
        return None, frozenset((f"input:{ref.name}",))

    for sid in analysis.order:
        step = analysis.steps[sid]
        loop = step.for_each
        templates = {k: expand_items(t, loop) if loop else t for k, t in step.args.items()}
        args = {k: resolve(t, lookup)[1] for k, t in templates.items()}
        result[sid] = args
        own = frozenset((f"step:{sid}",))
        if step.tool.name == LLM_TOOL:
            own = own.union(*args.values()) - {"plan"}
        out_labels[sid] = own
    return result


def verdict_for(
    step: CompiledStep, policy: Policy, provenance: Mapping[str, Sources], analysis: Analysis
) -> Verdict:
    is_trusted, describe = label_trust(analysis)
    literal = {k: t.value for k, t in step.args.items() if isinstance(t, Lit)}
    return evaluate(
        policy,
        step.tool,
        {k: literal.get(k) for k in step.args},
        provenance,
        is_trusted,
        describe,
        known=lambda p: p in literal,
    )


def assess(
    plan: Plan | Analysis,
    registry: ToolRegistry | None = None,
    policy: Policy | None = None,
    *,
    inputs: Mapping[str, Any] | None = None,
) -> RiskReport:
    """The risk report of a plan under a policy (default: ``Policy()``)."""
    policy = policy or Policy()
    if isinstance(plan, Analysis):
        analysis = plan
    else:
        if registry is None:
            raise TypeError("assess(plan, registry, policy): a registry is needed for a Plan")
        analysis = analyse(plan, registry, inputs=inputs)
    provenance = static_provenance(analysis)
    is_trusted, _ = label_trust(analysis)
    steps: list[StepAssessment] = []
    flows: list[Flow] = []
    effects: set[str] = set()
    for sid in sorted(analysis.steps, key=lambda s: analysis.steps[s].index):
        step = analysis.steps[sid]
        if sid not in provenance:
            continue  # not reachable in a valid order (the plan is invalid anyway)
        effects.add(step.tool.effect)
        verdict = verdict_for(step, policy, provenance[sid], analysis)
        steps.append(
            StepAssessment(sid, step.tool.name, step.tool.effect, verdict.action, verdict.concerns)
        )
        for param in sorted(step.tool.sensitive):
            labels = provenance[sid].get(param, ())
            bad = sorted(s for s in labels if not is_trusted(s))
            # A value chosen among trusted ones by untrusted text is a flow of its own kind.
            bad = bad or sorted(s for s in labels if s.startswith(f"{CHOSEN}:"))
            if bad:
                action: Action = max(
                    (r.action for r in verdict.reasons if param in r.params),
                    key=("allow", "require_approval", "deny").index,
                    default="allow",
                )
                flows.append(Flow(sid, step.tool.name, param, tuple(bad), action))
    return RiskReport(
        analysis.plan.hash,
        tuple(sorted(effects, key=effect_rank)),
        tuple(steps),
        tuple(flows),
    )
