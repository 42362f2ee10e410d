"""``planlock serve`` and its database: work off the event loop, and 503 + Retry-After (never a
hang, never a 500) while the database is unreachable, answering again once it is back.

The engine and the journal here stand in for a database that can be switched off and slowed
down; ``test_pg_restart.py`` does the same with a real PostgreSQL restart.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
from test_server_support import TOKENS, auth

from planlock import Journal, MemoryStore, ToolRegistry
from planlock.db import current_wait
from planlock.errors import DatabaseUnavailable
from planlock.journal import Event
from planlock.policy import Policy
from planlock.server._app import ServerConfig, create_app
from planlock.server._auth import TokenStore


class Switch:
    """Whether the pretend database is up; when down, a call waits the reconnect wait (as the
    PostgreSQL pool does) and then fails."""

    def __init__(self) -> None:
        self.up = True
        self.slow = 0.0

    def use(self) -> None:
        if not self.up:
            time.sleep(current_wait())
            raise DatabaseUnavailable("postgresql://planlock@db/planlock", current_wait(), "down")
        time.sleep(self.slow)


class SwitchedStore(MemoryStore):
    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self.switch = switch

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> Event:
        self.switch.use()
        return super().append(run_id, kind, data)


class SwitchedEngine:
    """Just enough of an ``Engine`` for the reads; every call goes through the switch."""

    def __init__(self, switch: Switch, registry: ToolRegistry) -> None:
        self.switch = switch
        self.journal = Journal(SwitchedStore(switch))
        self.registry = registry
        self.policy = Policy()

    def runs(self, limit: int, scope: Any = None) -> list[dict[str, Any]]:
        self.switch.use()
        return []

    def pending(self) -> list[dict[str, Any]]:
        self.switch.use()
        return []


def app_over(switch: Switch, registry: ToolRegistry, **config: Any) -> Any:
    engine = SwitchedEngine(switch, registry)
    tokens = TokenStore.from_tokens(TOKENS)
    return create_app(engine, tokens, ServerConfig(workers=0, **config)), engine  # type: ignore[arg-type]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_503_with_retry_after_while_the_database_is_down_then_200_without_a_restart(
    registry: ToolRegistry,
) -> None:
    switch = Switch()
    app, engine = app_over(switch, registry, db_wait=0.5, retry_after=3)

    async def go() -> list[tuple[int, float, httpx.Response]]:
        seen = []
        async with client(app) as c:
            for up in (True, False, False, True):
                switch.up = up
                start = time.monotonic()
                r = await c.get("/api/me", headers=auth("sam"))
                seen.append((r.status_code, time.monotonic() - start, r))
        return seen

    (ok1, _, _), (down1, t1, r1), (down2, t2, r2), (ok2, _, _) = anyio.run(go)
    assert (ok1, down1, down2, ok2) == (200, 503, 503, 200)
    assert r1.headers["Retry-After"] == r2.headers["Retry-After"] == "3"
    assert r1.json() == {"detail": "the database is unreachable; retry later"}
    assert r1.headers["X-Frame-Options"] == "DENY"  # still a response of the service
    assert 0.4 < t1 < 3  # the first waited for the database (db_wait), then gave up
    assert t2 < 0.4  # known down: the next one is answered at once
    statuses = [e.data["status"] for e in engine.journal.events() if e.kind == "http_request"]
    assert statuses == [200, 200]  # the 503s could not be journaled: the journal was down


def test_a_503_is_journaled_when_only_the_engine_failed(registry: ToolRegistry) -> None:
    switch = Switch()
    app, engine = app_over(switch, registry, db_wait=0.2)

    def runs(limit: int, scope: Any = None) -> list[dict[str, Any]]:
        raise DatabaseUnavailable("postgresql://planlock@db/planlock", 0.2, "down")

    engine.runs = runs

    async def go() -> httpx.Response:
        async with client(app) as c:
            return await c.get("/api/runs", headers=auth("sam"))

    r = anyio.run(go)
    assert r.status_code == 503
    assert "Retry-After" in r.headers
    [event] = [e for e in engine.journal.events() if e.kind == "http_request"]
    assert event.data["status"] == 503
    assert event.data["error"] == "DatabaseUnavailable"
    assert event.data["caller"] == "sam"


def test_a_slow_query_does_not_stall_the_other_requests(registry: ToolRegistry) -> None:
    switch = Switch()
    app, engine = app_over(switch, registry)
    slow = 1.5

    def runs(limit: int, scope: Any = None) -> list[dict[str, Any]]:
        time.sleep(slow)  # a query that takes its time, in a worker thread
        return []

    engine.runs = runs
    done: dict[str, float] = {}

    async def go() -> None:
        async with client(app) as c:
            start = time.monotonic()

            async def timed(name: str, path: str) -> None:
                r = await c.get(path, headers=auth("pat"))
                assert r.status_code == 200, r.text
                done[name] = time.monotonic() - start

            async with anyio.create_task_group() as tg:
                tg.start_soon(timed, "slow", "/api/runs")
                await anyio.sleep(0.05)
                for i in range(10):
                    tg.start_soon(timed, f"me{i}", "/api/me")
                    tg.start_soon(timed, f"approvals{i}", "/api/approvals")

    anyio.run(go)
    others = [t for name, t in done.items() if name != "slow"]
    assert done["slow"] >= slow
    # Queued behind it (the event loop blocked by the query), every one would finish after it.
    # On a loaded machine the others take their time too (CI: all 20 at 1.29 s against 1.51 s;
    # `make test` on 2 cores: the last at 1.563 s against 1.561 s), so no bound on the last
    # one: that the first of them did not wait for the slow query is what shows it.
    assert min(others) < done["slow"], (sorted(others), done["slow"])  # not queued behind it


def test_database_threads_are_bounded(registry: ToolRegistry) -> None:
    """With one database thread, two slow requests run one after the other."""
    switch = Switch()
    app, _ = app_over(switch, registry, db_threads=1)
    switch.slow = 0.3

    async def go() -> float:
        async with client(app) as c:

            async def get() -> None:
                assert (await c.get("/api/approvals", headers=auth("alice"))).status_code == 200

            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(get)
                tg.start_soon(get)
            return time.monotonic() - start

    # each request: one engine call and one journal append of 0.3 s each, in the one thread
    assert anyio.run(go) >= 4 * switch.slow
