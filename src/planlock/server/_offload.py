"""Database work off the event loop: every engine and journal call of a request runs in a worker
thread, at most ``threads`` at once, so one slow query (or a database that went away) stalls
only the requests that wait for it, never the loop that serves the others.

While the database is known to be down (a call failed with ``DatabaseUnavailable`` and none has
succeeded since), a *new* request tries it once, without waiting, and is answered 503 at once;
a request that started while it was up keeps the full wait for each of its calls, so that work
under way when the database went away finishes once it is back (within ``wait``)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from planlock.db import reconnect_wait
from planlock.errors import DatabaseUnavailable

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
        self.down = False
        """Whether the last database call failed with ``DatabaseUnavailable``."""
        self._wait: contextvars.ContextVar[float | None] = contextvars.ContextVar(
            "planlock_request_wait", default=None
        )

    @contextmanager
    def request(self) -> Iterator[None]:
        """Around one request: its calls wait ``wait`` seconds for the database, or not at all
        when it is known to be down as the request starts."""
        token = self._wait.set(0.0 if self.down else self.wait)
        try:
            yield
        finally:
            self._wait.reset(token)

    def _bounded(self) -> anyio.CapacityLimiter:
        token = anyio.lowlevel.current_token()  # one limiter per event loop (tests run several)
        if self._limiter is None or self._limiter[0] != token:
            self._limiter = (token, anyio.CapacityLimiter(self.threads))
        return self._limiter[1]

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a worker thread."""

        wait = self._wait.get()
        wait = self.wait if wait is None else wait

        def job() -> T:
            with reconnect_wait(wait):
                return fn(*args, **kwargs)

        try:
            result = await anyio.to_thread.run_sync(job, limiter=self._bounded())
        except DatabaseUnavailable:
            self.down = True
            raise
        self.down = False
        return result

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
