"""Arguments compiled once into templates, then resolved with provenance at run time.

A whole-string placeholder keeps the referenced value's type; one embedded in a longer string
renders into it (strings as they are, anything else as compact JSON). Every resolved value
carries the set of sources it came from (R5): ``plan`` for literals written by the planner,
``input:<name>`` for trusted inputs, ``step:<id>`` for a step's output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from planlock.core._refs import Ref, scan_and_split, unescape

__all__ = [
    "Arr",
    "Interp",
    "Lit",
    "Obj",
    "Template",
    "Whole",
    "compile_value",
    "refs_of",
    "resolve",
]

PLAN_SOURCE = "plan"
Sources = frozenset[str]


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any


@dataclass(frozen=True, slots=True)
class Whole:
    ref: Ref


@dataclass(frozen=True, slots=True)
class Interp:
    parts: tuple[str | Ref, ...]


@dataclass(frozen=True, slots=True)
class Obj:
    items: tuple[tuple[str, Template], ...]


@dataclass(frozen=True, slots=True)
class Arr:
    items: tuple[Template, ...]


Template = Lit | Whole | Interp | Obj | Arr


def compile_value(value: Any, path: str, problems: list[tuple[str, str]]) -> Template:
    """Compile a JSON value; malformed placeholders are appended to ``problems`` as (path, msg)."""
    if isinstance(value, str):
        if "{" not in value and "}" not in value:
            return Lit(value)
        found, whole, parts = scan_and_split(value)
        if not found:
            return Lit(unescape(value))
        bad = [f for f in found if isinstance(f, str)]
        if bad:
            problems.extend((path, m) for m in bad)
            return Lit(value)
        if whole:
            (ref,) = found
            assert isinstance(ref, Ref)
            return Whole(ref)
        assert parts is not None  # found, and not malformed: it has placeholders
        return Interp(tuple(parts))
    if isinstance(value, dict | list):
        plain = _plain(value)  # no placeholder anywhere in it: one literal, without recursing
        if plain is not _BRACES:
            return Lit(plain)
    if isinstance(value, dict):
        items = tuple((k, compile_value(v, f"{path}.{k}", problems)) for k, v in value.items())
        if all(isinstance(t, Lit) for _, t in items):
            return Lit({k: t.value for k, t in items if isinstance(t, Lit)})
        return Obj(items)
    if isinstance(value, list):
        arr = tuple(compile_value(v, f"{path}[{i}]", problems) for i, v in enumerate(value))
        if all(isinstance(t, Lit) for t in arr):
            return Lit([t.value for t in arr if isinstance(t, Lit)])
        return Arr(arr)
    return Lit(value)


_BRACES = object()


def _plain(value: Any) -> Any:
    """A copy of a list or dict none of whose strings holds ``{`` or ``}`` (what compiling it
    item by item makes: one literal), or ``_BRACES`` when one does."""
    if isinstance(value, str):
        return _BRACES if "{" in value or "}" in value else value
    if isinstance(value, list):
        items = []
        for v in value:
            c = _plain(v)
            if c is _BRACES:
                return _BRACES
            items.append(c)
        return items
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            c = _plain(v)
            if c is _BRACES:
                return _BRACES
            out[k] = c
        return out
    return value


def refs_of(t: Template) -> Iterator[Ref]:
    """Every Ref in a template, in order."""
    if isinstance(t, Whole):
        yield t.ref
    elif isinstance(t, Interp):
        yield from (p for p in t.parts if isinstance(p, Ref))
    elif isinstance(t, Obj):
        for _, v in t.items:
            yield from refs_of(v)
    elif isinstance(t, Arr):
        for v in t.items:
            yield from refs_of(v)


class Unresolvable(LookupError):
    """A reference whose path does not exist on the concrete value."""


def walk_path(value: Any, path: tuple[str, ...], what: str) -> Any:
    """Follow keys / list indexes into a JSON value."""
    cur = value
    for i, seg in enumerate(path):
        if seg == "*":  # every item of a list: the list of each item's value
            if not isinstance(cur, list):
                at = ".".join((what, *path[:i]))
                raise Unresolvable(f"'{at}' is not a list")
            where, rest = ".".join((what, *path[:i])), path[i + 1 :]
            found = [walk_path(x, rest, f"{where}.{j}") for j, x in enumerate(cur)]
            # Another '*' further on: one flat list of every match (as JSONPath does).
            return [y for ys in found for y in ys] if "*" in rest else found
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            at = ".".join((what, *path[: i + 1]))
            raise Unresolvable(f"'{at}' does not exist on the value")
    return cur


def render(value: Any) -> str:
    """How a value is written into a longer string."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


Lookup = Callable[[Ref], tuple[Any, Sources]]


def resolve(t: Template, lookup: Lookup) -> tuple[Any, Sources]:
    """Resolve a template to a JSON value and the union of its sources."""
    if isinstance(t, Lit):
        return t.value, frozenset((PLAN_SOURCE,))
    if isinstance(t, Whole):
        return lookup(t.ref)
    if isinstance(t, Interp):
        out: list[str] = []
        srcs: set[str] = set()
        for p in t.parts:
            if isinstance(p, Ref):
                v, s = lookup(p)
                out.append(render(v))
                srcs |= s
            else:
                out.append(p)
                srcs.add(PLAN_SOURCE)
        return "".join(out), frozenset(srcs)
    if isinstance(t, Obj):
        obj: dict[str, Any] = {}
        srcs = set()
        for k, sub in t.items:
            obj[k], s = resolve(sub, lookup)
            srcs |= s
        return obj, frozenset(srcs)
    arr: list[Any] = []
    srcs = set()
    for sub in t.items:
        v, s = resolve(sub, lookup)
        arr.append(v)
        srcs |= s
    return arr, frozenset(srcs)
