"""Static checks of bounded loops (``for_each``/``max_items``) and of ``llm`` step ``choices``.

Both return ``(code, path, message)`` triples, like ``check_llm_step``; the validator turns them
into issues. New issue codes: ``invalid_for_each``, ``for_each_not_list``, ``missing_max_items``,
``max_items_too_large``, ``max_items_without_for_each``, ``item_outside_loop`` (raised by the
validator), ``invalid_choices``, ``untrusted_choices``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planlock.core import (
    ITEM,
    MAX_ITEMS_CAP,
    Obj,
    Ref,
    Template,
    Whole,
    find_placeholders,
    types_of,
    whole_placeholder,
)
from planlock.tools import Tool
from planlock.validation._fields import schema_at
from planlock.validation._provenance import tool_trusts

__all__ = ["check_choices", "check_loop"]

Found = list[tuple[str, str, str]]


def check_loop(for_each: str | None, max_items: int | None, base: str) -> tuple[Ref | None, Found]:
    """The loop's list reference, if well formed, and the issues of the loop fields."""
    out: Found = []
    if for_each is None:
        msg = "max_items bounds a for_each loop; this step has no for_each"
        out.append(("max_items_without_for_each", f"{base}.max_items", msg))
        return None, out
    if max_items is None:
        msg = f"a step with for_each needs max_items (at most {MAX_ITEMS_CAP})"
        out.append(("missing_max_items", f"{base}", msg))
    elif max_items > MAX_ITEMS_CAP:
        msg = f"max_items is {max_items}; the limit is {MAX_ITEMS_CAP}"
        out.append(("max_items_too_large", f"{base}.max_items", msg))
    body = whole_placeholder(for_each)
    found = find_placeholders(for_each) if body is not None else []
    ref = found[0] if len(found) == 1 else None
    if not isinstance(ref, Ref) or ref.source == "item":
        msg = (
            "for_each is one whole placeholder naming a list, such as "
            f"'{{{{steps.1.output.items}}}}' (not '{{{{{ITEM}}}}}' or text)"
        )
        out.append(("invalid_for_each", f"{base}.for_each", msg))
        return None, out
    return ref, out


def check_choices(
    args: Mapping[str, Any],
    compiled: Mapping[str, Template],
    base: str,
    tools: Mapping[str, Tool | None],
    returns: Mapping[str, dict[str, Any]],
    loops: frozenset[str],
) -> tuple[tuple[tuple[str | None, Ref], ...], Found]:
    """An ``llm`` step's ``choices``: ``"{{ref}}"`` (the whole output is one of the values) or
    ``{"field": "{{ref}}", ...}`` (those output fields are). Each ref must name a list at a
    trusted place: a trusted input, or a tool's trusted output (or trusted output path)."""
    raw = compiled.get("choices")
    path = f"{base}.args.choices"
    if raw is None:
        return (), []
    out: Found = []
    if isinstance(raw, Whole):
        entries: list[tuple[str | None, Template, str]] = [(None, raw, path)]
    elif isinstance(raw, Obj):
        entries = [(k, t, f"{path}.{k}") for k, t in raw.items]
    else:
        msg = (
            "choices is a whole placeholder naming a list of trusted values, or an object "
            "mapping output fields to such placeholders (fixed values: use an enum in "
            "output_schema)"
        )
        return (), [("invalid_choices", path, msg)]
    schema = args.get("output_schema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    chosen: list[tuple[str | None, Ref]] = []
    for field, t, where in entries:
        if not isinstance(t, Whole):
            msg = "each choice is one whole placeholder naming a list of trusted values"
            out.append(("invalid_choices", where, msg))
            continue
        ref = t.ref
        if field is not None and (not isinstance(props, dict) or field not in props):
            msg = f"output_schema has no property '{field}' to constrain"
            out.append(("invalid_choices", where, msg))
            continue
        problem = _untrusted(ref, tools, loops)
        if problem:
            out.append(("untrusted_choices", where, problem))
            continue
        if ref.source == "step" and ref.name in returns:
            sub = schema_at(returns[ref.name], ref.path)
            types = None if sub is None else types_of(sub, returns[ref.name])
            if types is not None and "array" not in types:
                msg = f"'{{{{{ref.text}}}}}' is not a list of values to choose from"
                out.append(("invalid_choices", where, msg))
                continue
        chosen.append((field, ref))
    return tuple(chosen), out


def _untrusted(ref: Ref, tools: Mapping[str, Tool | None], loops: frozenset[str]) -> str:
    """Why ``ref`` is not a trusted place to take choices from ('' when it is)."""
    if ref.source == "input":
        return ""
    if ref.source == "item":
        return f"'{{{{{ref.text}}}}}': choices come from a step's output or a trusted input"
    tool = tools.get(ref.name)
    if tool is None:
        return ""  # unknown step: reported by the reference check
    inner = ref.path[1:] if ref.name in loops else ref.path
    if not tool_trusts(tool, inner):  # never an llm step's output
        return (
            f"'{{{{{ref.text}}}}}' is not trusted output: choices must come from a trusted input "
            "or a path the tool declares trusted (trusted_output)"
        )
    return ""
