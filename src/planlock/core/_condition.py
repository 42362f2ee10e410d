"""Conditions (a step's ``when``) compiled once, then evaluated on the values with a lookup.

The validator compiles a step's ``Condition`` into ``Comparison`` / ``Every`` / ``Some`` /
``Negate`` (each ``Comparison`` with its parsed ``Ref``); the executor evaluates that same
compiled form, as it resolves the same compiled argument templates: no second parser at run
time.

Comparison is JSON comparison: a boolean equals only a boolean (``true`` is not ``1``), numbers
compare by value (``1 == 1.0``), strings by their text. A ``null`` value (an optional field the
tool left empty) equals no literal, is in no list, and is neither less nor greater than any
number, so ``ne`` holds for it and every other comparison does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from planlock.core._plan import AllOf, AnyOf, Compare, Condition, Not
from planlock.core._refs import ITEM, ITEM_NUMBER, Ref, parse_ref, whole_placeholder

__all__ = [
    "Check",
    "Comparison",
    "ConditionTypeError",
    "Every",
    "Negate",
    "Some",
    "comparisons",
    "compile_condition",
    "condition_refs",
    "condition_text",
    "evaluate_condition",
]


@dataclass(frozen=True, slots=True)
class Comparison:
    """``ref op value``."""

    ref: Ref
    op: str
    value: Any
    """A literal, or for ``in`` a tuple of literals."""
    path: str
    """The JSON path of this comparison in the plan (for issues)."""


@dataclass(frozen=True, slots=True)
class Every:
    parts: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Some:
    parts: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Negate:
    part: Check


Check = Comparison | Every | Some | Negate


class ConditionTypeError(ValueError):
    """A value that an ordering comparison cannot compare (not a number)."""


def compile_condition(cond: Condition, path: str, problems: list[tuple[str, str]]) -> Check | None:
    """Compile a condition; malformed references are appended to ``problems`` as (path, msg),
    and then the result is None."""
    before = len(problems)
    check = _compile(cond, path, problems)
    return check if len(problems) == before else None


def _compile(cond: Condition, path: str, problems: list[tuple[str, str]]) -> Check:
    if isinstance(cond, AllOf):
        return Every(
            tuple(_compile(c, f"{path}.all[{i}]", problems) for i, c in enumerate(cond.all))
        )
    if isinstance(cond, AnyOf):
        return Some(
            tuple(_compile(c, f"{path}.any[{i}]", problems) for i, c in enumerate(cond.any))
        )
    if isinstance(cond, Not):
        return Negate(_compile(cond.not_, f"{path}.not", problems))
    assert isinstance(cond, Compare)
    ref = _ref(cond.ref, f"{path}.ref", problems)
    return Comparison(ref, cond.op, cond.value, path)


def _each(parts: tuple[Condition, ...]) -> Iterator[tuple[int, Condition]]:
    return enumerate(parts)


def _ref(text: str, path: str, problems: list[tuple[str, str]]) -> Ref:
    body = whole_placeholder(text)
    parsed = parse_ref(body) if body is not None else None
    placeholder = Ref("input", "", (), text)  # stands in for a malformed reference
    if body is None or "*" in body:
        msg = (
            "a condition's ref is one whole placeholder naming a typed value, such as "
            f"'{{{{steps.2.output.is_due}}}}' (not {text!r})"
        )
        problems.append((path, msg))
        return placeholder
    if isinstance(parsed, str):
        problems.append((path, parsed))
        return placeholder
    assert parsed is not None
    if parsed.source == "item":
        name = ITEM_NUMBER if parsed.name == ITEM_NUMBER else ITEM
        msg = f"'{{{{{name}}}}}' cannot be in a condition: a step's condition is checked once"
        problems.append((path, msg))
        return placeholder
    return parsed


_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def condition_text(cond: Condition) -> str:
    """A condition as people read it: ``steps.1.output.rating > 4 and not (x in [1, 2])``."""
    if isinstance(cond, AllOf | AnyOf):
        word, parts = (" and ", cond.all) if isinstance(cond, AllOf) else (" or ", cond.any)
        return word.join(_grouped(c) for c in parts)
    if isinstance(cond, Not):
        return f"not {_grouped(cond.not_)}"
    ref = whole_placeholder(cond.ref) or cond.ref
    if isinstance(cond.value, tuple):  # 'in'
        return f"{ref} in [{', '.join(json.dumps(v) for v in cond.value)}]"
    return f"{ref} {_SYMBOLS[cond.op]} {json.dumps(cond.value)}"


def _grouped(cond: Condition) -> str:
    text = condition_text(cond)
    return f"({text})" if isinstance(cond, AllOf | AnyOf) else text


def comparisons(check: Check) -> Iterator[Comparison]:
    """Every comparison of a condition, in order."""
    if isinstance(check, Comparison):
        yield check
    elif isinstance(check, Negate):
        yield from comparisons(check.part)
    else:
        for part in check.parts:
            yield from comparisons(part)


def condition_refs(check: Check) -> Iterator[Ref]:
    """Every reference a condition reads, in order."""
    return (t.ref for t in comparisons(check))


def evaluate_condition(check: Check, lookup: Callable[[Ref], Any]) -> tuple[bool, dict[str, Any]]:
    """Whether the condition holds, and the value of every reference it reads (by placeholder
    text). ``lookup`` gives a reference's value (and raises ``Unresolvable`` when it has none);
    every reference is looked up, so the values journaled are the whole picture."""
    values = {t.ref.text: lookup(t.ref) for t in comparisons(check)}
    return _holds(check, values), values


def _holds(check: Check, values: dict[str, Any]) -> bool:
    if isinstance(check, Every):
        return all(_holds(p, values) for p in check.parts)
    if isinstance(check, Some):
        return any(_holds(p, values) for p in check.parts)
    if isinstance(check, Negate):
        return not _holds(check.part, values)
    return compare(check.op, values[check.ref.text], check.value)


def compare(op: str, left: Any, right: Any) -> bool:
    """``left op right`` with JSON semantics (see the module docstring)."""
    if op == "eq":
        return _equal(left, right)
    if op == "ne":
        return not _equal(left, right)
    if op == "in":
        return any(_equal(left, r) for r in right)
    if left is None:
        return False
    if not _is_number(left):
        raise ConditionTypeError(f"'{op}' compares numbers; the value is {type(left).__name__}")
    if op == "lt":
        return bool(left < right)
    if op == "le":
        return bool(left <= right)
    if op == "gt":
        return bool(left > right)
    return bool(left >= right)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    return type(left) is type(right) and bool(left == right)
