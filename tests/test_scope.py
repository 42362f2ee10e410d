"""The run scope: the connections tools open live as long as one walk (``tools._scope``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import planlock
from planlock.testing import memory_journal
from planlock.tools import RunScope, ToolRegistry, current_scope, run_scope


class Opener:
    """Counts entries and exits, and in which task each happened."""

    def __init__(self, fail: int = 0) -> None:
        self.entered: list[asyncio.Task[Any] | None] = []
        self.exited: list[asyncio.Task[Any] | None] = []
        self.fail = fail

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[str]:
        self.entered.append(asyncio.current_task())
        if len(self.entered) <= self.fail:
            raise ConnectionRefusedError("no server")
        try:
            yield f"conn{len(self.entered)}"
        finally:
            self.exited.append(asyncio.current_task())


@pytest.mark.anyio
async def test_one_connection_per_key_entered_once_and_exited_by_the_task_that_entered_it() -> None:
    a, b = Opener(), Opener()
    async with run_scope() as scope:
        assert current_scope() is scope
        got = await asyncio.gather(*(scope.connection("a", a) for _ in range(5)))
        assert got == ["conn1"] * 5
        assert await scope.connection("b", b) == "conn1"
        assert (len(a.entered), len(b.entered), a.exited) == (1, 1, [])
    assert current_scope() is None
    assert a.exited == a.entered  # closed with the scope, by its owner task
    assert a.entered[0] is not asyncio.current_task()
    assert len(b.exited) == 1


@pytest.mark.anyio
async def test_a_connection_that_failed_to_open_is_tried_again_by_the_next_call() -> None:
    opener = Opener(fail=1)
    async with run_scope() as scope:
        with pytest.raises(ConnectionRefusedError, match="no server"):
            await scope.connection("k", opener)
        assert await scope.connection("k", opener) == "conn2"
    assert len(opener.entered) == 2
    assert len(opener.exited) == 1


@pytest.mark.anyio
async def test_a_connection_that_closed_on_its_own_is_opened_again() -> None:
    class Dies:
        def __init__(self) -> None:
            self.opened = 0

        @contextlib.asynccontextmanager
        async def __call__(self) -> AsyncIterator[int]:
            self.opened += 1
            yield self.opened
            if self.opened == 1:
                raise OSError("the server died")  # after the scope stopped it: nobody hears

    scope = RunScope()
    dies = Dies()
    assert await scope.connection("k", dies) == 1
    await scope.aclose()  # stopped: its owner ends
    assert await scope.connection("k", dies) == 2  # a new one, not the closed one
    await scope.aclose()


def test_each_run_of_a_plan_has_a_scope_of_its_own_closed_when_it_ends() -> None:
    seen: list[RunScope | None] = []
    opener = Opener()
    reg = ToolRegistry()

    @reg.tool(effect="read", trusted_output=True)
    async def ping() -> str:
        """Use the run's connection."""
        scope = current_scope()
        seen.append(scope)
        assert scope is not None
        return str(await scope.connection("server", opener))

    plan = planlock.Plan.parse([{"step": i, "tool": "ping", "args": {}} for i in (1, 2, 3)])
    for _ in range(2):
        result = planlock.run_sync(
            plan, reg, approver=planlock.approve_all(), journal=memory_journal()
        )
        assert result.ok, result.error
    assert len(seen) == 6
    assert seen[0] is seen[1] is seen[2]
    assert seen[3] is seen[4] is seen[5]
    assert seen[0] is not seen[3]
    assert len(opener.entered) == 2  # one connection per run
    assert len(opener.exited) == 2  # each closed when its run ended
    assert current_scope() is None


@pytest.mark.anyio
async def test_code_on_another_loop_sees_no_scope_and_connects_alone() -> None:
    async with run_scope() as scope:
        assert current_scope() is scope

        def elsewhere() -> RunScope | None:
            async def look() -> RunScope | None:
                return current_scope()

            return asyncio.run(look())  # a thread's own loop, with this context copied

        assert await asyncio.to_thread(elsewhere) is None
