"""Static validation of a plan against the registry it will run with (R2).

Every issue is collected, each with a JSON path; nothing stops at the first problem. The work is
linear in the size of the plan: one pass to index steps, one pass over arguments, and Kahn's
algorithm for ordering and cycles.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import ValidationError

from planlock.core import (
    Interp,
    Issue,
    Lit,
    Obj,
    Plan,
    Ref,
    Template,
    Unresolvable,
    Whole,
    accepts_types,
    at_path,
    compile_value,
    refs_of,
    types_of,
    walk_path,
)
from planlock.core._schema import _json_type
from planlock.tools import LLM_STEP_TOOL, LLM_TOOL, Tool, ToolRegistry, check_llm_step
from planlock.validation._fields import expand_items, schema_at
from planlock.validation._loops import check_choices, check_loop

__all__ = ["Issue", "ValidationReport", "validate"]

_STEP_POS = re.compile(r"^\$\.steps\[(\d+)\]")


@dataclass(frozen=True)
class ValidationReport:
    """The result of validation: ``ok`` when there are no issues."""

    plan_hash: str
    issues: tuple[Issue, ...]

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


@dataclass
class Analysis:
    """What the executor needs: compiled steps in a topological order, or the issues."""

    plan: Plan
    issues: list[Issue] = field(default_factory=list)
    steps: dict[str, CompiledStep] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    dependents: dict[str, list[str]] = field(default_factory=dict)


def validate(
    plan: Plan,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    forbidden_tools: frozenset[str] | set[str] = frozenset(),
) -> ValidationReport:
    """Check a plan against a registry and return every issue.

    ``inputs`` are the trusted input values the plan will run with; when given, references to
    inputs are checked (names and paths). The executor always checks them before running.
    """
    a = analyse(plan, registry, inputs=inputs, max_steps=max_steps, forbidden_tools=forbidden_tools)
    return ValidationReport(plan.hash, tuple(a.issues))


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
                _check_ref(loop, f"{base}.for_each", s.id, index, returns, inputs, issues)
                if loop.source == "step":
                    step_deps.add(loop.name)
                vtypes = _ref_types(loop, returns, inputs)
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
                _check_ref(ref, f"{base}.args.{pname}", s.id, index, returns, inputs, issues)
                if ref.source == "step":
                    step_deps.add(ref.name)
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
            _check_args(s.args, checked, tool, base, returns, inputs, issues)
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
            )

    _order(a, index, deps)
    a.issues.sort(key=_issue_key)
    return a


def _issue_key(issue: Issue) -> tuple[int, str]:
    """Issues in plan order: by step position, then path."""
    m = _STEP_POS.match(issue.path)
    return (int(m.group(1)) if m else -1, issue.path)


def _check_ref(
    ref: Ref,
    path: str,
    step_id: str,
    index: Mapping[str, int],
    returns: Mapping[str, dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    issues: list[Issue],
) -> None:
    if ref.source == "step":
        if ref.name == step_id:
            issues.append(
                Issue("self_reference", path, f"step '{step_id}' refers to its own output")
            )
        elif ref.name not in index:
            issues.append(
                Issue(
                    "unknown_step",
                    path,
                    f"'{{{{{ref.text}}}}}' refers to unknown step '{ref.name}'",
                )
            )
        elif ref.name in returns and schema_at(returns[ref.name], ref.path) is None:
            msg = f"'{{{{{ref.text}}}}}': no such path on the return type of step '{ref.name}'"
            issues.append(Issue("bad_ref_path", path, msg))
        return
    if inputs is None or ref.source == "item":
        return
    if ref.name not in inputs:
        known = ", ".join(sorted(inputs)) or "none"
        msg = f"'{{{{{ref.text}}}}}' refers to unknown input '{ref.name}' (given: {known})"
        issues.append(Issue("unknown_input", path, msg))
        return
    try:
        walk_path(inputs[ref.name], ref.path, ref.name)
    except Unresolvable as exc:
        issues.append(Issue("bad_ref_path", path, f"'{{{{{ref.text}}}}}': {exc}"))


def _check_args(
    args: Mapping[str, Any],
    compiled: Mapping[str, Template],
    tool: Tool,
    base: str,
    returns: Mapping[str, dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    issues: list[Issue],
) -> None:
    schema = tool.params_schema
    props: dict[str, Any] = schema.get("properties", {})
    for pname in args:
        if pname not in props:
            known = ", ".join(props) or "none"
            msg = f"unknown parameter '{pname}' for tool '{tool.name}' (parameters: {known})"
            issues.append(Issue("unknown_param", f"{base}.args.{pname}", msg))
    for pname in schema.get("required", []):
        if pname not in args:
            msg = f"missing required parameter '{pname}' for tool '{tool.name}'"
            issues.append(Issue("missing_param", f"{base}.args", msg))
    for pname, t in compiled.items():
        if pname not in props:
            continue
        _check_template(
            t, props[pname], schema, tool, pname, f"{base}.args.{pname}", returns, inputs, issues
        )


def _check_template(
    t: Template,
    pschema: Any,
    root: dict[str, Any],
    tool: Tool,
    pname: str,
    path: str,
    returns: Mapping[str, dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    issues: list[Issue],
    *,
    top: bool = True,
) -> None:
    if isinstance(t, Lit):
        for loc, msg in _literal_errors(t.value, tool, pname, pschema, root, top):
            issues.append(Issue("invalid_arg", path + loc, msg))
    elif isinstance(t, Whole):
        vtypes = _ref_types(t.ref, returns, inputs)
        if not accepts_types(pschema, vtypes, root):
            want = sorted(types_of(pschema, root) or [])
            got = "/".join(sorted(vtypes or []))
            msg = f"'{{{{{t.ref.text}}}}}' has type {got}; expected {'/'.join(want)}"
            issues.append(Issue("type_mismatch", path, msg))
    elif isinstance(t, Interp):
        if not accepts_types(pschema, {"string"}, root):
            msg = "a string with placeholders renders to a string; this parameter does not take one"
            issues.append(Issue("type_mismatch", path, msg))
    elif isinstance(t, Obj):
        if not accepts_types(pschema, {"object"}, root):
            issues.append(Issue("invalid_arg", path, "an object is not valid here"))
            return
        for k, sub in t.items:
            sub_schema = at_path(pschema, (k,), root)
            if sub_schema is None:
                issues.append(Issue("invalid_arg", f"{path}.{k}", f"unknown key '{k}'"))
            else:
                _check_template(
                    sub,
                    sub_schema,
                    root,
                    tool,
                    pname,
                    f"{path}.{k}",
                    returns,
                    inputs,
                    issues,
                    top=False,
                )
    else:
        if not accepts_types(pschema, {"array"}, root):
            issues.append(Issue("invalid_arg", path, "a list is not valid here"))
            return
        for j, sub in enumerate(t.items):
            sub_schema = at_path(pschema, (str(j),), root)
            if sub_schema is None:
                issues.append(
                    Issue("invalid_arg", f"{path}[{j}]", "no item is allowed at this index")
                )
            else:
                _check_template(
                    sub,
                    sub_schema,
                    root,
                    tool,
                    pname,
                    f"{path}[{j}]",
                    returns,
                    inputs,
                    issues,
                    top=False,
                )


def _literal_errors(
    value: Any, tool: Tool, pname: str, pschema: Any, root: dict[str, Any], top: bool
) -> list[tuple[str, str]]:
    """Errors for a literal: Pydantic (strict JSON mode, as at call time) for a whole parameter,
    JSON Schema for a piece of a parameter that also holds placeholders."""
    if top and pname in tool.param_adapters:
        try:
            tool.param_adapters[pname].validate_json(json.dumps(value), strict=True)
        except ValidationError as exc:
            return [(_loc(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        return []
    sub = {**pschema, "$defs": root.get("$defs", {})} if isinstance(pschema, dict) else {}
    validator = jsonschema.Draft202012Validator(sub)
    return [(_loc(tuple(e.absolute_path)), e.message) for e in validator.iter_errors(value)]


def _loc(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _ref_types(
    ref: Ref, returns: Mapping[str, dict[str, Any]], inputs: Mapping[str, Any] | None
) -> set[str] | None:
    if ref.source == "step":
        schema = returns.get(ref.name)
        if schema is None:
            return None
        sub = schema_at(schema, ref.path)
        return None if sub is None else types_of(sub, schema)
    if inputs is None or ref.source == "item" or ref.name not in inputs:
        return None
    try:
        v = walk_path(inputs[ref.name], ref.path, ref.name)
    except Unresolvable:
        return None

    t = _json_type(v)
    return {t, "number"} if t == "integer" else {t}


def _order(a: Analysis, index: Mapping[str, int], deps: Mapping[str, set[str]]) -> None:
    """Kahn's algorithm: a topological order, and every cycle reported once."""
    indeg = {sid: len(d) for sid, d in deps.items()}
    dependents: dict[str, list[str]] = {sid: [] for sid in deps}
    for sid, d in deps.items():
        for dep in d:
            if dep in dependents:
                dependents[dep].append(sid)
            else:
                indeg[sid] -= 1  # dependency on a step that did not compile: already reported
    queue = deque(sorted((s for s, n in indeg.items() if n == 0), key=index.__getitem__))
    order: list[str] = []
    while queue:
        sid = queue.popleft()
        order.append(sid)
        for nxt in dependents[sid]:
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                queue.append(nxt)
    a.order = order
    a.dependents = dependents
    if len(order) == len(deps):
        return
    remaining = {s for s, n in indeg.items() if n > 0}
    comps = [c for c in _components(remaining, deps) if len(c) > 1]
    for comp in sorted(comps, key=lambda c: min(map(index.__getitem__, c))):
        # inside a strongly connected part every step has a dependency in the part: the walk
        # always closes a cycle, and each part is walked once
        cycle = _find_cycle(min(comp, key=index.__getitem__), deps, comp, set())
        if cycle:
            first = min(cycle, key=index.__getitem__)
            k = cycle.index(first)
            ring = cycle[k:] + cycle[:k]
            text = " -> ".join([*ring, ring[0]])
            msg = f"steps depend on each other in a cycle: {text} (each needs the next)"
            a.issues.append(Issue("cycle", f"$.steps[{index[first]}]", msg))


def _find_cycle(
    start: str, deps: Mapping[str, set[str]], remaining: set[str], visited: set[str]
) -> list[str]:
    """Follow dependencies inside the unresolved set until a step repeats; each step is walked
    at most once over all calls, so reporting every cycle stays linear."""
    pos: dict[str, int] = {}
    path: list[str] = []
    cur = start
    while cur not in pos:
        if cur in visited:
            return []
        visited.add(cur)
        pos[cur] = len(path)
        path.append(cur)
        nxt = sorted(d for d in deps.get(cur, ()) if d in remaining)
        if not nxt:
            return []
        cur = nxt[0]
    return path[pos[cur] :]


def _components(nodes: set[str], deps: Mapping[str, set[str]]) -> list[set[str]]:
    """Strongly connected parts of the dependency graph restricted to ``nodes`` (Tarjan,
    iterative)."""
    num: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(nodes):
        if root in num:
            continue
        num[root] = low[root] = len(num)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(d for d in deps.get(root, ()) if d in nodes)))]
        while work:
            v, it = work[-1]
            for w in it:
                if w not in num:
                    num[w] = low[w] = len(num)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(d for d in deps.get(w, ()) if d in nodes))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], num[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == num[v]:
                    comp: set[str] = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    out.append(comp)
    return out
