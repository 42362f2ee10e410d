"""The planner's prompt: trusted input only (R1).

The prompt holds the goal, the registry's tools (name, description, parameter and return types,
effect), the *names and shapes* of trusted context values, the plan format with its placeholder
rules, and one generic example. Never a tool's output: the planner runs before any tool does, and
nothing here accepts one. A repair prompt adds the issues of the rejected plan and the output
types (from the registry) of the steps they name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from planlock.core import MAX_ITEMS_CAP, Plan
from planlock.tools import LLM_STEP_TOOL, LLM_TOOL, Tool, ToolRegistry
from planlock.validation import Issue, fitting_tools, warned_effect

__all__ = [
    "PLANNER_SYSTEM",
    "context_shape",
    "coverage_hints",
    "coverage_message",
    "describe_tools",
    "planner_system",
    "repair_hints",
    "repair_message",
    "tool_of",
    "type_text",
]

_REF_STEP = re.compile(r"\{\{steps\.([A-Za-z0-9_-]+)\.output")

_TEMPLATE = """\
You are the planner of a tool-using agent. You write the whole plan before anything runs: the \
tools run later, exactly as you wrote them, and you never see their outputs.

Answer with JSON only: {"steps": [{"id": "1", "tool": "<tool>", "args": {...}}, ...]}
- Use only the tools listed below, with their parameter names. Step ids are "1", "2", ...
- Add only the steps the goal needs.
- An argument is a literal value, or a placeholder that is filled in at run time:
  {{<name>.<field>}} for a trusted context value listed with the goal;
  {{steps.<id>.output}} or {{steps.<id>.output.<field>}} for an earlier step's output \
(list items by number: {{steps.<id>.output.0.<field>}}).
  A placeholder that is the whole argument keeps its type; inside a longer string it is \
written into the text.
- To extract or summarise something from a step's output, use the tool "llm" with \
{"instruction": "...", "input": "{{steps.<id>.output}}", "output_schema": {...}}. It has no \
tools; its output is data for later steps (untrusted, like its input).
- To pick one of several known values (a payee among the user's past recipients, a channel \
among the existing ones), give the "llm" step "choices": "{{steps.<id>.output[*].<field>}}" \
(or {"<output field>": "{{...}}"}): its answer must be one of those values. Only outputs the \
tool list marks "trusted" can be choices.
- To call a tool once per item of a list, add "for_each": "{{steps.<id>.output}}" and \
"max_items": <n> (at most <cap>) to the step, and write {{item}} or {{item.<field>}} in \
its args. Its output is the list of every call's output.
- To run a step only if something holds ("if it is rated over 4, book it"), add "when": \
{"ref": "{{steps.<id>.output.<field>}}", "op": "gt", "value": 4} (op: eq, ne, lt, le, gt, ge, \
or in with a list of values; combine with {"all": [...]}, {"any": [...]}, {"not": {...}}). \
The ref names a boolean, a number or an enum, e.g. an "llm" step's answer with output_schema \
{"type": "boolean"}. If it does not hold, the step and the steps using its output are skipped.
- If the goal needs something no listed tool does, answer {"cannot_plan": "<why>"} instead.
<coverage_rule>
Example, with other tools. Goal: "Tell the owner of repository {{repo.name}} how many issues \
are open." Trusted context: {{repo.name}} (string).
{"steps": [{"id": "1", "tool": "get_repository", "args": {"name": "{{repo.name}}"}}, \
{"id": "2", "tool": "count_open_issues", "args": {"repository_id": "{{steps.1.output.id}}"}}, \
{"id": "3", "tool": "send_message", "args": {"to": "{{steps.1.output.owner}}", \
"text": "Open issues: {{steps.2.output}}"}}]<coverage_example>}
Goal: "Order a pizza." With no tool that orders food: {"cannot_plan": "no tool orders food"}

Tools:
"""


_TEMPLATE = _TEMPLATE.replace("<cap>", str(MAX_ITEMS_CAP))

COVERAGE_RULE = """\
- After the steps, "coverage" lists each part of the goal, in the goal's words, with the ids of \
the steps that do it: {"part": "<part of the goal>", "steps": ["<id>", ...]}. Every action the \
goal asks for (send, post, tell, pay, delete, save, create...) needs a step whose tool has that \
effect.
"""
COVERAGE_EXAMPLE = (
    ', "coverage": [{"part": "how many issues are open", "steps": ["1", "2"]}, '
    '{"part": "tell the owner", "steps": ["3"]}]'
)


def planner_system(*, coverage: bool = False) -> str:
    """The planner's instructions (without the tool list); ``coverage`` asks for the coverage
    list (``Plan.coverage``) after the steps."""
    return _TEMPLATE.replace("<coverage_rule>", COVERAGE_RULE if coverage else "").replace(
        "<coverage_example>", COVERAGE_EXAMPLE if coverage else ""
    )


PLANNER_SYSTEM = planner_system()
"""The planner's instructions without the coverage list."""


def describe_tools(registry: ToolRegistry, *, llm_step: bool = True) -> str:
    """The tool catalogue as the planner sees it: signature, description, effect."""
    lines: list[str] = []
    tools = sorted(registry, key=lambda t: t.name)
    if llm_step:
        tools.append(LLM_STEP_TOOL)
    for tool in tools:
        lines.append(f"- {_signature(tool)}")
        lines.append(f"  effect: {tool.effect}. {_first_para(tool.description)}".rstrip())
        if tool.trusted_output and tool is not LLM_STEP_TOOL:
            lines.append("  output: trusted")
        elif tool.trusted_paths:
            trusted = ", ".join(_bracketed(p) for p in tool.trusted_paths)
            lines.append(f"  trusted output fields: {trusted}")
        props = tool.params_schema.get("properties", {})
        for pname, pschema in props.items():
            desc = pschema.get("description") if isinstance(pschema, dict) else None
            if desc:
                lines.append(f"    {pname}: {desc}")
    return "\n".join(lines)


def _bracketed(path: str) -> str:
    """``*.recipient`` as the planner writes it: ``[*].recipient``."""
    return ".".join("[*]" if seg == "*" else seg for seg in path.split(".")).replace(".[*]", "[*]")


def _first_para(text: str) -> str:
    return " ".join(text.split("\n\n", 1)[0].split())


def _signature(tool: Tool) -> str:
    schema = tool.params_schema
    required = set(schema.get("required", []))
    params = [
        f"{name}{'' if name in required else '?'}: {type_text(sub, schema)}"
        for name, sub in schema.get("properties", {}).items()
    ]
    ret = type_text(tool.returns_schema, tool.returns_schema) if tool.returns_schema else "any"
    return f"{tool.name}({', '.join(params)}) -> {ret}"


def type_text(schema: Any, root: Mapping[str, Any], depth: int = 0) -> str:
    """A short, readable rendering of a JSON Schema type: ``{id: string, tags: [string, ...]}``.

    A list is written as JSON writes one, ``[{id: string}, ...]``: written ``list of {...}``,
    the embedded model read a field of the items as a field of the list (the demo's first plan
    took ``{{steps.2.output.title}}`` for a list of articles, and was sent back every time)."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema and isinstance(schema["$ref"], str):
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return type_text(target, root, depth)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            branches = [type_text(b, root, depth) for b in schema[key]]
            return " | ".join(dict.fromkeys(branches))
    if "const" in schema:
        return json.dumps(schema["const"])
    if isinstance(schema.get("enum"), list):
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array" or "items" in schema:
        return f"[{type_text(schema.get('items', {}), root, depth)}, ...]"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if isinstance(props, dict) and props and depth < 2:
            inner = ", ".join(f"{k}: {type_text(v, root, depth + 1)}" for k, v in props.items())
            return "{" + inner + "}"
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"{{string: {type_text(extra, root, depth + 1)}}}"
        return "object"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    return str(kind) if kind else "any"


def context_shape(context: Mapping[str, Any]) -> list[str]:
    """Trusted context as the planner sees it: placeholders and types, never values."""
    lines: list[str] = []

    def walk(value: Any, path: str, depth: int) -> None:
        if isinstance(value, dict) and value and depth < 3:
            for k, v in value.items():
                walk(v, f"{path}.{k}", depth + 1)
        else:
            lines.append(f"- {{{{{path}}}}}: {_value_type(value)}")

    for name, value in context.items():
        walk(value, name, 0)
    return lines


def _value_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = {_value_type(v) for v in value}
        return f"[{inner.pop() if len(inner) == 1 else 'any'}, ...]"
    return "object"


def repair_message(issues: tuple[Issue, ...], hints: list[str]) -> str:
    """The message that sends an invalid plan back: every issue, and the hints."""
    lines = "\n".join(f"- {i.path}: {i.message}" for i in issues)
    notes = "".join(f"Note: {h}.\n" for h in hints)
    return (
        f"That plan is invalid:\n{lines}\n{notes}"
        "Answer again with the whole corrected plan as JSON, using only the listed tools."
    )


def coverage_message(warnings: tuple[Issue, ...], hints: list[str], *, refusal: bool) -> str:
    """The message that sends back a valid plan that may not serve the whole goal: the warnings,
    the registry's tools that can do what is missing, and (``refusal``) the option to refuse."""
    lines = "\n".join(f"- {w.path}: {w.message}" for w in warnings)
    notes = "".join(f"Note: {h}.\n" for h in hints)
    end = ", or with cannot_plan if no listed tool can do it." if refusal else "."
    return (
        f"That plan may not do everything the goal asks:\n{lines}\n{notes}"
        "Answer again with the whole plan as JSON, with a step for every action the goal asks "
        f"for and its coverage{end}"
    )


def coverage_hints(warnings: tuple[Issue, ...], registry: ToolRegistry) -> tuple[list[str], bool]:
    """For coverage warnings: which registered tools can do each missing effect, and whether
    refusing should be offered (some part asks for an effect no tool has, or for none known)."""
    hints: list[str] = []
    refusal = False
    for effect in dict.fromkeys(warned_effect(w) for w in warnings):
        names = fitting_tools(effect, registry) if effect is not None else []
        if names:
            hints.append(f"the tools that can {effect}: {', '.join(names)}")
        else:
            refusal = True
    return hints, refusal


def repair_hints(plan: Plan | None, issues: tuple[Issue, ...], registry: ToolRegistry) -> list[str]:
    """The output types of the steps that issues refer to (from the registry: trusted)."""
    if plan is None:
        return []
    tools = {s.id: tool_of(s.tool, registry) for s in plan.steps}
    hints: list[str] = []
    for issue in issues:
        if issue.code not in ("bad_ref_path", "type_mismatch"):
            continue
        for sid in _REF_STEP.findall(issue.message):
            tool = tools.get(sid)
            if tool is None or tool is LLM_STEP_TOOL:
                continue
            ret = tool.returns_schema
            hint = f"the output of step {sid} ({tool.name}) is {type_text(ret, ret)}"
            if ret and hint not in hints:
                hints.append(hint)
    return hints


def tool_of(name: str, registry: ToolRegistry) -> Tool | None:
    """The tool a step names (the built-in ``llm`` included)."""
    return LLM_STEP_TOOL if name == LLM_TOOL else registry.get(name)
