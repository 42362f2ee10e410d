"""Group commit for the SQL journals: events recorded during one turn of the event loop are
appended in one transaction (one lock, one head read, one COMMIT), and the chain is the same
as if they had been appended one by one.

The guarantee is the one of a commit per event: an event a caller *waits* for
(``Journal.commit``) is durable when the wait returns, and so is every event recorded before it
(a batch is appended in order, all or none). The walk waits for ``step_started`` before it calls
the tool, so the call's record, and every outcome recorded before it (the outputs it reads), are
durable before the side effect. Outcomes (``Journal.defer``: ``step_finished``...) do not wait:
they are durable at the next commit anyone waits for, or after ``WINDOW`` seconds at most, and
listeners see them only then. A step's outcome is therefore durable before any step that depends
on it starts, and before the run reports it (``run_finished`` waits).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planlock.journal._events import Event
from planlock.journal._stores import Pending

if TYPE_CHECKING:
    import asyncio

__all__ = ["WINDOW", "Group"]

_Waiter = tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]", int]
"""A caller waiting for its event to be durable: its loop, its future, its loop's thread."""

WINDOW = 0.002
"""How long at most an event nobody waits for stays in memory before its batch is committed."""


class Group:
    """The pending batch of one journal, and when and by whom it is committed.

    ``append(events) -> list[Event]`` commits a batch (the store's ``append_many``);
    ``published(events)`` runs after each commit (logging, listeners). Every method may be called
    from any thread; the timers and the waiters live on the event loop that recorded the events.
    """

    def __init__(
        self,
        append: Callable[[list[Pending]], list[Event]],
        published: Callable[[list[Event]], None],
    ) -> None:
        self._append = append
        self._published = published
        self.lock = threading.RLock()
        """Held while a batch is taken and committed: one writer at a time, in order."""
        self._pending: list[Pending] = []
        self._waiters: list[_Waiter] = []
        self._soon: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        """Loops with a flush scheduled at the end of their current turn."""
        self._timer: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        """Loops with a flush scheduled within ``WINDOW``."""
        self._lost: BaseException | None = None

    def add(self, item: Pending, loop: asyncio.AbstractEventLoop, wait: bool) -> Any:
        """Queue ``item``; with ``wait``, return a future done when it is durable."""
        with self.lock:
            self._raise_lost()
            self._pending.append(item)
            future = None
            if wait:
                future = loop.create_future()
                self._waiters.append((loop, future, threading.get_ident()))
                if loop not in self._soon:  # at the end of this turn: whoever records joins in
                    self._soon.add(loop)
                    loop.call_soon(self._scheduled, self._soon, loop)
            elif loop not in self._timer:
                self._timer.add(loop)
                loop.call_later(WINDOW, self._scheduled, self._timer, loop)
            return future

    def _scheduled(self, flag: weakref.WeakSet[asyncio.AbstractEventLoop], loop: Any) -> None:
        with self.lock:
            flag.discard(loop)
        try:
            self.flush()
        except Exception:  # reported to the waiters; kept for the next caller when none
            return

    def flush(self, extra: list[Pending] | None = None) -> list[Event]:
        """Commit what is pending (and ``extra`` after it) in one transaction; return the
        events of ``extra``. On failure every waiter of the batch gets the error."""
        with self.lock:
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = [], []
            if extra:
                self._raise_lost()
                batch = batch + extra
            if not batch:
                return []
            try:
                events = self._append(batch)
            except BaseException as exc:
                _settle(waiters, exc)
                if not waiters and not extra:
                    self._lost = exc
                raise
            _settle(waiters, None)
            self._published(events)
            return events[len(events) - len(extra or ()) :]

    def _raise_lost(self) -> None:
        """Events nobody waited for could not be committed: say so to the next writer."""
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise RuntimeError(f"journal events recorded earlier were not committed: {lost}")


def _settle(waiters: list[_Waiter], exc: BaseException | None) -> None:
    here = threading.get_ident()
    for loop, future, thread in waiters:

        def done(future: asyncio.Future[None] = future) -> None:
            if not future.done():  # a waiter that was cancelled has gone
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)
                    future.exception()  # it is raised to the waiter; never "not retrieved"

        if thread == here:
            done()
        else:
            loop.call_soon_threadsafe(done)
