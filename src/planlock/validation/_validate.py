"""Static validation of a plan against the registry it will run with (R2).

Every issue is collected, each with a JSON path; nothing stops at the first problem. The work is
linear in the size of the plan: one pass to index steps, one pass over arguments (the reference,
argument and template checks are in ``_checks``, loops and choices in ``_loops``), and Kahn's
algorithm for ordering and cycles (``_order``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from planlock.core import Check, Issue, Plan, Ref, Template, compile_value, condition_refs, refs_of
from planlock.tools import LLM_STEP_TOOL, LLM_TOOL, Tool, ToolRegistry, check_llm_step
from planlock.validation._checks import check_args, check_ref, ref_types
from planlock.validation._coverage import check_coverage
from planlock.validation._fields import expand_items
from planlock.validation._loops import check_choices, check_loop
from planlock.validation._order import order_steps
from planlock.validation._provenance import branch_marks
from planlock.validation._types import Analysis, CompiledStep, ValidationReport
from planlock.validation._when import check_when

__all__ = ["Analysis", "CompiledStep", "Issue", "ValidationReport", "analyse"]

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
        for pname, value in s.args.items():
            compiled[pname] = compile_value(value, f"{base}.args.{pname}", problems)
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
                        issues.append(Issue("item_outside_loop", f"{base}.args.{pname}", msg))
                    continue
                check_ref(ref, f"{base}.args.{pname}", s.id, index, returns, inputs, issues)
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
            check_args(s.args, checked, tool, base, returns, inputs, issues)
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
