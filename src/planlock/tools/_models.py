"""The pydantic parts of a tool, built once per shape: a ``TypeAdapter`` per type, an argument
model per (tool name, parameters). Registries are built often (one per help desk, per AgentDojo
run, per test) from the same functions, and pydantic's schema building is most of a tool's cost.
Types or defaults that cannot be hashed are built afresh each time, as before.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

__all__ = ["adapter", "args_model"]

_CACHED = 2048

Param = tuple[str, Any, Any, str | None]
"""A parameter: its name, type, default (``...`` when required) and description."""


@functools.lru_cache(maxsize=_CACHED)
def _adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


def adapter(hint: Any) -> TypeAdapter[Any]:
    """``TypeAdapter(hint)``, shared by every tool with a parameter (or return) of this type."""
    try:
        return _adapter(hint)
    except TypeError:  # unhashable (an Annotated with unhashable metadata, say)
        return TypeAdapter(hint)


@functools.lru_cache(maxsize=_CACHED)
def _args_model(
    tool_name: str, params: tuple[Param, ...], _key: tuple[Any, ...]
) -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (hint, Field(default, description=doc)) for name, hint, default, doc in params
    }
    return create_model(f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields)


def args_model(tool_name: str, params: tuple[Param, ...]) -> type[BaseModel]:
    """The model that validates a call's arguments (no other fields allowed)."""
    # Equal defaults of other types (0, 0.0 and False; (0,) and (0.0,)) are told apart.
    key = tuple((type(default), repr(default)) for _, _, default, _ in params)
    try:
        return _args_model(tool_name, params, key)
    except TypeError:  # an unhashable type or default (a list default, say)
        return _args_model.__wrapped__(tool_name, params, key)
