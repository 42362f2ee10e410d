"""What lives as long as one walk of a plan (a run, or a revision of one), and no longer.

A tool that holds a connection (an MCP server's session) asks the current ``RunScope`` for it:
the calls of one run then share one connection, and one server process for a stdio server (its
state across steps, and one start for all of them), while two runs never share one, whoever
started them. The executor opens the scope around each walk (``run_scope``); outside any walk
(a tool called directly) there is no scope and the tool connects for the call alone.

A connection is an async context manager entered in a task of the scope's own and exited by it
when the walk ends (an async context manager must be exited by the task that entered it, and a
step's task ends with the step). A connection that fails or closes is opened again by the next
call that asks for it; a call that was in flight on it fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

# asyncio is imported where it is used: `import planlock` does not load it (test_import_time).

__all__ = ["RunScope", "current_scope", "run_scope"]

_CURRENT: ContextVar[RunScope | None] = ContextVar("planlock_run_scope", default=None)


class _Held:
    """One connection: its owner task, the value it yields, or why it has none."""

    __slots__ = ("error", "ready", "stop", "task", "value")

    def __init__(self) -> None:
        import asyncio  # noqa: PLC0415  (see the imports)

        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.task is not None and not self.task.done()


class RunScope:
    """The connections of one walk, by key."""

    def __init__(self) -> None:
        import asyncio  # noqa: PLC0415  (see the imports)

        self._held: dict[Hashable, _Held] = {}
        self.loop = asyncio.get_running_loop()
        """The walk's loop: its connections' tasks run there."""

    async def connection(
        self, key: Hashable, connect: Callable[[], AbstractAsyncContextManager[Any]]
    ) -> Any:
        """The value of ``connect()`` entered once for this walk under ``key`` (again when the
        one before failed or closed). Raises what entering it raised."""
        import asyncio  # noqa: PLC0415  (see the imports)

        held = self._held.get(key)
        if held is None or not held.open:
            held = _Held()
            self._held[key] = held
            held.task = asyncio.get_running_loop().create_task(_own(held, connect))
        await held.ready.wait()
        if held.value is None:
            raise held.error or ConnectionError("the connection closed")
        return held.value

    async def aclose(self) -> None:
        """Exit every connection (each in the task that entered it) and wait for them."""
        import asyncio  # noqa: PLC0415  (see the imports)

        held = list(self._held.values())
        self._held.clear()
        for h in held:
            h.stop.set()
        tasks = [h.task for h in held if h.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _own(held: _Held, connect: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
    try:
        async with connect() as value:
            held.value = value
            held.ready.set()
            await held.stop.wait()
    except Exception as exc:  # reported to the callers waiting for it (and the next one)
        held.error = exc
    finally:
        held.value = None
        held.ready.set()


@contextlib.asynccontextmanager
async def run_scope() -> AsyncIterator[RunScope]:
    """A scope for the walk inside it: its connections close when it ends."""
    scope = RunScope()
    token = _CURRENT.set(scope)
    try:
        yield scope
    finally:
        _CURRENT.reset(token)
        await scope.aclose()


def current_scope() -> RunScope | None:
    """The scope of the walk this code runs in; None outside any, and in code the walk handed
    to another event loop (a thread's), whose tasks could not wait on the scope's."""
    scope = _CURRENT.get()
    if scope is None:
        return None
    import asyncio  # noqa: PLC0415  (see the imports; a scope exists: the walk loaded it)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return scope if loop is scope.loop else None
