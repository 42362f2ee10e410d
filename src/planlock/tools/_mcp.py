"""Tools from MCP servers, as ordinary planlock tools (validated, assessed, approved, journaled).

What planlock trusts is what a person declared in the tools file (effect, sensitive parameters,
trusted output, idempotence); what the server says is never trusted:

- a tool the file does not declare gets the effect ``undeclared``: every parameter is
  sensitive and every call needs a person, whatever the policy says;
- the server's annotations (``readOnlyHint``, ``destructiveHint``, ``idempotentHint``,
  ``openWorldHint``) are shown and journaled, never used to decide anything (the MCP
  specification: clients must treat them as untrusted);
- outputs are untrusted unless declared;
- each tool's definition (name, title, description, input and output schemas, annotations) is
  pinned by SHA-256 when a person approves it (``planlock tools --tools FILE --pin``). A tool
  whose definition differs from its pin, or that has no pin, is refused before anything runs
  (``ToolPinMismatch``), and each call checks the definition again, so a server that changes a
  tool between loading and calling is refused too.

The calls of one run share one session per server (a stdio server is started by the run's first
call to it and stopped when the run ends: ``planlock.tools._scope``), so a server keeps its state
from one step to the next and starts once; two runs never share a session. Every call still lists
the tools on that session and checks the definition against the pin before it calls. Called
outside a run, a tool opens a session for the call alone. The ``mcp`` package is imported only
when an MCP tools file is loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from planlock.core import run_blocking
from planlock.errors import ToolCallFailed, ToolPinMismatch, ToolsNotFound
from planlock.tools._mcp_config import (
    McpConfig,
    ServerConfig,
    ToolDecl,
    definition_hash,
    lock_path,
    read_pins,
    write_pins,
)
from planlock.tools._registry import Tool, ToolRegistry
from planlock.tools._schema_tool import schema_tool
from planlock.tools._scope import current_scope

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult
    from mcp.types import Tool as McpToolDef

__all__ = ["McpTool", "McpToolset", "PinStatus", "mcp_tools"]

PinStatus = Literal["pinned", "unpinned", "changed"]
_DEFINITION_KEYS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
_MAX_PAGES = 100


@dataclass(frozen=True)
class McpTool:
    """One tool a server offers: the planlock tool, its definition and how it stands to its pin."""

    server: str
    """The server's name in the tools file."""
    mcp_name: str
    """The tool's name on the server."""
    tool: Tool
    definition: dict[str, Any]
    """The definition the server gave (name, title, description, schemas, annotations)."""
    sha256: str
    status: PinStatus
    changed: tuple[str, ...] = ()
    """For a changed tool: the parts of the definition that differ from the pin."""

    @property
    def key(self) -> str:
        return f"{self.server}/{self.mcp_name}"

    @property
    def annotations(self) -> dict[str, Any]:
        """The server's hints: shown, never trusted."""
        return dict(self.definition.get("annotations") or {})


@dataclass(frozen=True)
class McpToolset:
    """The tools of the servers a tools file names, as last listed."""

    path: Path
    tools: tuple[McpTool, ...]

    @classmethod
    async def load(cls, path: str | Path) -> McpToolset:
        """Connect to each server of the tools file, list its tools and compare them with the
        pins. Raises ToolsNotFound when the file is wrong or a server cannot be reached."""
        p = Path(path)
        config = McpConfig.load(p)
        pins = read_pins(p)
        found: list[McpTool] = []
        for sname, server in config.servers.items():
            try:
                async with _connect(server, p.parent) as client:
                    defs = await _list_tools(client)
            except Exception as exc:
                raise ToolsNotFound(f"MCP server '{sname}': {_describe(exc)}") from None
            offered = {d.name for d in defs}
            missing = sorted(set(server.tools) - offered)
            if missing:
                raise ToolsNotFound(
                    f"{p}: server '{sname}' offers no tool {', '.join(map(repr, missing))}"
                )
            for d in defs:
                definition = _definition(d)
                digest = definition_hash(definition)
                pin = pins.get(f"{sname}/{d.name}")
                status: PinStatus
                changed: tuple[str, ...] = ()
                if pin is None:
                    status = "unpinned"
                elif pin.get("sha256") == digest:
                    status = "pinned"
                else:
                    status = "changed"
                    changed = _changed(pin.get("definition"), definition)
                decl = server.tools.get(d.name, ToolDecl())
                tool = _make(sname, server, p.parent, d.name, decl, definition, digest)
                found.append(McpTool(sname, d.name, tool, definition, digest, status, changed))
        return cls(p, tuple(found))

    def problems(self) -> list[tuple[str, str]]:
        """``(tool, what)`` for every tool that is not pinned as it is now."""
        out: list[tuple[str, str]] = []
        for t in self.tools:
            if t.status == "changed":
                what = ", ".join(t.changed) or "the definition"
                out.append((t.tool.name, f"{what} changed since it was pinned ({t.key})"))
            elif t.status == "unpinned":
                out.append((t.tool.name, f"not pinned ({t.key})"))
        return out

    def registry(self) -> ToolRegistry:
        """The tools as a registry. Refuses (ToolPinMismatch) unless every tool the servers offer
        is pinned with its current definition."""
        problems = self.problems()
        if problems:
            hint = (
                f"review them with `planlock tools --tools {self.path}`, then pin them with "
                f"`planlock tools --tools {self.path} --pin` (pins: {lock_path(self.path)})"
            )
            raise ToolPinMismatch(problems, hint)
        return ToolRegistry([t.tool for t in self.tools])

    def pin(self) -> Path:
        """Pin every tool as it is now (a person reviewed them); returns the lock file."""
        pins = {t.key: {"sha256": t.sha256, "definition": t.definition} for t in self.tools}
        return write_pins(self.path, pins)


def mcp_tools(path: str | Path) -> ToolRegistry:
    """The registry of a tools file's MCP tools, every one checked against its pin (sync
    wrapper of ``McpToolset.load(path)`` then ``.registry()``; refuses a running event loop)."""
    return load_toolset(path).registry()


def load_toolset(path: str | Path) -> McpToolset:
    """``McpToolset.load`` for synchronous code."""

    async def main() -> McpToolset:
        return await McpToolset.load(path)

    refusal = "mcp_tools() was called inside an event loop; await McpToolset.load()"
    return run_blocking(main, refusal)


def _make(
    sname: str,
    server: ServerConfig,
    base: Path,
    mcp_name: str,
    decl: ToolDecl,
    definition: dict[str, Any],
    digest: str,
) -> Tool:
    name = decl.name or server.prefix + _identifier(mcp_name)
    label = f"{sname}/{mcp_name}"

    async def call(args: dict[str, Any]) -> Any:
        # The definition is checked again on the session that makes the call: a server that
        # changes a tool after the run was approved is refused before the call is sent.
        scope = current_scope()
        if scope is None:  # not inside a walk: a session for this call alone
            async with _connect(server, base) as client:
                result, problem = await checked_call(client, args)
        else:  # the walk's session with this server (one per run, opened by its first call)
            key = ("mcp", str(base), sname, server.model_dump_json())
            client = await scope.connection(key, lambda: _connect(server, base))
            result, problem = await checked_call(client, args)
        if result is None:
            raise ToolPinMismatch([(name, problem)])
        return _output(name, result)

    async def checked_call(
        client: Client, args: dict[str, Any]
    ) -> tuple[CallToolResult | None, str]:
        now = {d.name: d for d in await _list_tools(client)}
        current = now.get(mcp_name)
        if current is None:
            return None, f"the server no longer offers it ({label})"
        if definition_hash(_definition(current)) != digest:
            what = ", ".join(_changed(definition, _definition(current))) or "the definition"
            return None, f"{what} changed since it was pinned ({label})"
        return await client.call_tool(mcp_name, args), ""

    description = str(definition.get("description") or definition.get("title") or "")
    origin = {
        "kind": "mcp",
        "server": sname,
        "transport": "stdio" if server.command else "streamable_http",
        "tool": mcp_name,
        "sha256": digest,
        "definition": definition,
        "annotations": dict(definition.get("annotations") or {}),
    }
    trusted: bool | tuple[str, ...] = decl.trusted_output
    return schema_tool(
        call,
        name=name,
        description=description,
        input_schema=definition.get("inputSchema") or {"type": "object"},
        effect=decl.effect,
        sensitive=decl.sensitive,
        free=decl.free,
        trusted_output=trusted,
        idempotent=decl.idempotent,
        timeout=decl.timeout,
        output_schema=definition.get("outputSchema"),
        origin=origin,
    )


@contextlib.asynccontextmanager
async def _connect(server: ServerConfig, base: Path) -> AsyncIterator[Client]:
    from mcp import Client, StdioServerParameters, stdio_client  # noqa: PLC0415  (optional)

    target: Any
    with contextlib.ExitStack() as files:
        if server.url is not None:
            target = server.url
        else:
            assert server.command is not None  # ServerConfig checks that one is given
            cwd = (base / server.cwd) if server.cwd else base
            params = StdioServerParameters(
                command=server.command, args=list(server.args), env=dict(server.env), cwd=cwd
            )
            target = stdio_client(params, errlog=_errlog(files))
        async with Client(target, read_timeout_seconds=server.timeout, cache=None) as client:
            yield client


def _errlog(files: contextlib.ExitStack) -> TextIO:
    """Where a stdio server's stderr goes: this process's stderr when it is a real file (it may
    be a test runner's buffer, which a subprocess cannot write to), else nowhere."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (OSError, ValueError, AttributeError):
            continue
    return files.enter_context(open(os.devnull, "w"))  # noqa: PTH123


async def _list_tools(client: Client) -> list[McpToolDef]:
    out: list[McpToolDef] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        out.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return out
    raise ToolsNotFound(f"the server lists more than {_MAX_PAGES} pages of tools")


def _definition(tool: McpToolDef) -> dict[str, Any]:
    dumped = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {k: dumped[k] for k in _DEFINITION_KEYS if k in dumped}


def _changed(pinned: Any, now: dict[str, Any]) -> tuple[str, ...]:
    if not isinstance(pinned, dict):
        return ()
    return tuple(k for k in _DEFINITION_KEYS if pinned.get(k) != now.get(k))


def _output(name: str, result: CallToolResult) -> Any:
    """The call's value: the structured content when there is one, else the text (a list of
    texts, or the content blocks as JSON when they are not all text)."""
    blocks = [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content]
    texts = [b.get("text") for b in blocks if b.get("type") == "text"]
    if result.is_error:
        raise ToolCallFailed(name, " ".join(str(t) for t in texts)[:500] or "an error")
    if result.structured_content is not None:
        return result.structured_content
    if len(texts) == len(blocks):
        return texts[0] if len(texts) == 1 else texts
    return blocks


def _identifier(name: str) -> str:
    out = re.sub(r"\W", "_", name, flags=re.ASCII)
    return out if out[:1].isalpha() or out[:1] == "_" else f"t_{out}"


def _describe(exc: BaseException) -> str:
    """The first leaf of an exception group (anyio task groups wrap what went wrong)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
