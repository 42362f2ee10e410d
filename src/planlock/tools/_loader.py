"""Load a ToolRegistry named as ``module.path:attr`` or ``path/to/file.py:attr``, or the MCP tools
of a ``.toml`` tools file (see ``planlock.tools._mcp``)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from planlock.errors import ToolsNotFound
from planlock.tools._mcp import mcp_tools
from planlock.tools._registry import ToolRegistry

__all__ = ["load_tools"]

_log = logging.getLogger("planlock.tools")


def load_tools(spec: str) -> ToolRegistry:
    """The registry named by ``spec``; the attribute may also be a function returning one. A
    ``.toml`` file declares MCP servers: their tools, each checked against its pin."""
    if spec.endswith(".toml"):
        return mcp_tools(spec)
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ToolsNotFound(f"tools must be module.path:attr or file.py:attr, got {spec!r}")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise ToolsNotFound(f"no such file: {path}")
        name = f"_planlock_tools_{abs(hash(path.resolve()))}"
        loaded = importlib.util.spec_from_file_location(name, path)
        if loaded is None or loaded.loader is None:
            raise ToolsNotFound(f"cannot import {path}")
        module = importlib.util.module_from_spec(loaded)
        sys.modules[name] = module
        try:
            loaded.loader.exec_module(module)
        except Exception as exc:
            raise ToolsNotFound(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ToolsNotFound(f"cannot import module {target!r}: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ToolsNotFound(f"{target} has no attribute {attr!r}")
    if callable(obj) and not isinstance(obj, ToolRegistry):
        obj = obj()
    if not isinstance(obj, ToolRegistry):
        raise ToolsNotFound(f"{spec} is a {type(obj).__name__}, not a ToolRegistry")
    _log.info("tools: %d from %s (%s)", len(obj), spec, ", ".join(sorted(t.name for t in obj)))
    return obj
