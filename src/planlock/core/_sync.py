"""The synchronous forms of planlock's async functions (``run_sync``, ``plan_sync``,
``load_toolset``): one event loop per call, refused inside a running loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from planlock.errors import UsageError

__all__ = ["run_blocking"]

T = TypeVar("T")


def run_blocking(main: Callable[[], Awaitable[T]], refusal: str) -> T:
    """``main()`` on an event loop of its own; ``UsageError(refusal)`` when called from a running
    loop, where blocking would stall it (the caller should await the async form instead)."""
    import asyncio  # noqa: PLC0415  (costs ~50 ms at import; only needed here)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(main)
    raise UsageError(refusal)
