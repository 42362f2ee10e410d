"""Placeholders: ``{{steps.2.output.id}}``, ``{{user.email}}``, ``{{item}}``, parsed into
``Ref``s, and how a string argument splits into text and placeholders."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANY_ITEM",
    "ESCAPED_OPEN",
    "ITEM",
    "ITEM_NUMBER",
    "Ref",
    "find_placeholders",
    "normalize_path",
    "parse_ref",
    "scan_and_split",
    "split_interpolation",
    "unescape",
    "whole_placeholder",
]

_SEGMENT = r"[A-Za-z0-9_-]+"
_PATH_SEGMENT = rf"(?:{_SEGMENT}|\*)"
_PLACEHOLDER = re.compile(r"(?<!\\)\{\{\s*(.*?)\s*\}\}")
_OPEN = re.compile(r"(?<!\\)\{\{")
ESCAPED_OPEN = "\\{{"
"""A literal ``{{`` in a string argument is written ``\\{{`` (``"\\\\{{"`` in JSON)."""
_REF_BODY = re.compile(rf"^{_SEGMENT}(\.{_PATH_SEGMENT})*$")
_BRACKET = re.compile(r"\.?\[(\*|\d+)\]")
ANY_ITEM = "*"
"""A path segment standing for every item of a list (``items.*.id``, written ``items[*].id``)."""
ITEM = "item"
"""The loop variable of a ``for_each`` step: ``{{item}}``, ``{{item.field}}``."""
ITEM_NUMBER = "item_number"
"""The 1-based position of the current item in a ``for_each`` step: ``{{item_number}}``."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed placeholder: a trusted input (``{{user.email}}``, ``{{input.user.email}}``)
    or a step's output (``{{steps.2.output.items.0.id}}``)."""

    source: Literal["step", "input", "item"]
    """Where the value comes from (``item``: the current item of a ``for_each`` step)."""
    name: str
    """The step id, or the input's name."""
    path: tuple[str, ...]
    """Keys (or list indexes, written as digits) into the value."""
    text: str
    """The placeholder as written, without braces."""

    @property
    def label(self) -> str:
        """A provenance label: ``input:user`` or ``step:2``."""
        return f"{self.source}:{self.name}"

    @property
    def projects(self) -> bool:
        """Whether the path holds ``*`` (the value is the list of every item's value)."""
        return ANY_ITEM in self.path


def normalize_path(text: str) -> str:
    """``a[*].b`` and ``[0].b`` written as dotted segments: ``a.*.b``, ``0.b``."""
    if "[" not in text:
        return text
    out = _BRACKET.sub(lambda m: "." + m.group(1), text)
    return out[1:] if out.startswith(".") and text.startswith("[") else out


@functools.lru_cache(maxsize=4096)
def parse_ref(body: str) -> Ref | str:
    """Parse a placeholder body; return the Ref, or a message saying why it is malformed.
    (Cached: a plan names the same outputs again and again, and a Ref is immutable.)"""
    text = body
    body = normalize_path(body)
    if not _REF_BODY.match(body):
        return f"malformed placeholder '{{{{{text}}}}}': segments are letters, digits, '_' or '-'"
    parts = body.split(".")
    if parts[0] == ITEM:
        return Ref("item", ITEM, tuple(parts[1:]), text)
    if parts[0] == ITEM_NUMBER:
        if len(parts) > 1:
            return (
                f"malformed placeholder '{{{{{text}}}}}': {ITEM_NUMBER} is a number, with no path"
            )
        return Ref("item", ITEM_NUMBER, (), text)
    if parts[0] == "steps":
        if len(parts) < 3 or parts[2] != "output":
            return f"malformed placeholder '{{{{{body}}}}}': expected steps.<id>.output[.<path>]"
        return Ref("step", parts[1], tuple(parts[3:]), text)
    if ANY_ITEM in parts[:2]:
        return f"malformed placeholder '{{{{{text}}}}}': '*' stands for list items in a path"
    if parts[0] == "input":
        if len(parts) < 2:
            return f"malformed placeholder '{{{{{text}}}}}': expected input.<name>[.<path>]"
        return Ref("input", parts[1], tuple(parts[2:]), text)
    return Ref("input", parts[0], tuple(parts[1:]), text)


def scan_and_split(text: str) -> tuple[list[Ref | str], bool, list[str | Ref] | None]:
    """One pass over a string argument, ``split_interpolation`` included: the placeholders found
    (Refs, or messages for malformed ones, as ``find_placeholders``),
    whether the text is exactly one, and its parts (None when it has no placeholder)."""
    end = len(text) - 2
    if (  # exactly one placeholder, the commonest argument: what the pattern would find
        text.startswith("{{")
        and text.find("}}") == end
        and text.find("{{", 2) == -1
        and "\n" not in text
    ):
        ref = parse_ref(text[2:end].strip())
        return [ref], True, [ref if isinstance(ref, Ref) else text]
    matches = list(_PLACEHOLDER.finditer(text))
    found: list[Ref | str] = []
    rest: list[str] = []
    parts: list[str | Ref] = []
    pos = 0
    for m in matches:
        start = m.start()
        rest.append(text[pos:start])
        if start > pos:
            parts.append(unescape(text[pos:start]))
        ref = parse_ref(m.group(1))
        found.append(ref)
        parts.append(ref if isinstance(ref, Ref) else m.group(0))
        pos = m.end()
    rest.append(text[pos:])
    if pos < len(text):
        parts.append(unescape(text[pos:]))
    if _OPEN.search("".join(rest) if len(rest) > 1 else rest[0]):
        found.append("unbalanced '{{' in a string argument (write a literal '{{' as '\\{{')")
    whole = len(matches) == 1 and matches[0].span() == (0, len(text))
    return found, whole, parts if matches else None


def find_placeholders(text: str) -> list[Ref | str]:
    """Every placeholder in ``text`` (Refs, or messages for malformed ones)."""
    found: list[Ref | str] = [parse_ref(m.group(1)) for m in _PLACEHOLDER.finditer(text)]
    rest = _PLACEHOLDER.sub("", text)
    if _OPEN.search(rest):
        found.append("unbalanced '{{' in a string argument (write a literal '{{' as '\\{{')")
    return found


def unescape(text: str) -> str:
    """Literal text of a string argument: ``\\{{`` becomes ``{{``."""
    return text.replace(ESCAPED_OPEN, "{{")


def whole_placeholder(text: str) -> str | None:
    """The body if ``text`` is exactly one placeholder (so the value keeps its type)."""
    matches = list(_PLACEHOLDER.finditer(text))
    if len(matches) == 1 and matches[0].span() == (0, len(text)):
        return matches[0].group(1)
    return None


def split_interpolation(text: str) -> list[str | Ref]:
    """Split a string into literal parts and Refs. Assumes placeholders were validated."""
    parts: list[str | Ref] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            parts.append(unescape(text[pos : m.start()]))
        ref = parse_ref(m.group(1))
        parts.append(ref if isinstance(ref, Ref) else m.group(0))
        pos = m.end()
    if pos < len(text):
        parts.append(unescape(text[pos:]))
    return parts
