"""The MCP tools file (TOML) and its lock file of pins.

```toml
[servers.files]                       # a server, by a name of your choosing
command = "python"                    # stdio: the command, its args, extra environment
args = ["files_server.py"]            # run in the TOML file's folder (or ``cwd``)
env = { FILES_ROOT = "/srv/files" }
# url = "http://127.0.0.1:8000/mcp"   # or: streamable HTTP

[servers.files.tools.read_file]       # per tool: what planlock must know (the server's word is
effect = "read"                       # never taken for it)
trusted_output = false
idempotent = true
```

The pins live beside it in ``FILE.lock`` (``tools.toml.lock``): JSON, one SHA-256 per tool of its
definition as the server gave it when a person pinned it, with the definition itself (so a
mismatch can say what changed).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planlock.errors import ToolsNotFound
from planlock.tools._registry import EFFECTS

__all__ = ["LOCK_VERSION", "McpConfig", "ServerConfig", "ToolDecl", "definition_hash", "lock_path"]

LOCK_VERSION = 1


class ToolDecl(BaseModel):
    """What planlock needs to know about one MCP tool, declared by the person who adds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: str | None = None
    """One of read, write, delete, send, pay; left out: ``undeclared`` (always needs a person)."""
    sensitive: tuple[str, ...] = ()
    """Sensitive parameters of a read tool (a sink's are all sensitive)."""
    free: tuple[str, ...] = ()
    """Parameters of a sink that untrusted data may fill without asking."""
    trusted_output: bool | tuple[str, ...] = False
    """Whether the output is trusted (default: untrusted), or the trusted output paths."""
    idempotent: bool = False
    """Whether a failed call may be retried."""
    timeout: float | None = None
    """Per-call timeout in seconds."""
    name: str | None = None
    """The name plans use (default: the server's prefix and the tool's name)."""

    @model_validator(mode="after")
    def _check(self) -> ToolDecl:
        if self.effect is not None and self.effect not in EFFECTS:
            raise ValueError(f"effect must be one of {', '.join(EFFECTS)}")
        return self


class ServerConfig(BaseModel):
    """One MCP server: a command over stdio, or a streamable HTTP URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    """Added to a minimal environment (PATH, HOME...): the server does not inherit the rest."""
    cwd: str | None = None
    """Working directory of the command (default: the TOML file's folder)."""
    url: str | None = None
    prefix: str = ""
    """Put before each tool's name in plans (``files_`` makes ``read`` ``files_read``)."""
    timeout: float = 30.0
    """Seconds to wait for the server on each request."""
    tools: dict[str, ToolDecl] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (stdio) or 'url' (streamable HTTP)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("'url' must be an http:// or https:// URL")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("'args', 'env' and 'cwd' are for a 'command'")
        return self


class McpConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: dict[str, ServerConfig]

    @classmethod
    def load(cls, path: Path) -> McpConfig:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ToolsNotFound(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ToolsNotFound(f"{path} is not valid TOML: {exc}") from None
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolsNotFound(f"{path}: {problems}") from None
        if not config.servers:
            raise ToolsNotFound(f"{path}: no [servers.NAME] table")
        return config


def lock_path(path: Path) -> Path:
    """Where the pins of the tools file ``path`` live: ``path`` + ``.lock``."""
    return path.with_name(path.name + ".lock")


def definition_hash(definition: dict[str, Any]) -> str:
    """SHA-256 of a tool definition's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def read_pins(path: Path) -> dict[str, dict[str, Any]]:
    """The pins (``server/tool`` -> ``{"sha256", "definition"}``); empty when there is no lock."""
    lock = lock_path(path)
    if not lock.exists():
        return {}
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolsNotFound(f"cannot read the pins in {lock}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise ToolsNotFound(f"{lock} is not a version {LOCK_VERSION} planlock lock file")
    pins = data.get("pins")
    if not isinstance(pins, dict):
        raise ToolsNotFound(f"{lock} has no 'pins' object")
    return pins


def write_pins(path: Path, pins: dict[str, dict[str, Any]]) -> Path:
    lock = lock_path(path)
    body = {"version": LOCK_VERSION, "pins": dict(sorted(pins.items()))}
    lock.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return lock
