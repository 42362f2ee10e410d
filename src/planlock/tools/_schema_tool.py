"""A tool described by a JSON Schema rather than by a typed function: the common ground of tools
imported from MCP servers, LangChain and pydantic-ai.

The arguments model is generated from the schema: one field per property (typed ``Any``, so the
schema stays the one source of truth), and a check of the whole arguments object against the
schema with ``jsonschema`` when the executor validates a call. ``params_schema`` is the schema
itself, so the validator and the planner see exactly what the tool's owner published.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

from planlock.core import schema_error
from planlock.errors import UsageError
from planlock.tools._registry import (
    EFFECTS,
    UNDECLARED,
    Tool,
    _trusted_paths,
    sink_sensitive,
)

__all__ = ["schema_tool"]

Call = Callable[[dict[str, Any]], Awaitable[Any]]


class _SchemaArgs(BaseModel):
    """Base of generated argument models: the JSON Schema decides what is valid."""

    model_config = ConfigDict(extra="forbid")
    planlock_schema: ClassVar[dict[str, Any]] = {}
    planlock_names: ClassVar[dict[str, str]] = {}
    """Field name -> the schema's property name."""

    @model_validator(mode="before")
    @classmethod
    def _against_schema(cls, data: Any) -> Any:
        import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

        validator = jsonschema.Draft202012Validator(cls.planlock_schema)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path) or "arguments"
            raise ValueError(f"{where}: {errors[0].message}")
        return data

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool | None = None,  # noqa: ARG003  (BaseModel's signature)
        ref_template: str = "",  # noqa: ARG003
        schema_generator: type[GenerateJsonSchema] = GenerateJsonSchema,  # noqa: ARG003
        mode: JsonSchemaMode = "validation",  # noqa: ARG003
        **_: Any,
    ) -> dict[str, Any]:
        return copy.deepcopy(cls.planlock_schema)


def schema_tool(
    call: Call,
    *,
    name: str,
    description: str,
    input_schema: Mapping[str, Any],
    effect: str | None,
    sensitive: Sequence[str] = (),
    free: Sequence[str] = (),
    trusted_output: bool | Sequence[str] = False,
    idempotent: bool = False,
    timeout: float | None = None,
    output_schema: Mapping[str, Any] | None = None,
    origin: Mapping[str, Any] | None = None,
) -> Tool:
    """A Tool whose arguments are checked against ``input_schema`` and which runs
    ``await call(arguments)`` (the arguments the plan gave, by the schema's property names;
    optional ones the plan left out are left out)."""
    if not name.isidentifier():
        raise UsageError(f"tool name {name!r} is not an identifier")
    if effect is not None and effect not in (*EFFECTS, UNDECLARED):
        raise UsageError(f"tool '{name}': effect must be one of {', '.join(EFFECTS)}")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"tool '{name}': timeout must be positive")
    schema = _object_schema(name, input_schema)
    problem = schema_error(schema)
    if problem is not None:
        raise UsageError(f"tool '{name}': input schema is not valid: {problem}")
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    # Field names are positional (p0, p1...): a property may be any string ("from", "user-id",
    # "json") and none of them may shadow a BaseModel attribute. The alias is the real name.
    names = {f"p{i}": prop for i, prop in enumerate(props)}
    fields: dict[str, Any] = {
        field: (Any, Field(... if prop in required else None, alias=prop))
        for field, prop in names.items()
    }
    model = create_model(f"{name}_args", __base__=_SchemaArgs, **fields)
    model.planlock_schema = schema
    model.planlock_names = names

    async def run(**kwargs: Any) -> Any:
        args = {
            names[k]: v for k, v in kwargs.items() if not (v is None and names[k] not in required)
        }
        return await call(args)

    run.__name__ = name
    tool_effect = effect or UNDECLARED
    return Tool(
        name=name,
        description=description,
        fn=run,
        effect=tool_effect,
        sensitive=sink_sensitive(name, tool_effect, set(props), sensitive, free),
        trusted_output=trusted_output is True,
        idempotent=idempotent,
        timeout=timeout,
        args_model=model,
        returns=None,
        trusted_paths=_trusted_paths(name, trusted_output),
        output_schema=dict(output_schema) if output_schema else None,
        origin=origin,
    )


def _object_schema(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(schema))
    if out.get("type", "object") != "object":
        raise UsageError(f"tool '{name}': the input schema must describe an object")
    out.setdefault("type", "object")
    props = out.get("properties", {})
    if not isinstance(props, dict):
        raise UsageError(f"tool '{name}': the input schema's properties must be an object")
    return out
