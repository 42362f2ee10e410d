"""Static checks of a step's condition (``when``): each comparison reads an earlier step's output
or a trusted input, at a path whose type is a boolean, a number or an enum (a string only with an
enum), with a literal that value can equal (or, for ``lt``/``le``/``gt``/``ge``, a number).

New issue codes: ``invalid_condition`` (a ref that is not one whole placeholder, or names
``{{item}}``), ``untyped_condition`` (the value is not a boolean, a number or an enum),
``condition_type_mismatch`` (the literal can never match, or an ordering of non-numbers).
References are checked like arguments' (``unknown_step``, ``bad_ref_path``, ``self_reference``,
``unknown_input``); the steps a condition reads are dependencies (a cycle is reported as one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from planlock.core import (
    ORDER_OPS,
    Check,
    Comparison,
    Condition,
    Issue,
    Unresolvable,
    comparisons,
    compile_condition,
    deref,
    json_type,
    types_of,
    walk_path,
)
from planlock.validation._checks import check_ref
from planlock.validation._fields import schema_at

__all__ = ["check_when"]

_TYPED = frozenset({"boolean", "integer", "number"})
_NUMBERS = frozenset({"integer", "number"})


def check_when(
    when: Condition,
    base: str,
    step_id: str,
    index: Mapping[str, int],
    returns: Mapping[str, dict[str, Any]],
    inputs: Mapping[str, Any] | None,
    issues: list[Issue],
) -> Check | None:
    """The compiled condition (None when malformed); every issue is appended to ``issues``."""
    problems: list[tuple[str, str]] = []
    check = compile_condition(when, f"{base}.when", problems)
    issues.extend(Issue("invalid_condition", p, m) for p, m in problems)
    if check is None:
        return None
    for test in comparisons(check):
        before = len(issues)
        check_ref(test.ref, f"{test.path}.ref", step_id, index, returns, inputs, issues)
        if len(issues) == before:
            issues.extend(_type_issues(test, returns, inputs))
    return check


def _type_issues(
    test: Comparison, returns: Mapping[str, dict[str, Any]], inputs: Mapping[str, Any] | None
) -> list[Issue]:
    ref = test.ref
    if ref.source == "step":
        root = returns.get(ref.name)
        sub = None if root is None else schema_at(root, ref.path)
        if root is None or sub is None:
            return []  # an unknown tool or path: reported elsewhere
        return _schema_issues(test, sub, root)
    if inputs is None or ref.name not in inputs:
        return []
    try:
        value = walk_path(inputs[ref.name], ref.path, ref.name)
    except Unresolvable:
        return []
    return _value_issues(test, value)


def _schema_issues(test: Comparison, sub: Any, root: dict[str, Any]) -> list[Issue]:
    where, text = test.path, test.ref.text
    types = types_of(sub, root)
    plain = (types or set()) - {"null"}
    enumerated = _enumerated(sub, root)
    if types is None or not (enumerated or (plain and plain <= _TYPED)):
        got = "unknown" if types is None else "/".join(sorted(types))
        msg = (
            f"'{{{{{text}}}}}' has type {got}; a condition reads a boolean, a number or an enum "
            "(a string only with an enum: give an llm step's output_schema an enum)"
        )
        return [Issue("untyped_condition", f"{where}.ref", msg)]
    if test.op in ORDER_OPS:
        if plain and plain <= _NUMBERS:
            return []
        msg = f"'{test.op}' compares numbers; '{{{{{text}}}}}' has type {'/'.join(sorted(plain))}"
        return [Issue("condition_type_mismatch", f"{where}.op", msg)]
    schema = {**sub, "$defs": root.get("$defs", {})} if isinstance(sub, dict) else {}
    import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

    validator = jsonschema.Draft202012Validator(schema)
    literals = test.value if test.op == "in" else (test.value,)
    out: list[Issue] = []
    for i, literal in enumerate(literals):
        if not validator.is_valid(literal):
            at = f"{where}.value[{i}]" if test.op == "in" else f"{where}.value"
            msg = (
                f"{json.dumps(literal)} is not a value '{{{{{text}}}}}' can have "
                f"({_shape(sub, root)})"
            )
            out.append(Issue("condition_type_mismatch", at, msg))
    return out


def _value_issues(test: Comparison, value: Any) -> list[Issue]:
    """A trusted input's type is the given value's."""
    where, text = test.path, test.ref.text
    kind = json_type(value)
    if kind not in _TYPED and kind != "null":
        msg = f"'{{{{{text}}}}}' is a {kind}; a condition reads a boolean or a number input"
        return [Issue("untyped_condition", f"{where}.ref", msg)]
    number = kind in _NUMBERS
    if test.op in ORDER_OPS:
        if number or kind == "null":
            return []
        msg = f"'{test.op}' compares numbers; '{{{{{text}}}}}' is a {kind}"
        return [Issue("condition_type_mismatch", f"{where}.op", msg)]
    literals = test.value if test.op == "in" else (test.value,)
    out: list[Issue] = []
    for i, literal in enumerate(literals):
        lkind = json_type(literal)
        fits = kind == "null" or (lkind in _NUMBERS if number else lkind == kind)
        if not fits:
            at = f"{where}.value[{i}]" if test.op == "in" else f"{where}.value"
            msg = f"{json.dumps(literal)} is not a value '{{{{{text}}}}}' can have (a {kind})"
            out.append(Issue("condition_type_mismatch", at, msg))
    return out


def _enumerated(schema: Any, root: dict[str, Any]) -> bool:
    """Whether every value the schema allows is listed (``enum``/``const``; ``null`` allowed)."""
    s = deref(schema, root)
    if "enum" in s or "const" in s:
        return True
    for key in ("anyOf", "oneOf"):
        branches = s.get(key)
        if isinstance(branches, list) and branches:
            return all(
                _enumerated(b, root) or deref(b, root).get("type") == "null" for b in branches
            )
    return False


def _shape(schema: Any, root: dict[str, Any]) -> str:
    s = deref(schema, root)
    if isinstance(s.get("enum"), list):
        return "one of " + ", ".join(json.dumps(v) for v in s["enum"])
    types = types_of(s, root)
    return "a " + "/".join(sorted(types)) if types else "unknown"
