"""Tools and the registry: typed functions whose JSON Schemas come from their type hints.

``@registry.tool`` reads a function's signature and docstring; Pydantic turns the hints into an
argument model (validation at call time) and JSON Schemas (for the validator and the planner).
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import docstring_parser
from pydantic import BaseModel, TypeAdapter

from planlock.core import normalize_path
from planlock.errors import UsageError
from planlock.tools._models import Param, adapter, args_model
from planlock.tools._native import plain_json_args

__all__ = ["EFFECTS", "Effect", "StepContext", "Tool", "ToolRegistry"]

_F = TypeVar("_F", bound=Callable[..., Any])

Effect = Literal["read", "write", "delete", "send", "pay"]
EFFECTS: tuple[str, ...] = typing.get_args(Effect)
UNDECLARED = "undeclared"
"""The effect of a tool that did not declare one: treated as the most dangerous of all."""

LLM_TOOL = "llm"
"""The reserved name of the built-in quarantined LLM step."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """Given to a tool that declares a parameter of this type (it is not part of the schema)."""

    run_id: str
    """The run the call belongs to."""
    step_id: str
    """The step being executed."""
    attempt: int
    """1 on the first try; higher on retries of idempotent tools."""
    item: int | None = None
    """In a ``for_each`` step: the index of the item this call is for."""

    @property
    def idempotency_key(self) -> str:
        """``run_id:step_id`` (``run_id:step_id:item`` in a for_each step): the same on every
        attempt, so a tool can deduplicate effects."""
        base = f"{self.run_id}:{self.step_id}"
        return base if self.item is None else f"{base}:{self.item}"


@dataclass(frozen=True)
class Tool:
    """A registered tool: the function and what planlock knows about it."""

    name: str
    """Name used in plans."""
    description: str
    """What the tool does (shown to the planner)."""
    fn: Callable[..., Any]
    """The function (sync functions run in a worker thread)."""
    effect: str
    """One of ``EFFECTS``, or ``"undeclared"`` (treated as most dangerous)."""
    sensitive: frozenset[str]
    """Parameters where untrusted data must not flow without the policy's consent: for a
    side-effecting tool every parameter not declared ``free``."""
    trusted_output: bool
    """Whether the tool's whole output is trusted (default: untrusted)."""
    idempotent: bool
    """Whether a failed call may be retried."""
    timeout: float | None
    """Per-call timeout in seconds."""
    args_model: type[BaseModel]
    """Pydantic model of the arguments."""
    returns: TypeAdapter[Any] | None
    """Adapter for the return type, or None when the function has no return annotation."""
    context_param: str | None = None
    """Name of the StepContext parameter, if any."""
    param_adapters: dict[str, TypeAdapter[Any]] = field(default_factory=dict, repr=False)
    trusted_paths: tuple[str, ...] = ()
    """Output paths that are trusted when the whole output is not (``*.recipient``: the
    ``recipient`` of every item of a list output); normalized dotted patterns, ``*`` for any list
    index. A value at or below such a path carries a trusted provenance; the rest stays
    untrusted."""
    output_schema: Mapping[str, Any] | None = None
    """JSON Schema of the output when there is no return type to derive it from (a tool from an
    MCP server, LangChain or pydantic-ai); used to type references, not enforced here."""
    origin: Mapping[str, Any] | None = None
    """Where a tool that is not a local function came from (an MCP server and the tool's pinned
    definition, with the server's annotations; a LangChain or pydantic-ai tool): shown in
    ``describe()`` and journaled with the plan. Informative only: nothing here is trusted."""

    @functools.cached_property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function (asked on every call; ``fn`` never changes)."""
        return inspect.iscoroutinefunction(self.fn)

    @functools.cached_property
    def plain_args(self) -> bool:
        """Whether the arguments validate the same as Python values as from JSON text
        (``_native``): then a call checks them without the JSON round trip."""
        return plain_json_args(self.args_model, self.context_param)

    @property
    def params_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments object."""
        return _schema_cache(self.args_model)

    @functools.cached_property
    def returns_schema(self) -> dict[str, Any]:
        """JSON Schema of the return value (``{}``, i.e. anything, when undeclared)."""
        if self.returns is None:
            return dict(self.output_schema or {})
        return self.returns.json_schema(mode="serialization")

    @property
    def read_only(self) -> bool:
        return self.effect == "read"

    def describe(self) -> dict[str, Any]:
        """A JSON description for catalogues and planner prompts."""
        return {
            "name": self.name,
            "description": self.description,
            "effect": self.effect,
            "sensitive": sorted(self.sensitive),
            "trusted_output": self.trusted_output,
            **({"trusted_paths": list(self.trusted_paths)} if self.trusted_paths else {}),
            "idempotent": self.idempotent,
            "parameters": self.params_schema,
            "returns": self.returns_schema,
            **({"origin": dict(self.origin)} if self.origin is not None else {}),
        }


_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


def _schema_cache(model: type[BaseModel]) -> dict[str, Any]:
    if model not in _SCHEMAS:
        _SCHEMAS[model] = model.model_json_schema()
    return _SCHEMAS[model]


class ToolRegistry:
    """The tools a plan may call. Plans are validated and executed against one registry."""

    def __init__(self, tools: Iterator[Tool] | list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.version = 0
        """Tools added so far: what was validated against this registry is valid while it is
        unchanged (``planlock.validation`` keeps analyses by it)."""
        for t in tools or ():
            self.add(t)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def add(self, tool: Tool) -> Tool:
        if tool.name == LLM_TOOL:
            raise UsageError(f"'{LLM_TOOL}' is reserved for the built-in quarantined LLM step")
        if tool.name in self._tools:
            raise UsageError(f"a tool named '{tool.name}' is already registered")
        self._tools[tool.name] = tool
        self.version += 1
        return tool

    # The decorator returns the function itself, so both forms keep its exact type: a type
    # checker sees the real signature of a decorated tool (tests/test_cli_conventions.py).
    @overload
    def tool(self, fn: _F) -> _F: ...
    @overload
    def tool(
        self,
        *,
        name: str | None = None,
        effect: str | None = None,
        sensitive: list[str] | tuple[str, ...] = (),
        free: list[str] | tuple[str, ...] = (),
        trusted_output: bool | Sequence[str] = False,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> Callable[[_F], _F]: ...

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        effect: str | None = None,
        sensitive: list[str] | tuple[str, ...] = (),
        free: list[str] | tuple[str, ...] = (),
        trusted_output: bool | Sequence[str] = False,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Register a typed function as a tool; usable bare (``@registry.tool``) or with options.

        ``effect`` is one of ``read``, ``write``, ``delete``, ``send``, ``pay``; a tool that does
        not declare one is treated as the most dangerous, never as read. A side-effecting tool
        (any effect but ``read``) is a sink: *every* parameter is sensitive, numbers and ids
        included, unless listed in ``free`` (``free=["subject"]``: untrusted data may fill it
        without asking). A read tool's parameters are sensitive only when listed in
        ``sensitive``. ``trusted_output`` is
        ``True`` (the whole output is trusted), ``False`` (the default) or a list of trusted
        output paths such as ``["[*].recipient", "[*].amount"]`` (per-field trust).
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(
                make_tool(
                    f,
                    name=name,
                    effect=effect,
                    sensitive=sensitive,
                    free=free,
                    trusted_output=trusted_output,
                    idempotent=idempotent,
                    timeout=timeout,
                )
            )
            return f

        return register(fn) if fn is not None else register

    def catalogue(self) -> list[dict[str, Any]]:
        """Every tool's description, sorted by name."""
        return [self._tools[n].describe() for n in sorted(self._tools)]


def make_tool(
    fn: Callable[..., Any] | Callable[..., Awaitable[Any]],
    *,
    name: str | None = None,
    effect: str | None = None,
    sensitive: list[str] | tuple[str, ...] = (),
    free: list[str] | tuple[str, ...] = (),
    trusted_output: bool | Sequence[str] = False,
    idempotent: bool = False,
    timeout: float | None = None,
) -> Tool:
    """Build a Tool from a typed function (see ``ToolRegistry.tool``)."""
    if not callable(fn):
        raise UsageError(f"a tool must be a function, not {type(fn).__name__}")
    tool_name: str = name or getattr(fn, "__name__", None) or ""
    if not tool_name.isidentifier():
        raise UsageError(f"tool name {tool_name!r} is not an identifier")
    if effect is not None and effect not in EFFECTS:
        raise UsageError(f"tool '{tool_name}': effect must be one of {', '.join(EFFECTS)}")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"tool '{tool_name}': timeout must be positive")
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    param_docs = {p.arg_name: p.description or "" for p in doc.params}
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise UsageError(f"tool '{tool_name}': cannot resolve a type hint: {exc}") from None
    params: list[Param] = []
    adapters: dict[str, TypeAdapter[Any]] = {}
    context_param = None
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise UsageError(f"tool '{tool_name}': parameter '{pname}' must be a named parameter")
        if pname not in hints:
            raise UsageError(f"tool '{tool_name}': parameter '{pname}' needs a type hint")
        hint = hints[pname]
        if hint is StepContext:
            context_param = pname
            continue
        default = ... if param.default is param.empty else param.default
        params.append((pname, hint, default, param_docs.get(pname) or None))
        adapters[pname] = adapter(hint)
    names = {p[0] for p in params}
    sensitive_set = sink_sensitive(tool_name, effect or UNDECLARED, names, sensitive, free)
    paths = _trusted_paths(tool_name, trusted_output)
    model = args_model(tool_name, tuple(params))
    ret = hints.get("return", inspect.Signature.empty)
    returns = None if ret is inspect.Signature.empty else adapter(ret)
    description = "\n\n".join(x for x in (doc.short_description, doc.long_description) if x)
    return Tool(
        name=tool_name,
        description=description,
        fn=fn,
        effect=effect or UNDECLARED,
        sensitive=sensitive_set,
        trusted_output=trusted_output is True,
        idempotent=idempotent,
        timeout=timeout,
        args_model=model,
        returns=returns,
        context_param=context_param,
        param_adapters=adapters,
        trusted_paths=paths,
    )


def sink_sensitive(
    tool_name: str,
    effect: str,
    params: set[str],
    sensitive: Sequence[str] = (),
    free: Sequence[str] = (),
) -> frozenset[str]:
    """The sensitive parameters of a tool: for a sink (any effect but ``read``) every parameter
    not declared ``free``; for a read tool those declared ``sensitive``."""
    for what, names in (("sensitive", sensitive), ("free", free)):
        unknown = set(names) - params
        if unknown:
            raise UsageError(
                f"tool '{tool_name}': {what} names unknown parameters {sorted(unknown)}"
            )
    both = set(sensitive) & set(free)
    if both:
        raise UsageError(f"tool '{tool_name}': {sorted(both)} cannot be both sensitive and free")
    if effect == "read":
        if free:
            raise UsageError(f"tool '{tool_name}': 'free' is for side-effecting tools only")
        return frozenset(sensitive)
    return frozenset(params - set(free))


_PATTERN = re.compile(r"^(?:[A-Za-z0-9_-]+|\*)(?:\.(?:[A-Za-z0-9_-]+|\*))*$")


def _trusted_paths(tool_name: str, trusted_output: bool | Sequence[str]) -> tuple[str, ...]:
    if isinstance(trusted_output, bool):
        return ()
    if isinstance(trusted_output, str):
        raise UsageError(f"tool '{tool_name}': trusted_output is a bool or a list of paths")

    out: list[str] = []
    for raw in trusted_output:
        path = normalize_path(raw) if isinstance(raw, str) else ""
        if not _PATTERN.match(path):
            raise UsageError(
                f"tool '{tool_name}': trusted output path {raw!r} is not a path such as "
                "'[*].recipient' or 'items[*].id'"
            )
        out.append(path)
    return tuple(dict.fromkeys(out))


def effect_rank(effect: str) -> int:
    """Order of danger: read < write < delete < send < pay < undeclared."""
    order = (*EFFECTS, UNDECLARED)
    return order.index(effect) if effect in order else len(order)


def tools_by_name(registry: ToolRegistry) -> Mapping[str, Tool]:
    return {t.name: t for t in registry}
