"""Deterministic repairs of a planner's references to a step's output.

Small models write a field of a list's items on the list itself (``{{steps.2.output.id_}}`` for a
search that returns a list of events) or a field by a near name (``id`` for ``id_``,
``recipient`` for ``recipients``), and send the same reference back when the issue is shown to
them (the AgentDojo planning pass of 2026-12-05: 10 of the 38 tasks with no valid plan failed on
such paths alone, three attempts in a row). ``suggest_path`` finds the nearest path that exists
on the step's return type, with at most two edits, each one of "the first item of this list"
(``0``), "the field of a near name", or "a last field named on a string or a number is the value
itself" (``hotels.0.name`` for a list of names); ``fix_refs`` rewrites a planner's reply with
them. A coverage citation of a step that does not exist (``"steps": ["14"]`` in a 9-step plan)
is dropped: the part is then uncovered if nothing else serves it, a warning the planner repairs
on, as coverage is advice and never made a plan fail (only its bad citations did).

A list where the parameter wants one value, or a list wrapped in a list, is unwrapped by type:
``["{{steps.1.output}}"]`` for a parameter that takes a list of strings, when step 1 returns that
list, is the list itself (travel 19 wrote it three attempts in a row); ``{{steps.4.output}}`` of a
list where one string is wanted is its first item (``{{steps.4.output.0}}``), as for a field read
on a list above (travel 10); and one value where a list is wanted is a list of that value
(``"{{steps.1.output.0}}"`` for ``hotel_names`` -> ``["{{steps.1.output.0}}"]``). The planner
applies the rewrites again to what a rewrite leaves (``.0.name`` on a list of names is first the
item, then, for a list parameter, a list of it: travel 3, 4, 12 and 17 wrote it on every step),
except the first item of a list, which is read only where the model itself wrote the list: after
a near name's rewrite it would be a guess on a guess (``participant`` -> ``participants`` -> the
first participant, for an event id).

Fields that say nothing are dropped too: ``max_items`` on a step with no ``for_each`` (it bounds
no loop) and an empty ``choices`` (``{}``: it constrains no field). The embedded model fills in
optional fields it sees in the grammar (``"max_items": 100`` on every step, ``"choices": {}``),
and sent them back three attempts in a row. Nothing else is dropped: a condition (``when``) that
cannot be evaluated is an issue for the model, since without it the step would run unconditionally.

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

__all__ = ["did_you_mean", "fix_reply", "suggest_path"]

MAX_EDITS = 2
_SCALARS = frozenset({"string", "number", "integer", "boolean"})
_BAD_PATH = re.compile(r"^'\{\{(.+?)\}\}': no such path on the return type of step")
_STEP_AT = re.compile(r"^\$\.steps\[(\d+)\]")
_CITATION = re.compile(r"^\$\.coverage\[(\d+)\]\.steps\[(\d+)\]$")
_LIST_FOR_ONE = re.compile(r"^'\{\{(.+?)\}\}' has type array; expected (.+)$")
_ONE_FOR_LIST = re.compile(r"^'(\{\{.+?\}\})' has type (.+); expected (.+)$")
_ARG_PATH = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NO_OP = {"max_items_without_for_each": "max_items", "invalid_choices": "choices"}
"""Issues whose field, when it says nothing, is dropped (``_drop_no_ops``)."""


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


def fix_reply(
    body: dict[str, Any],
    plan: Plan,
    issues: Iterable[Issue],
    registry: ToolRegistry,
    *,
    first_items: bool = True,
) -> tuple[dict[str, Any], list[str]] | None:
    """``body`` (a planner's reply, parsed) with every placeholder that ``did_you_mean`` fixes
    rewritten in the step its issue is at, every coverage citation of a step that does not
    exist dropped (the part then counts as uncovered if nothing is left: a warning the planner
    repairs on), every field that says nothing dropped, and lists unwrapped or made where the
    types say (``first_items``: also a list's first item where one value is wanted, for the
    model's own reply only); a line per change; None when there is none."""
    issues = list(issues)
    if not issues:
        return None
    fixes = did_you_mean(plan, issues, registry)
    out = copy.deepcopy(body)
    notes = _drop_citations(out, issues) + _drop_no_ops(out, issues)
    notes += _unwrap_lists(out, issues, first_items=first_items)
    steps = out.get("steps")
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


def _drop_citations(body: dict[str, Any], issues: list[Issue]) -> list[str]:
    """Remove from ``body``'s coverage the cited step ids that do not exist (``unknown_step``
    issues at ``$.coverage[i].steps[j]``)."""
    coverage = body.get("coverage")
    drop: dict[int, set[int]] = {}
    for issue in issues:
        m = _CITATION.match(issue.path) if issue.code == "unknown_step" else None
        if m is not None:
            drop.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    notes: list[str] = []
    if not drop or not isinstance(coverage, list):
        return notes
    for i, js in sorted(drop.items()):
        part = coverage[i] if i < len(coverage) else None
        if not isinstance(part, dict) or not isinstance(part.get("steps"), list):
            continue
        cited: list[Any] = part["steps"]
        part["steps"] = [sid for j, sid in enumerate(cited) if j not in js]
        gone = ", ".join(f"'{cited[j]}'" for j in sorted(js) if j < len(cited))
        notes.append(f"$.coverage[{i}].steps: dropped {gone} (no such step)")
    return notes


def _drop_no_ops(body: dict[str, Any], issues: list[Issue]) -> list[str]:
    """Remove from ``body``'s steps ``max_items`` where there is no ``for_each``, and a
    ``choices`` that is an empty object (the issues ``_NO_OP`` names, at those fields)."""
    steps = body.get("steps")
    notes: list[str] = []
    for issue in issues:
        name, at = _NO_OP.get(issue.code), _STEP_AT.match(issue.path)
        if name is None or at is None or not isinstance(steps, list):
            continue
        i = int(at.group(1))
        step = steps[i] if i < len(steps) else None
        if not isinstance(step, dict):
            continue
        if name == "max_items" and issue.path == f"$.steps[{i}].max_items":
            if step.get("for_each") is None and "max_items" in step:
                notes.append(f"{issue.path}: dropped {step.pop('max_items')!r} (no for_each)")
        elif name == "choices" and issue.path == f"$.steps[{i}].args.choices":
            args = step.get("args")
            if isinstance(args, dict) and args.get("choices") == {}:
                del args["choices"]
                notes.append(f"{issue.path}: dropped {{}} (no field to constrain)")
    return notes


def _unwrap_lists(body: dict[str, Any], issues: list[Issue], *, first_items: bool) -> list[str]:
    """Rewrite in ``body``'s step arguments each whole placeholder whose type is a list where one
    value is wanted, or one value where a list is wanted (``type_mismatch`` issues): the only item
    of a list literal becomes the list itself; with ``first_items``, a whole argument reads the
    list's first item (step outputs only); one value becomes a list of it."""
    steps = body.get("steps")
    notes: list[str] = []
    for issue in issues:
        many = _LIST_FOR_ONE.match(issue.message) if issue.code == "type_mismatch" else None
        one = _ONE_FOR_LIST.match(issue.message) if issue.code == "type_mismatch" else None
        if one is not None and ("*" in one[1] or not _one_for_list(one[2], one[3])):
            one = None
        loc = _locate_issue(steps, issue.path) if many or one else None
        if loc is None:
            continue
        parent, key, grand, gkey = loc
        if many is not None:
            text = "{{" + many[1] + "}}"
            if parent[key] != text:
                continue
            if isinstance(parent, list) and len(parent) == 1 and grand is not None:
                grand[gkey] = text
                where = issue.path[: issue.path.rindex("[")]
                notes.append(f"{where}: ['{text}'] -> '{text}' (the list itself)")
            elif first_items and isinstance(parent, dict) and _first_item_fits(many[1], many[2]):
                first = "{{" + many[1] + ".0}}"
                parent[key] = first
                notes.append(f"{issue.path}: '{text}' -> '{first}' (the first item)")
        elif one is not None and parent[key] == one[1]:
            parent[key] = [one[1]]
            notes.append(f"{issue.path}: '{one[1]}' -> ['{one[1]}'] (a list of it)")
    return notes


def _locate_issue(steps: Any, path: str) -> tuple[Any, Any, Any, Any] | None:
    """``_locate`` for an issue's path (``$.steps[2].args.names[0]``) in a reply's steps."""
    at = _STEP_AT.match(path)
    if at is None or not isinstance(steps, list) or int(at.group(1)) >= len(steps):
        return None
    return _locate(steps[int(at.group(1))], path[at.end() :])


def _first_item_fits(ref: str, wanted: str) -> bool:
    """A step's list (not a projection) where one value, not a list, is wanted."""
    return ref.startswith("steps.") and "*" not in ref and "array" not in wanted


def _one_for_list(got: str, wanted: str) -> bool:
    return "array" not in got.split("/") and "array" in wanted.split("/")


def _locate(step: Any, rest: str) -> tuple[Any, Any, Any, Any] | None:
    """The container holding the value at ``rest`` (``.args.names[0]``) in ``step``, its key,
    and the container holding that one with its key (None at the top)."""
    chain: list[tuple[Any, Any]] = []
    node, pos = step, 0
    while pos < len(rest):
        m = _ARG_PATH.match(rest, pos)
        if m is None:
            return None
        key: Any = m.group(1) if m.group(1) is not None else int(m.group(2))
        ok = (isinstance(node, dict) and isinstance(key, str) and key in node) or (
            isinstance(node, list) and isinstance(key, int) and key < len(node)
        )
        if not ok:
            return None
        chain.append((node, key))
        node, pos = node[key], m.end()
    if len(chain) < 2:
        return None
    (grand, gkey), (parent, key) = chain[-2], chain[-1]
    return parent, key, grand, gkey


def _replace(value: Any, pattern: re.Pattern[str], new: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda _: "{{" + new + "}}", value)
    if isinstance(value, dict):
        return {k: _replace(v, pattern, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, pattern, new) for v in value]
    return value
