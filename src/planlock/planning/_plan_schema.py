"""The plan's JSON Schema (R2), generated from the registry.

A planner's reply is constrained by ``plan_schema``: each step's ``tool`` is a ``const`` and its
``args`` follow that tool's own argument schema, with ``{{...}}`` placeholders allowed wherever a
value is expected, so a constrained backend cannot name an unknown tool. A step's ``when`` follows
the condition model's own schema (``planlock.core.Condition``, hoisted as ``when__<name>``). With
``coverage``, the reply also states, after its steps, which steps serve each part of the goal
(``planlock.core.Coverage``'s own schema). The schema also allows ``{"cannot_plan": "<why>"}`` for
a goal the tools cannot serve.

With ``context`` (the names of the trusted context values given to the planner), the grammar is
narrowed to what can be valid (``_narrow``): a placeholder starts with ``steps.<n>.output``,
``item``, ``item_number`` or a given name; step ids are ``1``, ``2``...; and the first step has no
``when`` (nothing ran before it). A constrained backend then cannot write a placeholder the
validator would reject for its root, which the embedded model did three attempts in a row.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection
from typing import Any

from pydantic import TypeAdapter

from planlock.core import (
    MAX_ITEMS_CAP,
    STEP_ID_PATTERN,
    WHOLE_PLACEHOLDER_PATTERN,
    Condition,
    Coverage,
    types_of,
)
from planlock.tools import LLM_STEP_TOOL, Tool, ToolRegistry

__all__ = ["LIST_PLACEHOLDER_SCHEMA", "PLACEHOLDER_SCHEMA", "TEXT_PATTERN", "plan_schema"]

PLACEHOLDER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\{\{[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\}\}$",
}
"""A whole-value placeholder, allowed wherever a non-string value is expected."""

LIST_PLACEHOLDER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\{\{[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+|\.\*|\[\*\])*\}\}$",
}
"""A whole placeholder naming a list, where ``[*]`` may project every item's field
(``{{steps.1.output[*].iban}}``): for ``for_each`` and ``choices``."""

TEXT_PATTERN = r"^(?:[^{}]|\{\{[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\}\})*$"
"""A string argument: braces only as well-formed ``{{a.b.0.c}}`` placeholders."""

_DROP = frozenset({"title", "examples"})
_SHAPED = frozenset(
    {"type", "anyOf", "oneOf", "allOf", "$ref", "const", "enum", "properties", "items", "not"}
)
_OTHER_JSON: tuple[dict[str, Any], ...] = tuple(
    {"type": t} for t in ("number", "boolean", "null", "array", "object")
)


def plan_schema(
    registry: ToolRegistry,
    *,
    llm_step: bool = True,
    cannot_plan: bool = True,
    max_steps: int | None = None,
    loops: bool = True,
    conditions: bool = True,
    coverage: bool = False,
    context: Collection[str] | None = None,
) -> dict[str, Any]:
    """The JSON Schema a planner's reply must follow, generated from ``registry``.

    One ``anyOf`` branch per tool: ``tool`` is a ``const``, ``args`` is the tool's own argument
    schema (``$defs`` hoisted to the root under ``<tool>__<name>``), where a value that is not a
    string may also be a whole ``{{...}}`` placeholder. ``llm_step`` adds the built-in quarantined
    ``llm`` step; ``cannot_plan`` allows ``{"cannot_plan": "<why>"}`` as the whole reply;
    ``max_steps`` bounds the number of steps (and so a runaway generation); ``loops`` offers
    ``for_each``/``max_items`` and ``conditions`` offers ``when`` (small models tend to fill in
    every optional field they see). ``coverage`` requires, after the steps, a non-empty
    ``coverage`` list: each part of the goal with the ids of the steps that serve it.
    ``context`` narrows placeholders, step ids and the first step (see the module's docstring).
    """
    defs: dict[str, Any] = {}
    tools = sorted(registry, key=lambda t: t.name)
    if llm_step:
        tools.append(LLM_STEP_TOOL)
    when = _when_schema(defs) if conditions else None
    branches = [_step_schema(t, defs, loops=loops, when=when) for t in tools]
    steps: dict[str, Any] = {
        "type": "object",
        "properties": {"steps": {"type": "array", "minItems": 1, "items": {"anyOf": branches}}},
        "required": ["steps"],
        "additionalProperties": False,
    }
    if max_steps is not None:
        steps["properties"]["steps"]["maxItems"] = max_steps
    if context is not None and when is not None:
        # prefixItems: the first step's branches, without ``when`` (no step ran before it). The
        # arguments' schemas move to ``$defs`` (``args-<tool>``; a tool name has no ``-``), so
        # both sets of branches share them: a backend that puts the schema in the prompt (a
        # tool's input_schema) pays for a step's wrapper twice, not for every argument.
        for branch in branches:
            name = f"args-{branch['properties']['tool']['const']}"
            defs[name] = branch["properties"]["args"]
            branch["properties"]["args"] = {"$ref": f"#/$defs/{name}"}
        first = [_without_when(b) for b in branches]
        steps["properties"]["steps"]["prefixItems"] = [{"anyOf": first}]
    if coverage:
        steps["properties"]["coverage"] = _coverage_schema(max_steps)
        steps["required"] = ["steps", "coverage"]
    root: dict[str, Any]
    if cannot_plan:
        refusal = {
            "type": "object",
            "properties": {"cannot_plan": {"type": "string", "minLength": 1, "maxLength": 300}},
            "required": ["cannot_plan"],
            "additionalProperties": False,
        }
        root = {"type": "object", "anyOf": [steps, refusal]}
    else:
        root = steps
    if defs:
        root["$defs"] = defs
    return root if context is None else _narrow(root, context, max_steps)


_ROOT = r"(?:steps\.{id}\.output|item(?:_number)?|{names})"
_SEGMENTS = r"(?:\.[A-Za-z0-9_-]+)*"


def _narrow(schema: dict[str, Any], context: Collection[str], max_steps: int | None) -> Any:
    """The schema with every placeholder pattern limited to the roots that can exist, and step
    ids (where a step is named or cited) to ``1``, ``2``...: the prompt's own conventions."""
    digits = len(str(max_steps)) if max_steps is not None else 3
    step_id = "[1-9]" + ("[0-9]?" * (digits - 1))
    names = "|".join(re.escape(n) for n in sorted(context) if _NAME.fullmatch(n))
    root = _ROOT.format(id=step_id, names=names).replace("|)", ")")
    patterns = {
        WHOLE_PLACEHOLDER_PATTERN: rf"^\{{\{{{root}{_SEGMENTS}\}}\}}$",
        LIST_PLACEHOLDER_SCHEMA["pattern"]: (
            rf"^\{{\{{{root}(?:\.[A-Za-z0-9_-]+|\.\*|\[\*\])*\}}\}}$"
        ),
        TEXT_PATTERN: rf"^(?:[^{{}}]|\{{\{{{root}{_SEGMENTS}\}}\}})*$",
        STEP_ID_PATTERN: rf"^{step_id}$",
    }
    return _replace_patterns(schema, patterns)


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _replace_patterns(schema: Any, patterns: dict[str, str]) -> Any:
    if isinstance(schema, list):
        return [_replace_patterns(s, patterns) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _replace_patterns(v, patterns) for k, v in schema.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern in patterns:
        out["pattern"] = patterns[pattern]
    return out


def _without_when(branch: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in branch["properties"].items() if k != "when"}
    return {**branch, "properties": props}


def _coverage_schema(max_steps: int | None) -> dict[str, Any]:
    """The schema of the ``coverage`` list, generated from ``Coverage`` (after the steps, so the
    ids it cites were written first)."""
    item = _clean(TypeAdapter(Coverage).json_schema(), "")
    item.pop("description", None)
    out: dict[str, Any] = {"type": "array", "minItems": 1, "items": item}
    if max_steps is not None:
        out["maxItems"] = max_steps
        item["properties"]["steps"]["maxItems"] = max_steps
    return out


def _when_schema(defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of a step's ``when``, generated from the condition model; its ``$defs`` go to
    ``defs`` as ``when__<name>``."""
    schema = TypeAdapter(Condition).json_schema(ref_template="#/$defs/when__{model}")
    for name, sub in schema.pop("$defs", {}).items():
        defs[f"when__{name}"] = _clean(sub, "")
    return dict(_clean(schema, ""))


def _step_schema(
    tool: Tool,
    defs: dict[str, Any],
    *,
    loops: bool = True,
    when: dict[str, Any] | None = None,
) -> dict[str, Any]:
    params = copy.deepcopy(tool.params_schema)
    prefix = f"{tool.name}__"
    local_defs = params.pop("$defs", {})
    renamed = {f"{prefix}{k}": _clean(v, prefix) for k, v in local_defs.items()}
    root = {"$defs": {**defs, **renamed}}
    for name, sub in renamed.items():
        defs[name] = _with_placeholders(sub, root)
    args = _with_placeholders(_clean(params, prefix), root)
    if tool is LLM_STEP_TOOL:
        # The instruction and output schema of a quarantined step are fixed by the plan (R4).
        props = args["properties"]
        props["instruction"] = {**props["instruction"], "pattern": "^[^{}]*$", "minLength": 1}
        props["output_schema"] = _clean(params["properties"]["output_schema"], prefix)
        props["choices"] = {
            "description": props["choices"].get("description", ""),
            "anyOf": [
                LIST_PLACEHOLDER_SCHEMA,
                {"type": "object", "additionalProperties": LIST_PLACEHOLDER_SCHEMA},
            ],
        }
    args.setdefault("type", "object")
    args.setdefault("properties", {})
    args["additionalProperties"] = False
    fields: dict[str, Any] = {
        "id": {"type": "string", "pattern": STEP_ID_PATTERN},
        "tool": {"const": tool.name},
        "args": args,
    }
    if loops:
        fields["for_each"] = LIST_PLACEHOLDER_SCHEMA
        fields["max_items"] = {"type": "integer", "minimum": 1, "maximum": MAX_ITEMS_CAP}
    if when is not None:
        fields["when"] = copy.deepcopy(when)
    return {
        "type": "object",
        "properties": fields,
        "required": ["id", "tool", "args"],
        "additionalProperties": False,
    }


def _clean(schema: Any, prefix: str) -> Any:
    """Drop titles; point ``$ref``s at the hoisted, prefixed ``$defs``; write ``oneOf`` as
    ``anyOf`` (the embedded model's grammar engine, llguidance, refuses ``oneOf``, and a looser
    grammar is safe: the reply is validated against the real schemas afterwards)."""
    if isinstance(schema, list):
        return [_clean(s, prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP and not isinstance(value, dict):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = "#/$defs/" + prefix + value.removeprefix("#/$defs/")
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _clean(v, prefix) for k, v in value.items()}
        elif key == "oneOf":
            out["anyOf"] = _clean(value, prefix)
        else:
            out[key] = _clean(value, prefix)
    return out


def _with_placeholders(schema: Any, root: dict[str, Any]) -> Any:
    """Allow a whole ``{{...}}`` placeholder wherever the schema does not accept a string."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(out):
        out["pattern"] = TEXT_PATTERN
    if not _SHAPED & set(out):  # any JSON value: strings in it still hold only placeholders
        out["anyOf"] = [{"type": "string", "pattern": TEXT_PATTERN}, *_OTHER_JSON]
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _wrap(v, root) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _wrap(out["items"], root)
    if out.get("additionalProperties") is True and out.get("type") == "object":
        out["additionalProperties"] = {}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _wrap(out["additionalProperties"], root)
    for key in ("anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_with_placeholders(b, root) for b in out[key]]
    return out


def _wrap(schema: Any, root: dict[str, Any]) -> Any:
    inner = _with_placeholders(schema, root)
    types = types_of(inner, root)
    if types is None or "string" in types:
        return inner
    return {"anyOf": [inner, PLACEHOLDER_SCHEMA]}
