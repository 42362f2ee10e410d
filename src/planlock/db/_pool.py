"""PostgreSQL connections that survive a server restart: a small pool with a health check.

Each ``PostgresDB`` keeps a pool of autocommit connections (at most ``PLANLOCK_PG_POOL``, default
8), opened on demand and kept when returned. A connection taken from the pool is checked first:
one the server has closed or written to while it sat idle (a restart sends ``AdminShutdown``
and closes every connection) is dropped, without a round trip. When no connection can be
opened, the pool tries again with backoff (0.1 s doubling to 1 s) until the *reconnect wait*
has passed, then raises ``DatabaseUnavailable``; the wait is ``reconnect_wait()`` (default
10 s; ``with reconnect_wait(60): ...`` for a worker, ``0`` to try once).

Why not ``psycopg_pool``: its reconnect attempts back off from 1 s doubling (1, 2, 4, 8 s...)
in a background thread, so the first connection after an outage comes up to the last interval
late; here the caller that needs a connection opens it, so the first request after the database
is back gets one within one backoff step (at most 1 s). No background threads either.
"""

from __future__ import annotations

import contextvars
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from planlock.errors import DatabaseUnavailable

if TYPE_CHECKING:
    import psycopg

__all__ = ["Pool", "is_lost", "reconnect_wait"]

DEFAULT_WAIT = 10.0
_WAIT: contextvars.ContextVar[float] = contextvars.ContextVar(
    "planlock_reconnect_wait", default=DEFAULT_WAIT
)
_BACKOFF = (0.1, 1.0)
"""First and longest pause between connection attempts, in seconds."""


@contextmanager
def reconnect_wait(seconds: float) -> Iterator[None]:
    """Within this block (this thread or task, and the threads and tasks it starts), PostgreSQL
    operations wait up to ``seconds`` for the database to come back before raising
    ``DatabaseUnavailable``."""
    token = _WAIT.set(max(0.0, seconds))
    try:
        yield
    finally:
        _WAIT.reset(token)


def current_wait() -> float:
    return _WAIT.get()


def is_lost(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` can no longer be used (closed, or its socket broken)."""
    return bool(conn.closed or conn.broken)


def _stale(conn: psycopg.Connection[Any]) -> bool:
    """An idle autocommit connection has nothing to read; if it has, the server closed it or
    sent an error (``AdminShutdown`` on a restart): drop it rather than fail the next query."""
    if is_lost(conn):
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Pool:
    """At most ``size`` connections to ``dsn``; ``where`` names it in errors (no password)."""

    def __init__(self, dsn: str, where: str, first: psycopg.Connection[Any]) -> None:
        self.dsn = dsn
        self.where = where
        self.size = max(1, int(os.environ.get("PLANLOCK_PG_POOL", "8")))
        self._idle: list[psycopg.Connection[Any]] = [first]
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 1
        """Connections opened so far (the first included): reconnects show here."""

    def take(self) -> psycopg.Connection[Any]:
        """A healthy connection, opened if need be (waiting up to the reconnect wait)."""
        wait = current_wait()
        if not self._slots.acquire(timeout=max(wait, 30.0)):
            raise DatabaseUnavailable(self.where, wait, f"all {self.size} connections in use")
        try:
            return self._healthy(wait)
        except BaseException:
            self._slots.release()
            raise

    def give(self, conn: psycopg.Connection[Any]) -> None:
        """Return a connection taken with ``take`` (a broken one is closed, not kept)."""
        try:
            if self._closed or is_lost(conn) or conn.info.transaction_status != 0:  # 0: IDLE
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def _healthy(self, wait: float) -> psycopg.Connection[Any]:
        if self._closed:  # as psycopg says of a closed connection
            import psycopg  # noqa: PLC0415  (optional dependency, present once a pool exists)

            raise psycopg.OperationalError(f"the connection to {self.where} is closed")
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._open(wait)
            if not _stale(conn):
                return conn
            conn.close()

    def _open(self, wait: float) -> psycopg.Connection[Any]:
        import psycopg  # noqa: PLC0415  (optional dependency, present once a pool exists)

        start = time.monotonic()
        pause = _BACKOFF[0]
        while True:
            left = wait - (time.monotonic() - start)
            try:
                conn = psycopg.connect(
                    self.dsn, autocommit=True, connect_timeout=max(2, min(10, int(left) + 1))
                )
            except psycopg.Error as exc:
                waited = time.monotonic() - start
                if waited >= wait:
                    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                    raise DatabaseUnavailable(self.where, waited, cause) from None
                time.sleep(min(pause, wait - waited))  # the last attempt at the deadline
                pause = min(pause * 2, _BACKOFF[1])
                continue
            with self._lock:
                self.opened += 1
            return conn

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
