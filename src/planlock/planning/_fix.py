"""Deterministic repairs of a planner's references to a step's output.

Small models write a field of a list's items on the list itself (``{{steps.2.output.id_}}`` for a
search that returns a list of events) or a field by a near name (``id`` for ``id_``,
``recipient`` for ``recipients``), and send the same reference back when the issue is shown to
them (the AgentDojo planning pass of 2026-12-05: 10 of the 38 tasks with no valid plan failed on
such paths alone, three attempts in a row). ``suggest_path`` finds the nearest path that exists
on the step's return type, with at most two edits, each one of "the first item of this list"
(``0``), "the field of a near name", or "a last field named on a string or a number is the value
itself" (``hotels.0.name`` for a list of names); ``fix_refs`` rewrites a planner's reply with
them.

Only the planner's own reply is rewritten (written before any data was read: R1), and the result
is parsed and validated again like any reply; the planner keeps it only when it is then valid, and
every rewrite is journaled with the plan (``plan_created``'s ``repaired``) and returned with the
attempt, so a person approving the plan sees what was changed. A rewrite that does not make the
plan valid is offered to the model as a hint instead (``did_you_mean``).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable
from typing import Any

from planlock.core import ANY_ITEM, Plan, at_path, deref, parse_ref, types_of
from planlock.tools import ToolRegistry
from planlock.validation import Issue, step_returns

__all__ = ["did_you_mean", "fix_refs", "suggest_path"]

MAX_EDITS = 2
_SCALARS = frozenset({"string", "number", "integer", "boolean"})
_BAD_PATH = re.compile(r"^'\{\{(.+?)\}\}': no such path on the return type of step")
_STEP_AT = re.compile(r"^\$\.steps\[(\d+)\]")


def suggest_path(
    schema: Any, path: tuple[str, ...], edits: int = MAX_EDITS
) -> tuple[str, ...] | None:
    """The path nearest ``path`` that exists on ``schema`` (with at most ``edits`` edits: a
    ``0`` put before a field that a list's items have, a field's name for a near one, a last
    field on a scalar dropped), None if there is none; ``path`` itself when it exists."""
    return _suggest(schema, path, schema if isinstance(schema, dict) else {}, edits)


def _suggest(schema: Any, path: tuple[str, ...], root: Any, edits: int) -> tuple[str, ...] | None:
    if not path:
        return ()
    seg, rest = path[0], path[1:]
    nxt = at_path(schema, (seg,), root)
    if nxt is not None:
        found = _suggest(nxt, rest, root, edits)
        if found is not None:
            return (seg, *found)
    if edits == 0:
        return None
    if not seg.isdigit():
        item = at_path(schema, ("0",), root)
        if item is not None:  # a list, named by a field of its items: the first item
            found = _suggest(item, path, root, edits - 1)
            if found is not None:
                return ("0", *found)
    for name in _near(seg, _field_names(schema, root)):
        found = _suggest(at_path(schema, (name,), root), rest, root, edits - 1)
        if found is not None:
            return (name, *found)
    if not rest and not seg.isdigit() and (types_of(schema, root) or {"object"}) <= _SCALARS:
        return ()  # a field of a string (``names.0.name``): the item is the value itself
    return None


def _field_names(schema: Any, root: Any) -> list[str]:
    s = deref(schema, root)
    names = [str(n) for n in s.get("properties", {})]
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in s.get(key, []) if isinstance(s.get(key), list) else []:
            names += [n for n in _field_names(branch, root) if n not in names]
    return names


def _near(seg: str, names: list[str]) -> list[str]:
    """Fields whose names are near ``seg``: the same but for case, a trailing ``_`` or ``s``,
    then the closest by spelling."""
    key = seg.lower().rstrip("_")
    same = [n for n in names if n != seg and n.lower().rstrip("_") in (key, key + "s", key[:-1])]
    return same + [
        n for n in difflib.get_close_matches(seg, names, n=2, cutoff=0.8) if n not in same
    ]


def did_you_mean(plan: Plan, issues: Iterable[Issue], registry: ToolRegistry) -> dict[str, str]:
    """For each ``bad_ref_path`` issue that a nearby path fixes: the placeholder as written
    (without braces) and the one to write instead."""
    returns = step_returns(plan, registry)
    out: dict[str, str] = {}
    for issue in issues:
        m = _BAD_PATH.match(issue.message) if issue.code == "bad_ref_path" else None
        if m is None or m.group(1) in out:
            continue
        ref = parse_ref(m.group(1))
        if isinstance(ref, str) or ref.source != "step" or ref.name not in returns:
            continue
        if ANY_ITEM in ref.path:
            continue
        path = suggest_path(returns[ref.name], ref.path)
        if path is not None and path != ref.path:
            out[m.group(1)] = ".".join(("steps", ref.name, "output", *path))
    return out


def fix_refs(
    body: dict[str, Any], plan: Plan, issues: Iterable[Issue], registry: ToolRegistry
) -> tuple[dict[str, Any], list[str]] | None:
    """``body`` (a planner's reply, parsed) with every placeholder that ``did_you_mean`` fixes
    rewritten in the step its issue is at, and a line per rewrite; None when there is none."""
    issues = list(issues)
    fixes = did_you_mean(plan, issues, registry)
    if not fixes:
        return None
    out = copy.deepcopy(body)
    steps = out.get("steps")
    notes: list[str] = []
    for issue in issues:
        m, at = _BAD_PATH.match(issue.message), _STEP_AT.match(issue.path)
        if m is None or at is None or m.group(1) not in fixes or not isinstance(steps, list):
            continue
        i = int(at.group(1))
        if i >= len(steps):
            continue
        old, new = m.group(1), fixes[m.group(1)]
        steps[i] = _replace(steps[i], re.compile(r"\{\{\s*" + re.escape(old) + r"\s*\}\}"), new)
        notes.append(f"{issue.path}: '{{{{{old}}}}}' -> '{{{{{new}}}}}'")
    return (out, notes) if notes else None


def _replace(value: Any, pattern: re.Pattern[str], new: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda _: "{{" + new + "}}", value)
    if isinstance(value, dict):
        return {k: _replace(v, pattern, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, pattern, new) for v in value]
    return value
