"""Static validation of a plan against the registry it will run with (R2).

Every issue is collected, each with a JSON path; nothing stops at the first problem. The work is
linear in the size of the plan: one pass to index steps, one pass over arguments (the reference,
argument and template checks are in ``_checks``, loops and choices in ``_loops``), and Kahn's
algorithm for ordering and cycles (``_order``). ``analysis_of`` keeps the analyses of recent
plans, so a plan is validated once (see the section at the end).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from planlock.core import (
    Check,
    Issue,
    Plan,
    Ref,
    Template,
    canonical_json,
    compile_value,
    condition_refs,
    parse_ref,
    refs_of,
)
from planlock.tools import LLM_STEP_TOOL, LLM_TOOL, Tool, ToolRegistry, check_llm_step
from planlock.validation._checks import check_args, check_ref, clear_literal_checks, ref_types
from planlock.validation._coverage import check_coverage
from planlock.validation._fields import expand_items
from planlock.validation._loops import check_choices, check_loop
from planlock.validation._order import order_steps
from planlock.validation._provenance import branch_marks
from planlock.validation._types import Analysis, CompiledStep, ValidationReport
from planlock.validation._when import check_when

__all__ = [
    "Analysis",
    "CompiledStep",
    "Issue",
    "ValidationReport",
    "analyse",
    "analysis_of",
    "clear_analyses",
    "step_returns",
    "validate",
]

_STEP_POS = re.compile(r"^\$\.steps\[(\d+)\]")
_LAST = 1 << 30


def analyse(
    plan: Plan,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    forbidden_tools: frozenset[str] | set[str] = frozenset(),
) -> Analysis:
    a = Analysis(plan)
    issues = a.issues
    if not plan.steps:
        issues.append(Issue("empty_plan", "$.steps", "the plan has no steps"))
    if max_steps is not None and len(plan.steps) > max_steps:
        msg = f"the plan has {len(plan.steps)} steps; the limit is {max_steps}"
        issues.append(Issue("too_many_steps", "$.steps", msg))

    index: dict[str, int] = {}
    for i, s in enumerate(plan.steps):
        if s.id in index:
            msg = f"duplicate step id '{s.id}' (first used by $.steps[{index[s.id]}])"
            issues.append(Issue("duplicate_step", f"$.steps[{i}].id", msg))
        else:
            index[s.id] = i

    tools: dict[str, Tool | None] = {}
    by_pos: list[Tool | None] = []
    for i, s in enumerate(plan.steps):
        base = f"$.steps[{i}]"
        tool = registry.get(s.tool) or (LLM_STEP_TOOL if s.tool == LLM_TOOL else None)
        if s.tool in forbidden_tools:
            issues.append(Issue("forbidden_tool", f"{base}.tool", f"tool '{s.tool}' is forbidden"))
        if tool is None:
            known = ", ".join(sorted(t.name for t in registry)) or "none"
            msg = f"unknown tool '{s.tool}' (registered: {known})"
            issues.append(Issue("unknown_tool", f"{base}.tool", msg))
        by_pos.append(tool)
        if index.get(s.id) == i:
            tools[s.id] = tool

    returns = _returns(plan, tools, index)
    memo: dict[Any, Any] = {}  # what check_args decided once for the whole plan

    loops = frozenset(s.id for s in plan.steps if s.for_each is not None)
    deps: dict[str, set[str]] = {}
    barrier: str | None = None  # a checkpoint: later-listed steps wait for its review
    for i, s in enumerate(plan.steps):
        base = f"$.steps[{i}]"
        tool = by_pos[i]
        step_deps: set[str] = set()
        reads: set[str] = set()  # the steps whose output it reads (step_deps without 'after')
        compiled: dict[str, Template] = {}
        problems: list[tuple[str, str]] = []
        where = {pname: f"{base}.args.{pname}" for pname in s.args}  # each path written once
        for pname, value in s.args.items():
            compiled[pname] = compile_value(value, where[pname], problems)
        issues.extend(Issue("malformed_placeholder", p, m) for p, m in problems)
        loop: Ref | None = None
        if s.for_each is not None or s.max_items is not None:
            loop, found = check_loop(s.for_each, s.max_items, base)
            issues.extend(Issue(c, p, m) for c, p, m in found)
            if loop is not None:
                check_ref(loop, f"{base}.for_each", s.id, index, returns, inputs, issues)
                if loop.source == "step":
                    reads.add(loop.name)
                vtypes = ref_types(loop, returns, inputs)
                if vtypes is not None and "array" not in vtypes:
                    got = "/".join(sorted(vtypes))
                    msg = f"for_each needs a list; '{{{{{loop.text}}}}}' has type {got}"
                    issues.append(Issue("for_each_not_list", f"{base}.for_each", msg))
        checked = compiled
        if loop is not None and loop.source == "step":
            checked = {k: expand_items(t, loop, "0", number=1) for k, t in compiled.items()}
        for pname, t in checked.items():
            for ref in refs_of(t):
                if ref.source == "item":
                    if loop is None:
                        msg = f"'{{{{{ref.text}}}}}' is only defined in a step with for_each"
                        issues.append(Issue("item_outside_loop", where[pname], msg))
                    continue
                check_ref(ref, where[pname], s.id, index, returns, inputs, issues)
                if ref.source == "step":
                    reads.add(ref.name)
        when: Check | None = None
        if s.when is not None:
            when = check_when(s.when, base, s.id, index, returns, inputs, issues)
            if when is not None:
                reads.update(r.name for r in condition_refs(when) if r.source == "step")
        step_deps |= reads
        for j, dep in enumerate(s.after):
            if dep == s.id:
                issues.append(
                    Issue("self_reference", f"{base}.after[{j}]", "a step cannot come after itself")
                )
            elif dep not in index:
                msg = f"'after' names unknown step '{dep}'"
                issues.append(Issue("unknown_step", f"{base}.after[{j}]", msg))
            step_deps.add(dep)
        choices: tuple[tuple[str | None, Ref], ...] = ()
        if tool is not None:
            check_args(s.args, checked, tool, base, returns, inputs, issues, memo, where)
            if tool is LLM_STEP_TOOL:
                issues.extend(Issue(c, p, m) for c, p, m in check_llm_step(s.args, compiled, base))
                choices, found = check_choices(s.args, compiled, base, tools, returns, loops)
                issues.extend(Issue(c, p, m) for c, p, m in found)
        if barrier is not None:
            step_deps.add(barrier)
        if s.checkpoint and index.get(s.id) == i:
            barrier = s.id
        if index.get(s.id) == i and tool is not None:
            known_deps = frozenset(d for d in step_deps if d in index and d != s.id)
            deps[s.id] = set(known_deps)
            a.steps[s.id] = CompiledStep(
                s.id,
                i,
                tool,
                compiled,
                known_deps,
                returns.get(s.id, {}),
                s.checkpoint,
                loop,
                s.max_items,
                choices,
                when,
                frozenset(d for d in reads if d in known_deps),
            )

    cover_issues, cover_warnings = check_coverage(plan, tools)
    issues.extend(cover_issues)
    a.warnings.extend(cover_warnings)
    order_steps(a, index, deps)
    for sid in a.order:  # dependencies first: a step's marks include those of what it reads
        marks = branch_marks(a.steps, a.steps[sid])
        if marks:
            a.steps[sid] = replace(a.steps[sid], marks=marks)
    a.issues.sort(key=_issue_key)
    return a


def _issue_key(issue: Issue) -> tuple[int, str]:
    """Issues in plan order: by step position, then path (the coverage list after the steps)."""
    if issue.path.startswith("$.coverage"):
        return (_LAST, issue.path)
    m = _STEP_POS.match(issue.path)
    return (int(m.group(1)) if m else -1, issue.path)


# --------------------------------------------------------------------------------------------
# Validate once: the analyses of recent plans, reused while the plan (its hash), the registry (the
# same object, with no tool added since) and the options are the same. ``validate`` and ``run``
# (``prepare``) both go through ``analysis_of``, so a plan that was validated (by the planner, or
# by the caller) is not analysed again when it runs. An analysis is never changed once built (the
# executor and ``assess`` only read it), so sharing one is safe.

_SIZE = 16
"""Analyses kept (the most recently used)."""
_Key = tuple[str, str | None, int, int, int | None, frozenset[str]]
_cache: OrderedDict[_Key, tuple[ToolRegistry, Analysis]] = OrderedDict()
_lock = threading.Lock()


def validate(
    plan: Plan,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    forbidden_tools: frozenset[str] | set[str] = frozenset(),
) -> ValidationReport:
    """Check a plan against a registry and return every issue (and every warning: parts of the
    goal that no step seems to serve, which do not make the plan invalid).

    ``inputs`` are the trusted input values the plan will run with; when given, references to
    inputs are checked (names and paths). The executor always checks them before running.
    """
    a = analysis_of(
        plan, registry, inputs=inputs, max_steps=max_steps, forbidden_tools=forbidden_tools
    )
    return ValidationReport(a.plan_hash, tuple(a.issues), tuple(a.warnings))


def analysis_of(
    plan: Plan,
    registry: ToolRegistry,
    *,
    plan_hash: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    forbidden_tools: frozenset[str] | set[str] = frozenset(),
) -> Analysis:
    """``analyse``, reusing the analysis of the same plan hash with the same registry and
    options. ``plan_hash`` saves hashing the plan when the caller has it."""
    plan_hash = plan_hash or plan.hash
    if max_steps is not None and len(plan.steps) <= max_steps:
        max_steps = None  # the limit changes nothing: the analysis is the one without it
    try:
        given = None if inputs is None else canonical_json(dict(inputs))
    except (TypeError, ValueError):  # inputs that are not JSON: analyse without the cache
        given = "\0"
    rest = (id(registry), registry.version, max_steps, frozenset(forbidden_tools))
    key: _Key = (plan_hash, given, *rest)
    blind: _Key = (plan_hash, None, *rest)
    with _lock:
        for k in (key, blind) if given not in (None, "\0") else (key,):
            hit = _cache.get(k)
            # Without inputs, input references are not checked: that analysis serves any
            # inputs only for a valid plan that has none.
            if hit is not None and hit[0] is registry and (k == key or not _reads_inputs(hit[1])):
                _cache.move_to_end(k)
                return hit[1]
    analysis = analyse(
        plan, registry, inputs=inputs, max_steps=max_steps, forbidden_tools=forbidden_tools
    )
    analysis.__dict__["plan_hash"] = plan_hash  # the cached property, known already
    if given != "\0":
        with _lock:
            blind_ok = given is None or not _reads_inputs(analysis)
            _cache[blind if blind_ok else key] = (registry, analysis)
            while len(_cache) > _SIZE:
                _cache.popitem(last=False)
    return analysis


def _reads_inputs(a: Analysis) -> bool:
    """Whether the analysis may depend on the inputs given: it has issues (some steps may not
    be compiled) or a step reads a trusted input. Kept with the analysis."""
    if "reads_inputs" not in a.memo:
        a.memo["reads_inputs"] = (
            bool(a.issues)
            or len(a.steps) != len(a.plan.steps)
            or any(map(_reads_input, a.steps.values()))
        )
    return bool(a.memo["reads_inputs"])


def _reads_input(step: CompiledStep) -> bool:
    refs = [r for t in step.args.values() for r in refs_of(t)]
    refs += condition_refs(step.when) if step.when is not None else ()
    refs += (step.for_each,) if step.for_each is not None else ()
    return any(r.source == "input" for r in refs)


def clear_analyses() -> None:
    """Forget every kept analysis, parsed reference and checked literal (benchmarks measure
    the cost of a plan seen for the first time with it)."""
    with _lock:
        _cache.clear()
    parse_ref.cache_clear()
    clear_literal_checks()


def step_returns(plan: Plan, registry: ToolRegistry) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each step's output (of the first step with an id, for a known tool):
    the tool's return type, an ``llm`` step's ``output_schema`` (a string without one), a list
    of either for a ``for_each`` step. What ``{{steps.<id>.output...}}`` paths are checked on."""
    index: dict[str, int] = {}
    tools: dict[str, Tool | None] = {}
    for i, s in enumerate(plan.steps):
        if s.id not in index:
            index[s.id] = i
            tools[s.id] = registry.get(s.tool) or (LLM_STEP_TOOL if s.tool == LLM_TOOL else None)
    return _returns(plan, tools, index)


def _returns(
    plan: Plan, tools: Mapping[str, Tool | None], index: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    returns: dict[str, dict[str, Any]] = {}
    for sid, tool in tools.items():
        if tool is None:
            continue
        if tool is LLM_STEP_TOOL:
            schema = plan.steps[index[sid]].args.get("output_schema")
            if not schema:  # quarantined_call's default: the reply is a string
                returns[sid] = {"type": "string"}
            else:
                returns[sid] = schema if isinstance(schema, dict) else {}
        else:
            returns[sid] = tool.returns_schema
        if plan.steps[index[sid]].for_each is not None:
            returns[sid] = {"type": "array", "items": returns[sid]}
    return returns
