"""Static checks of one step's references and arguments: each reference names a known step
(with that path on its return type) or a given input; each argument fits its parameter's schema
(literals exactly as at call time, placeholders by the types they will hold).

Each check appends ``Issue`` objects with their JSON paths; ``analyse`` calls them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from planlock.core import (
    Interp,
    Issue,
    Lit,
    Obj,
    Ref,
    Template,
    Unresolvable,
    Whole,
    accepts_types,
    at_path,
    json_type,
    types_of,
    walk_path,
)
from planlock.tools import Tool
from planlock.validation._fields import schema_at

__all__ = ["check_args", "check_ref", "clear_literal_checks", "ref_types"]


def check_ref(
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
        # (With no path the output itself is named: at_path never returns None for it.)
        elif ref.path and ref.name in returns and schema_at(returns[ref.name], ref.path) is None:
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


def check_args(
    args: Mapping[str, Any],
    compiled: Mapping[str, Template],
    tool: Tool,
    base: str,
    returns: Mapping[str, dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    issues: list[Issue],
    memo: dict[Any, Any] | None = None,
    where: Mapping[str, str] | None = None,
) -> None:
    """``memo``: one dict for the whole plan, to decide each (output schema, path, parameter)
    once (plans pass the same kind of value to the same parameter again and again); ``where``:
    each argument's JSON path, when the caller has written them already."""
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
            t,
            props[pname],
            schema,
            tool,
            pname,
            where[pname] if where is not None else f"{base}.args.{pname}",
            returns,
            inputs,
            issues,
            memo=memo,
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
    memo: dict[Any, Any] | None = None,
) -> None:
    if isinstance(t, Lit):
        for loc, msg in _literal_errors(t.value, tool, pname, pschema, root, top):
            issues.append(Issue("invalid_arg", path + loc, msg))
    elif isinstance(t, Whole):
        # A top-level parameter schema and an output schema live as long as the analysis, so
        # their ids are a safe key for its memo (sub-schemas may be built on the fly: not kept).
        kept = memo if top and t.ref.source == "step" else None
        mismatch = _mismatch(t.ref, pschema, root, returns, inputs, kept)
        if mismatch is not None:
            got, want = mismatch
            msg = f"'{{{{{t.ref.text}}}}}' has type {got}; expected {want}"
            issues.append(Issue("type_mismatch", path, msg))
    elif isinstance(t, Interp):
        key = ("string", id(pschema), id(root))
        if memo is not None and top and key in memo:
            takes = memo[key]
        else:
            takes = accepts_types(pschema, {"string"}, root)
            if memo is not None and top:
                memo[key] = takes
        if not takes:
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


def _mismatch(
    ref: Ref,
    pschema: Any,
    root: dict[str, Any],
    returns: Mapping[str, dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    memo: dict[Any, Any] | None,
) -> tuple[str, str] | None:
    """The types a reference has and the parameter takes, when it does not take them."""
    key = ("ref", id(returns.get(ref.name)), ref.path, id(pschema), id(root))
    if memo is not None and key in memo:
        found: tuple[str, str] | None = memo[key]
        return found
    vtypes = ref_types(ref, returns, inputs)
    found = None
    if not accepts_types(pschema, vtypes, root):
        want = sorted(types_of(pschema, root) or [])
        found = ("/".join(sorted(vtypes or [])), "/".join(want))
    if memo is not None:
        memo[key] = found
    return found


def _literal_errors(
    value: Any, tool: Tool, pname: str, pschema: Any, root: dict[str, Any], top: bool
) -> list[tuple[str, str]]:
    """Errors for a literal: Pydantic (strict JSON mode, as at call time) for a whole parameter,
    JSON Schema for a piece of a parameter that also holds placeholders."""
    if top and pname in tool.param_adapters:
        # Keyed by repr, which tells apart every two JSON values json.dumps does (and is
        # cheaper to write); the JSON text is written only to check a literal not seen yet.
        return list(_adapter_errors(tool.param_adapters[pname], repr(value), value))
    sub = {**pschema, "$defs": root.get("$defs", {})} if isinstance(pschema, dict) else {}
    import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

    validator = jsonschema.Draft202012Validator(sub)
    return [(_loc(tuple(e.absolute_path)), e.message) for e in validator.iter_errors(value)]


def _adapter_errors(adapter: Any, key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A literal checked by a parameter's adapter (cached: plans repeat their literals)."""
    found = _checked.get((adapter, key))
    if found is None:
        if len(_checked) >= _CHECKED_MAX:
            _checked.clear()  # a bound, not a policy: plans repeat a few literals
        found = _checked[adapter, key] = _check_literal(adapter, json.dumps(value))
    return found


_checked: dict[tuple[Any, str], tuple[tuple[str, str], ...]] = {}
_CHECKED_MAX = 1024


def _check_literal(adapter: Any, text: str) -> tuple[tuple[str, str], ...]:
    try:
        adapter.validate_json(text, strict=True)
    except ValidationError as exc:
        return tuple((_loc(e["loc"]), e["msg"]) for e in exc.errors(include_url=False))
    return ()


def clear_literal_checks() -> None:
    _checked.clear()


def _loc(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def ref_types(
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

    t = json_type(v)
    return {t, "number"} if t == "integer" else {t}
