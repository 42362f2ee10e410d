"""What validation produces: the report, and the analysis (compiled steps in order) that the
executor and ``assess`` work from."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from planlock.core import Check, Issue, Lit, Plan, Ref, Sources, Template
from planlock.tools import Tool

__all__ = ["Analysis", "CompiledStep", "ValidationReport"]


@dataclass(frozen=True)
class ValidationReport:
    """The result of validation: ``ok`` when there are no issues. ``warnings`` never make a plan
    invalid: they are advice for the person approving it (goal coverage: ``_coverage``)."""

    plan_hash: str
    issues: tuple[Issue, ...]
    warnings: tuple[Issue, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass(frozen=True)
class CompiledStep:
    id: str
    index: int
    tool: Tool
    args: dict[str, Template]
    deps: frozenset[str]
    returns_schema: dict[str, Any]
    checkpoint: bool = False
    for_each: Ref | None = None
    """The list the step iterates over (its tool runs once per item)."""
    max_items: int | None = None
    choices: tuple[tuple[str | None, Ref], ...] = ()
    """For an ``llm`` step: the output field (None: the whole output) that must be one of the
    values at a trusted reference."""
    when: Check | None = None
    """The compiled condition (``when``): the step runs only if it holds."""
    reads: frozenset[str] = frozenset()
    """The steps whose output this step reads (its arguments, ``for_each`` and ``when``): if one
    of them does not run, neither does this step. A subset of ``deps``, which also holds
    ``after`` and checkpoint barriers (those only order)."""
    marks: Sources = frozenset()
    """``branch:<id>`` labels: the conditions, decided by data untrusted text may have decided,
    on which this step's running depends (``_provenance.branch_marks``). Every argument, the
    output and the call itself carry them."""

    @functools.cached_property
    def prechecked(self) -> dict[str, Any]:
        """The arguments checked once, when the plan was validated, that a call passes to the
        tool as they are instead of checking them again: whole literals of a JSON-native tool
        (``Tool.plain_args``) that are scalars (immutable), of a parameter with no constraint
        or validator of its own, which the parameter's check (strict, as at call time) returns
        unchanged. Computed on first use (an analysis is reused run after run)."""
        tool = self.tool
        fields = tool.args_model.model_fields
        if not tool.plain_args or any(name not in tool.param_adapters for name in fields):
            return {}  # (a call then checks every argument with the whole model)
        out: dict[str, Any] = {}
        for name, template in self.args.items():
            field_ = fields.get(name)
            if not isinstance(template, Lit) or field_ is None or field_.metadata:
                continue
            value = template.value
            if type(value) not in _SCALARS:
                continue
            try:
                checked = tool.param_adapters[name].validate_python(value, strict=True)
            except ValueError:  # pydantic's ValidationError: the plan is not valid anyway
                continue
            if type(checked) is type(value) and checked == value:
                out[name] = value
        return out


_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass
class Analysis:
    """What the executor needs: compiled steps in a topological order, or the issues."""

    plan: Plan
    issues: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    """Advice that does not make the plan invalid (parts of the goal no step serves)."""
    steps: dict[str, CompiledStep] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    dependents: dict[str, list[str]] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What higher layers computed from this analysis and keep with it (the risk report per
    policy: ``planlock.policy.assess``), since an analysis is reused (``analysis_of``)."""

    @functools.cached_property
    def plan_hash(self) -> str:
        """The plan's hash, computed once per analysis (hashing serializes the whole plan)."""
        return self.plan.hash
