"""Provenance of references: per-field trust, choices among trusted values, loop items.

One function, ``ref_sources``, gives the source labels of a reference; the executor (on the
concrete values) and ``assess`` (on the plan alone) both call it, so static and run-time
provenance cannot differ. The labels:

- ``plan`` (a literal) and ``input:<name>`` (a trusted input): trusted;
- ``step:<id>``: a step's output, trusted only when its tool declares ``trusted_output=True``;
- ``step:<id>#<path>``: a value at or below an output path that the step's tool declares
  trusted (``trusted_output=["[*].recipient"]``): trusted;
- ``chosen:<id>``: the value was *chosen* by the quarantined ``llm`` step ``<id>`` among trusted
  values (its ``choices``) after reading what may be untrusted text. The value itself is one of
  the trusted values (the labels beside this one say where it comes from), so this label counts
  as trusted; the policy sees it and may still ask a person (``chosen_to_sensitive``). A choice
  whose step read only trusted data (plan literals, trusted inputs, trusted outputs or fields,
  no loop) carries no such mark: no untrusted text took part in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from planlock.core import (
    ANY_ITEM,
    ITEM_NUMBER,
    Arr,
    Interp,
    Lit,
    Obj,
    Ref,
    Sources,
    Template,
    Whole,
    at_path,
    refs_of,
)
from planlock.tools import LLM_TOOL, Tool

if TYPE_CHECKING:
    from planlock.validation._validate import CompiledStep

__all__ = [
    "CHOSEN",
    "choice_labels",
    "expand_items",
    "matches",
    "ref_sources",
    "schema_at",
    "trusted_label",
]

CHOSEN = "chosen"
"""The kind of the label that marks a value chosen by untrusted text among trusted values."""


def matches(pattern: str, path: tuple[str, ...]) -> bool:
    """Whether ``path`` is at or below the trusted output path ``pattern`` (``*`` matches any
    list index, and ``*`` in the path: every item)."""
    segs = pattern.split(".")
    if len(path) < len(segs):
        return False
    for want, seg in zip(segs, path, strict=False):
        if want == ANY_ITEM:
            if seg != ANY_ITEM and not seg.isdigit():
                return False
        elif want != seg:
            return False
    return True


def trusted_label(label: str, steps: Mapping[str, CompiledStep]) -> bool | None:
    """Trust of the labels this module adds (``step:<id>#<path>``, ``chosen:<id>``); None for
    any other label. A field label is trusted only if the step's tool declares that path."""
    kind, _, name = label.partition(":")
    if kind == CHOSEN:
        return True
    if kind == "step" and "#" in name:
        sid, _, pattern = name.partition("#")
        step = steps.get(sid)
        return bool(step and step.tool.name != LLM_TOOL and pattern in step.tool.trusted_paths)
    return None


def _inner(step: CompiledStep, path: tuple[str, ...]) -> tuple[str, ...]:
    """The path inside one iteration's output (a ``for_each`` step's output is a list)."""
    return path[1:] if step.for_each is not None else path


def ref_sources(
    steps: Mapping[str, CompiledStep], name: str, path: tuple[str, ...], general: Sources
) -> Sources:
    """Source labels of ``steps.<name>.output.<path>``; ``general`` is the step's own labels
    (what any part of its output carries when nothing finer applies)."""
    step = steps.get(name)
    if step is None:
        return general
    inner = _inner(step, path)
    if step.tool.name == LLM_TOOL:
        for field, _ in step.choices:
            if field is None or inner[:1] == (field,):
                return choice_labels(steps, step, field)
        return general
    for pattern in step.tool.trusted_paths:
        if matches(pattern, inner):
            return frozenset((f"step:{name}#{pattern}",))
    return general


def choice_labels(
    steps: Mapping[str, CompiledStep], step: CompiledStep, field: str | None
) -> Sources:
    """Labels of the value an ``llm`` step chose for ``field`` (None: its whole output): where the
    allowed values come from, and the ``chosen:<id>`` mark."""
    ref = dict(step.choices)[field]
    labels = source_labels(steps, ref)
    if _reads_only_trusted(steps, step):
        return labels
    return labels | {f"{CHOSEN}:{step.id}"}


def _reads_only_trusted(steps: Mapping[str, CompiledStep], step: CompiledStep) -> bool:
    """Whether every value the ``llm`` step reads is trusted (so no untrusted text could steer
    its choice). A loop, an item reference or any other step's ``llm`` output counts as not."""
    if step.for_each is not None:
        return False
    for t in step.args.values():
        for ref in refs_of(t):
            if ref.source == "input":
                continue
            if ref.source != "step":
                return False
            for label in ref_sources(steps, ref.name, ref.path, frozenset((f"step:{ref.name}",))):
                if not _trusted_static(label, steps):
                    return False
    return True


def _trusted_static(label: str, steps: Mapping[str, CompiledStep]) -> bool:
    kind, _, name = label.partition(":")
    if kind == "input":
        return True
    if kind == "step" and "#" not in name:
        source = steps.get(name)
        return bool(source and source.tool.name != LLM_TOOL and source.tool.trusted_output)
    if kind == CHOSEN:  # chosen by untrusted text: reading it lets that text steer this choice
        return False
    return trusted_label(label, steps) is True


def source_labels(steps: Mapping[str, CompiledStep], ref: Ref) -> Sources:
    """Labels of a reference to an input or to a tool step (what ``choices`` may name)."""
    if ref.source == "input":
        return frozenset((f"input:{ref.name}",))
    return ref_sources(steps, ref.name, ref.path, frozenset((f"step:{ref.name}",)))


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


def tool_trusts(tool: Tool, path: tuple[str, ...]) -> bool:
    """Whether a value at ``path`` of this tool's output is trusted."""
    if tool.name == LLM_TOOL:
        return False
    return tool.trusted_output or any(matches(p, path) for p in tool.trusted_paths)
