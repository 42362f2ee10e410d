"""Loop items and projected paths: ``{{item...}}`` written as the reference it stands for, and
the schema at a path where ``*`` projects a list. Validation type-checks with them, and
provenance labels a loop's arguments through them (see ``_provenance``).
"""

from __future__ import annotations

from typing import Any

from planlock.core import (
    ANY_ITEM,
    ITEM_NUMBER,
    Arr,
    Interp,
    Lit,
    Obj,
    Ref,
    Template,
    Whole,
    at_path,
)

__all__ = ["expand_items", "is_number", "item_ref", "schema_at"]


def expand_items(
    t: Template, loop: Ref, index: str = ANY_ITEM, number: int | None = None
) -> Template:
    """``t`` with every ``{{item...}}`` written as the reference it stands for: the list named by
    the loop's ``for_each``, at ``index``, then the item's path. ``{{item_number}}`` stands for
    the whole list (its labels: the position of an item is data of the list), or, with
    ``number``, is that literal number (for type checks)."""
    if isinstance(t, Whole):
        if number is not None and is_number(t.ref):
            return Lit(number)
        return Whole(item_ref(t.ref, loop, index))
    if isinstance(t, Interp):
        parts: list[str | Ref] = []
        for p in t.parts:
            if isinstance(p, Ref) and number is not None and is_number(p):
                parts.append(str(number))
            else:
                parts.append(item_ref(p, loop, index) if isinstance(p, Ref) else p)
        return Interp(tuple(parts))
    if isinstance(t, Obj):
        return Obj(tuple((k, expand_items(v, loop, index, number)) for k, v in t.items))
    if isinstance(t, Arr):
        return Arr(tuple(expand_items(v, loop, index, number) for v in t.items))
    assert isinstance(t, Lit)
    return t


def is_number(ref: Ref) -> bool:
    """Whether ``ref`` is ``{{item_number}}``."""
    return ref.source == "item" and ref.name == ITEM_NUMBER


def item_ref(ref: Ref, loop: Ref, index: str) -> Ref:
    if ref.source != "item":
        return ref
    if is_number(ref):
        return loop
    return Ref(loop.source, loop.name, (*loop.path, index, *ref.path), ref.text)


def schema_at(schema: Any, path: tuple[str, ...], root: Any = None) -> Any:
    """Like ``at_path``, where ``*`` projects: ``items.*.id`` is an array of the items' ids."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    if ANY_ITEM not in path:
        return at_path(schema, path, root)
    i = path.index(ANY_ITEM)
    item = at_path(schema, (*path[:i], "0"), root)
    if item is None:
        return None
    rest = schema_at(item, path[i + 1 :], root)
    if rest is None or ANY_ITEM in path[i + 1 :]:
        return rest  # nested projections give one flat list
    return {"type": "array", "items": rest}
