"""Grounding: whether a plan's literal values come from the user's goal.

A planner model sees only trusted input (R1), so no attacker writes a plan's literals; but a
model can make one up: a payee, an amount or an address the user never gave. When a policy lets
writes run without a person, such a literal would run unseen. ``ungrounded`` finds the literals
of a step's sensitive parameters that the goal does not give, by a rule simple enough to state:

- a string must appear in the goal, case and runs of spaces aside (an IBAN, an address, a name);
- a number must be one of the goal's numbers (``1,000.50`` is 1000.5);
- booleans and null are choices, not data; a list or an object is grounded when every literal
  in it is; placeholders are judged by provenance, not here (so is text around a placeholder).

A date the goal gives in words ("next Friday") is therefore ungrounded when the plan writes it
as a date: the rule errs towards asking.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from planlock.core import Arr, Lit, Obj, Template
from planlock.validation import CompiledStep

__all__ = ["ungrounded"]

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def ungrounded(step: CompiledStep, goal: str | None) -> list[tuple[str, Any]]:
    """The (parameter, value) pairs of ``step``'s sensitive parameters with a literal value (or
    a literal inside a list or object) that the goal does not give; no goal gives nothing."""
    text = _norm(goal or "")
    numbers = _numbers(goal or "")
    found: list[tuple[str, Any]] = []
    for param, template in sorted(step.args.items()):
        if param not in step.tool.sensitive:
            continue
        bad = [v for v in _literals(template) if not _grounded(v, text, numbers)]
        if bad:
            found.append((param, template.value if isinstance(template, Lit) else bad[0]))
    return found


def _literals(template: Template) -> Iterator[Any]:
    if isinstance(template, Lit):
        yield template.value
    elif isinstance(template, Obj):
        for _, item in template.items:
            yield from _literals(item)
    elif isinstance(template, Arr):
        for item in template.items:
            yield from _literals(item)


def _grounded(value: Any, text: str, numbers: set[float]) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return float(value) in numbers
    if isinstance(value, str):
        return _norm(value) in text
    if isinstance(value, list):
        return all(_grounded(v, text, numbers) for v in value)
    if isinstance(value, dict):
        return all(_grounded(v, text, numbers) for v in value.values())
    return False


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _numbers(text: str) -> set[float]:
    found: set[float] = set()
    for match in _NUMBER.findall(text):
        try:
            found.add(float(match.replace(",", "")))
        except ValueError:  # "1,2,3": a list, not a number
            continue
    return found
