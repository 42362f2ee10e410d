"""Which parameter types validate the same from Python values as from their JSON text.

A call's arguments are JSON values (literals of the plan, outputs of earlier steps). Pydantic's
strict JSON mode and strict Python mode agree on them exactly when every type involved is one
JSON already has: ``int``, ``float``, ``str``, ``bool``, ``None``, ``Literal`` of those, unions of
them, ``list[...]`` and ``dict[str, ...]`` of them (constraints such as ``ge`` or ``max_length``
apply the same way), and both build new lists and dicts, so a tool never gets the earlier step's
output object itself. A ``tuple``, a ``datetime``, an ``Enum`` or a model takes its JSON form only
in JSON mode, and ``Any`` would pass the very object along, so a tool with such a parameter keeps
the JSON round trip.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel

__all__ = ["plain_json_args"]

_SCALARS: tuple[Any, ...] = (int, float, str, bool, type(None))


def plain_json_args(model: type[BaseModel], skip: str | None = None) -> bool:
    """Whether every field of ``model`` (but ``skip``) has a JSON-native type."""
    return all(_native(f.annotation) for name, f in model.model_fields.items() if name != skip)


def _native(tp: Any) -> bool:
    if tp in _SCALARS:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return all(type(a) in (int, str, bool) or a is None for a in args)
    if origin in (Union, types.UnionType):
        return all(_native(a) for a in args)
    if origin is list:
        return all(_native(a) for a in args)
    if origin is dict:
        return len(args) == 2 and args[0] is str and _native(args[1])
    return False
