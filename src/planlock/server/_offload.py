"""Database work off the event loop: every engine and journal call of a request runs in a worker
thread, at most ``threads`` at once, so one slow query (or a database that went away) stalls
only the requests that wait for it, never the loop that serves the others."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from planlock.db import reconnect_wait

__all__ = ["Offload", "offload_of"]

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """Run blocking calls in worker threads (a bounded pool), each with the service's reconnect
    wait: a database that is down makes them fail after ``wait`` seconds, never hang."""

    def __init__(self, threads: int, wait: float) -> None:
        self.threads = max(1, threads)
        self.wait = wait
        self._limiter: tuple[object, anyio.CapacityLimiter] | None = None

    def _bounded(self) -> anyio.CapacityLimiter:
        token = anyio.lowlevel.current_token()  # one limiter per event loop (tests run several)
        if self._limiter is None or self._limiter[0] is not token:
            self._limiter = (token, anyio.CapacityLimiter(self.threads))
        return self._limiter[1]

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a worker thread."""

        def job() -> T:
            with reconnect_wait(self.wait):
                return fn(*args, **kwargs)

        return await anyio.to_thread.run_sync(job, limiter=self._bounded())

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """An async function whose awaits hide blocking database calls (submitting a plan
        journals as it validates): in a worker thread, on an event loop of its own."""
        call: Callable[[], Awaitable[T]] = partial(fn, *args, **kwargs)

        async def main() -> T:
            return await call()

        return await self.call(anyio.run, main)


def offload_of(app: Any) -> Offload:
    """The app's ``Offload`` (``create_app`` sets it)."""
    found: Offload = app.state.offload
    return found
