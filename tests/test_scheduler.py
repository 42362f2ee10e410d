"""The walk's scheduler: a fixed pool of at most ``concurrency`` workers fed by a ready queue,
not a task per step. Parallelism, the limit and cancellation are those of a task per step."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from planlock import Plan, ToolRegistry, approve_all, run
from planlock.testing import memory_journal

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def chain(n: int) -> Plan:
    steps: list[dict[str, Any]] = [{"id": "s0", "tool": "where", "args": {}}]
    steps += [
        {"id": f"s{i}", "tool": "where", "args": {"x": "{{steps.s" + str(i - 1) + ".output}}"}}
        for i in range(1, n)
    ]
    return Plan.parse({"goal": "chain", "steps": steps})


async def test_a_chain_runs_in_one_worker() -> None:
    reg = ToolRegistry()
    tasks: set[int] = set()

    @reg.tool(effect="read")
    async def where(x: int = 0) -> int:
        tasks.add(id(asyncio.current_task()))
        return x + 1

    result = await run(chain(200), reg, journal=memory_journal(), approver=approve_all())
    assert result.ok
    assert result.outputs["s199"] == 200
    assert len(tasks) == 1


async def test_a_fan_out_uses_at_most_concurrency_workers_and_all_of_them() -> None:
    reg = ToolRegistry()
    tasks: set[int] = set()
    running = peak = 0

    @reg.tool(effect="read")
    async def work() -> None:
        nonlocal running, peak
        tasks.add(id(asyncio.current_task()))
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.005)
        running -= 1

    plan = Plan.parse(
        {"goal": "fan", "steps": [{"id": f"s{i}", "tool": "work"} for i in range(30)]}
    )
    result = await run(plan, reg, journal=memory_journal(), approver=approve_all(), concurrency=4)
    assert result.ok
    assert peak == 4
    assert len(tasks) == 4


async def test_a_step_made_ready_while_the_others_are_busy_starts_at_once() -> None:
    """A slow step must not hold back a ready one while the limit allows another worker: b2
    (after the fast a) runs while the slow b1 is still running."""
    reg = ToolRegistry()
    b2_ran = anyio.Event()

    @reg.tool(effect="read")
    async def fast() -> int:
        return 1

    @reg.tool(effect="read")
    async def slow(x: int) -> int:
        with anyio.fail_after(2):
            await b2_ran.wait()  # only returns if b2 runs meanwhile
        return x

    @reg.tool(effect="read")
    async def other(x: int) -> int:
        b2_ran.set()
        return x

    ref = "{{steps.a.output}}"
    steps = [
        {"id": "a", "tool": "fast"},
        {"id": "b1", "tool": "slow", "args": {"x": ref}},
        {"id": "b2", "tool": "other", "args": {"x": ref}},
    ]
    plan = Plan.parse({"goal": "g", "steps": steps})
    result = await run(plan, reg, journal=memory_journal(), approver=approve_all())
    assert result.ok


async def test_cancelling_the_run_cancels_the_running_steps() -> None:
    reg = ToolRegistry()
    started = anyio.Event()
    cancelled = 0

    @reg.tool(effect="read")
    async def hang() -> None:
        nonlocal cancelled
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise

    plan = Plan.parse({"goal": "g", "steps": [{"id": f"s{i}", "tool": "hang"} for i in range(3)]})
    with anyio.move_on_after(5) as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run(plan, reg, journal=memory_journal(), approver=approve_all()))
            await started.wait()
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert not outer.cancel_called
    assert cancelled == 3


async def test_a_long_chain_of_instant_steps_lets_other_tasks_run() -> None:
    """A worker yields between steps: a chain of no-op async tools does not starve the loop."""
    reg = ToolRegistry()
    ticks = 0

    @reg.tool(effect="read")
    async def where(x: int = 0) -> int:
        return x + 1

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result = await run(chain(300), reg, journal=memory_journal(), approver=approve_all())
        tg.cancel_scope.cancel()
    assert result.ok
    assert ticks >= 290
