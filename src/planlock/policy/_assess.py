"""The risk report: what a plan will do, and what a person must approve, before anything runs.

Provenance is computed on the DAG by ``planlock.validation``'s provenance rules, with the same
template resolution the executor uses, so the static flows are exactly the run-time ones (R5,
R6). Argument conditions are decided statically
only where the argument is a literal; otherwise the run decides them on the concrete values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planlock.core import Lit, Plan, Sources
from planlock.policy._ground import ungrounded
from planlock.policy._policy import _RANK, Action, Policy, Reason, Verdict, evaluate
from planlock.tools import ToolRegistry, effect_rank
from planlock.validation import (
    Analysis,
    CompiledStep,
    analyse,
    chosen_labels,
    label_trust,
    static_provenance,
    untrusted_labels,
)

__all__ = ["Flow", "RiskReport", "StepAssessment", "assess"]


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
        decided_by=step.marks,
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
    kept: list[tuple[Policy, RiskReport]] = analysis.memo.setdefault("risk", [])
    for p, report in kept:  # the analysis is reused (``analysis_of``): so is its assessment
        if p == policy:
            return report
    report = _assess(analysis, policy)
    kept.append((policy, report))
    del kept[:-4]
    return report


def _assess(analysis: Analysis, policy: Policy) -> RiskReport:
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
        if policy.ungrounded_literal != "allow":
            verdict = _grounding(verdict, step, analysis.plan.goal, policy.ungrounded_literal)
        steps.append(
            StepAssessment(sid, step.tool.name, step.tool.effect, verdict.action, verdict.concerns)
        )
        for param in sorted(step.tool.sensitive):
            labels = provenance[sid].get(param, ())
            bad = untrusted_labels(labels, is_trusted)
            # A value chosen among trusted ones by untrusted text is a flow of its own kind.
            bad = bad or chosen_labels(labels)
            if bad:
                action: Action = max(
                    (r.action for r in verdict.reasons if param in r.params),
                    key=("allow", "require_approval", "deny").index,
                    default="allow",
                )
                flows.append(Flow(sid, step.tool.name, param, tuple(bad), action))
    return RiskReport(
        analysis.plan_hash,
        tuple(sorted(effects, key=effect_rank)),
        tuple(steps),
        tuple(flows),
    )


def _grounding(verdict: Verdict, step: CompiledStep, goal: str | None, action: Action) -> Verdict:
    """Add a plan-level reason for each literal in a sensitive parameter of a side-effecting
    step that the goal does not give (``Policy.ungrounded_literal``)."""
    if step.tool.read_only:
        return verdict
    added = [
        Reason(
            f"literal:{param}",
            action,
            f"{step.tool.name}.{param} = {value!r} is written in the plan but the goal does not "
            "give it (a planner model may have made it up)",
            params=(param,),
        )
        for param, value in ungrounded(step, goal)
    ]
    if not added:
        return verdict
    final = max((verdict.action, action), key=_RANK.__getitem__)
    return Verdict(final, (*verdict.reasons, *added))
