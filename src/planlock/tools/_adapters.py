"""Tools from LangChain and pydantic-ai, as ordinary planlock tools.

Neither framework says what a tool does to the world, so the effect is a required argument here
(no default): a LangChain or pydantic-ai tool becomes a planlock tool only once a person has said
whether it reads, writes, deletes, sends or pays. The rest is as for ``@registry.tool``: a sink's
parameters are all sensitive unless ``free``; the output is untrusted unless declared.

Both frameworks are optional: nothing here imports them; the tool objects are read through the
attributes they document (LangChain ``BaseTool.tool_call_schema`` / ``ainvoke``; pydantic-ai
``Tool.function_schema``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from planlock.errors import UsageError
from planlock.tools._registry import EFFECTS, Tool
from planlock.tools._schema_tool import schema_tool

__all__ = ["from_langchain", "from_pydantic_ai"]


def from_langchain(
    tool: Any,
    *,
    effect: str,
    sensitive: Sequence[str] = (),
    free: Sequence[str] = (),
    trusted_output: bool | Sequence[str] = False,
    idempotent: bool = False,
    timeout: float | None = None,
    name: str | None = None,
) -> Tool:
    """A planlock tool that runs a LangChain tool (``BaseTool``, ``StructuredTool``, ``@tool``)
    with the arguments the plan gives, through ``ainvoke``."""
    _effect(effect, "from_langchain")
    if not (hasattr(tool, "ainvoke") and hasattr(tool, "tool_call_schema")):
        raise UsageError(f"from_langchain takes a LangChain BaseTool, not {type(tool).__name__}")
    schema_src = tool.tool_call_schema
    if isinstance(schema_src, type) and issubclass(schema_src, BaseModel):
        schema = schema_src.model_json_schema()
    elif isinstance(schema_src, dict):
        schema = dict(schema_src)
    else:
        raise UsageError(f"LangChain tool {tool.name!r}: unsupported args schema")
    schema.pop("description", None)  # LangChain copies the tool's description into it

    async def call(args: dict[str, Any]) -> Any:
        return await tool.ainvoke(args)

    return schema_tool(
        call,
        name=name or str(tool.name),
        description=str(tool.description or ""),
        input_schema=schema,
        effect=effect,
        sensitive=sensitive,
        free=free,
        trusted_output=trusted_output,
        idempotent=idempotent,
        timeout=timeout,
        origin={"kind": "langchain", "class": type(tool).__name__, "name": str(tool.name)},
    )


def from_pydantic_ai(
    tool: Any,
    *,
    effect: str,
    sensitive: Sequence[str] = (),
    free: Sequence[str] = (),
    trusted_output: bool | Sequence[str] = False,
    idempotent: bool = False,
    timeout: float | None = None,
    name: str | None = None,
) -> Tool:
    """A planlock tool that runs a pydantic-ai ``Tool``: its arguments are validated by the tool's
    own validator, then its function is called. A tool that takes a ``RunContext`` is refused:
    there is no pydantic-ai agent run to give it."""
    _effect(effect, "from_pydantic_ai")
    fs = getattr(tool, "function_schema", None)
    if fs is None or not hasattr(fs, "json_schema") or not hasattr(fs, "validator"):
        raise UsageError(f"from_pydantic_ai takes a pydantic_ai.Tool, not {type(tool).__name__}")
    if fs.takes_ctx:
        raise UsageError(
            f"pydantic-ai tool {tool.name!r} takes a RunContext; planlock cannot provide one"
        )

    async def call(args: dict[str, Any]) -> Any:
        validated = fs.validator.validate_python(args)
        return to_jsonable_python(await fs.call(validated, None))

    return schema_tool(
        call,
        name=name or str(tool.name),
        description=str(tool.description or ""),
        input_schema=fs.json_schema,
        effect=effect,
        sensitive=sensitive,
        free=free,
        trusted_output=trusted_output,
        idempotent=idempotent,
        timeout=timeout,
        output_schema=fs.return_schema or None,
        origin={"kind": "pydantic_ai", "name": str(tool.name)},
    )


def _effect(effect: str | None, where: str) -> None:
    if effect not in EFFECTS:
        raise UsageError(
            f"{where}: effect is required and must be one of {', '.join(EFFECTS)} "
            f"(got {effect!r}); the framework does not say what the tool does"
        )
