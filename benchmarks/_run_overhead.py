"""Benchmark 1 of benchmarks/run.py: executor overhead per step, against a bare loop and an
anyio floor, and where the time of the headline case goes (the breakdown).
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import anyio.to_thread
from _run_setup import (
    TARGET_MEMORY_US,
    TARGET_SQLITE_US,
    Config,
    RunStats,
    Stores,
    anoop,
    chain_plan,
    enough,
    fan_plan,
    run_plan,
    snoop,
    timed,
    timed_sync,
    validate_cold,
)

# The ignores on planlock's imports: see the comment on them in run.py.
import planlock  # type: ignore[import-untyped, unused-ignore]

# --------------------------------------------------------------------------------------------
# 1. Executor overhead


async def bare_loop(n: int, sync: bool) -> None:
    """The baseline: call the same no-op n times, each call taking the previous result."""
    x = 0
    if sync:
        for _ in range(n):
            x = snoop(x)
    else:
        for _ in range(n):
            x = await anoop(x)


async def anyio_floor(n: int, chain: bool, sync: bool, concurrency: int) -> None:
    """A minimal DAG runner in anyio: one task per step, a capacity limiter, sync tools in
    worker threads, each chain step started by the one before. What any executor built on
    anyio pays before doing anything planlock-specific."""
    limiter = anyio.CapacityLimiter(concurrency)
    async with anyio.create_task_group() as tg:

        async def one(i: int, x: int) -> None:
            async with limiter:
                y = await anyio.to_thread.run_sync(snoop, x) if sync else await anoop(x)
            if chain and i + 1 < n:
                tg.start_soon(one, i + 1, y)

        if chain:
            tg.start_soon(one, 0, 0)
        else:
            for i in range(n):
                tg.start_soon(one, i, 0)


@dataclass
class OverheadRow:
    shape: str
    tool: str
    journal: str
    steps: int
    run_us: float
    """Best per-step wall time of planlock.run (validation included)."""
    run_median_us: float
    run_cpu_us: float
    """Best per-step CPU time of the process during planlock.run (see RunStats.cpu_seconds)."""
    validate_us: float
    """Best per-step time of planlock.validate on the same plan."""
    bare_us: float
    """Best per-step time of the bare loop."""
    floor_us: float
    """Best per-step time of the anyio floor."""
    events: int
    target_us: float | None

    @property
    def overhead_us(self) -> float:
        return self.run_us - self.bare_us

    @property
    def ratio(self) -> float:
        return self.run_us / self.bare_us if self.bare_us > 0 else float("inf")

    @property
    def floor_ratio(self) -> float:
        """Against the anyio floor: the steadiest figure on a busy machine."""
        return self.run_us / self.floor_us if self.floor_us > 0 else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.target_us is None else self.run_us <= self.target_us

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "overhead_us": self.overhead_us,
            "ratio": self.ratio,
            "floor_ratio": self.floor_ratio,
            "met": self.met,
        }


async def bench_overhead(
    cfg: Config, registry: planlock.ToolRegistry, stores: Stores
) -> list[OverheadRow]:
    rows: list[OverheadRow] = []
    for shape in ("chain", "fan-out"):
        for tool in ("async", "sync"):
            rows += await overhead_case(cfg, registry, stores, shape, tool)
    return rows


async def overhead_case(
    cfg: Config, registry: planlock.ToolRegistry, stores: Stores, shape: str, tool: str
) -> list[OverheadRow]:
    """One shape and tool kind: planlock with both journals, the bare loop and the anyio floor,
    interleaved repetition by repetition so that all of them share the machine's noise."""
    n = cfg.steps
    sync = tool == "sync"
    chain = shape == "chain"
    plan = (chain_plan if chain else fan_plan)(n, "snoop" if sync else "anoop")
    report = planlock.validate(plan, registry)
    if not report.ok:
        raise RuntimeError(f"benchmark plan is invalid: {report.issues}")
    validate = functools.partial(validate_cold, plan, registry)
    validate_s = min(timed_sync(validate) for _ in range(cfg.reps))
    bare: list[float] = []
    floor: list[float] = []
    runs: dict[str, list[RunStats]] = {"memory": [], "sqlite": []}
    for _ in range(cfg.reps):
        bare += [await timed(functools.partial(bare_loop, n, sync)) for _ in range(5)]
        floor.append(await timed(functools.partial(anyio_floor, n, chain, sync, cfg.concurrency)))
        for journal, stats in runs.items():
            stats.append(await run_plan(plan, registry, stores.make(journal), cfg.concurrency))
        stores.close()
        if enough([r.seconds for r in (*runs["memory"], *runs["sqlite"])], 2 * len(runs)):
            break
    rows: list[OverheadRow] = []
    for journal, stats in runs.items():
        times = [r.seconds for r in stats]
        target = None
        if not sync:
            target = TARGET_MEMORY_US if journal == "memory" else TARGET_SQLITE_US
        rows.append(
            OverheadRow(
                shape=shape,
                tool=tool,
                journal=journal,
                steps=n,
                run_us=min(times) / n * 1e6,
                run_median_us=statistics.median(times) / n * 1e6,
                run_cpu_us=min(r.cpu_seconds for r in stats) / n * 1e6,
                validate_us=validate_s / n * 1e6,
                bare_us=min(bare) / n * 1e6,
                floor_us=min(floor) / n * 1e6,
                events=stats[-1].events,
                target_us=target,
            )
        )
    return rows


@dataclass
class Breakdown:
    """Where the time of the headline case (async chain, in-memory journal) goes."""

    steps: int
    run_memory_us: float
    """planlock.run, in-memory journal, per step."""
    run_memory_cpu_us: float
    """CPU time of that run, per step."""
    large_run_us: float
    """planlock.run of a chain twice as long, in-memory journal, per step."""
    startup_us: float
    """Of which before the first step started (validation, hashing, approval), per step."""
    run_null_us: float
    """planlock.run with a journal store that keeps nothing, per step."""
    validate_us: float
    """planlock.validate, per step."""
    plan_hash_ms: float
    """One ``plan.hash`` of the whole plan (it is not cached)."""
    append_memory_us: float
    """One journal event appended to a MemoryStore (a step costs two)."""
    append_sqlite_us: float
    """One journal event appended to an SQLiteStore (a step costs two)."""

    @property
    def scaling(self) -> float:
        """Per-step cost of the 2N-step chain over that of the N-step chain (linear: ~1.0)."""
        return self.large_run_us / self.run_memory_us


async def bench_breakdown(
    cfg: Config, registry: planlock.ToolRegistry, stores: Stores
) -> Breakdown:
    n = cfg.steps
    plan = chain_plan(n, "anoop")
    null: list[float] = []
    memory: list[RunStats] = []
    for _ in range(cfg.reps):
        null.append((await run_plan(plan, registry, stores.make("null"), cfg.concurrency)).seconds)
        memory.append(await run_plan(plan, registry, stores.make("memory"), cfg.concurrency))
        if enough([*null, *(r.seconds for r in memory)], 4):
            break
    best = min(memory, key=lambda r: r.seconds)
    # Linearity: the same chain, twice as long. A cost that grows with the plan on every step
    # (say, re-hashing the whole plan per call) shows up as a ratio well above 1.
    large_plan = chain_plan(2 * n, "anoop")
    large: list[float] = []
    for _ in range(2):
        large.append(
            (await run_plan(large_plan, registry, stores.make("memory"), cfg.concurrency)).seconds
        )
        if enough(large, 1):
            break
    validate_s = min(
        timed_sync(functools.partial(validate_cold, plan, registry)) for _ in range(cfg.reps)
    )
    hash_s = min(timed_sync(lambda: plan.hash) for _ in range(cfg.reps))

    started = {"step": "s1", "tool": "anoop", "args": {"x": 0}, "provenance": {"x": ["step:s0"]}}
    finished = {
        "step": "s1",
        "output": 0,
        "provenance": ["step:s1"],
        "trusted": False,
        "attempts": 1,
        "duration_ms": 0.012,
    }

    def append_all(journal: planlock.Journal) -> None:
        for _ in range(n):
            journal.record("bench", "step_started", started)
            journal.record("bench", "step_finished", finished)

    append: dict[str, float] = {}
    for kind in ("memory", "sqlite"):
        times = []
        for _ in range(cfg.reps):
            journal = planlock.Journal(stores.make(kind))
            times.append(timed_sync(functools.partial(append_all, journal)))
        stores.close()
        append[kind] = min(times) / (2 * n) * 1e6
    return Breakdown(
        steps=n,
        run_memory_us=best.seconds / n * 1e6,
        run_memory_cpu_us=min(r.cpu_seconds for r in memory) / n * 1e6,
        large_run_us=min(large) / (2 * n) * 1e6,
        startup_us=best.startup_s / n * 1e6,
        run_null_us=min(null) / n * 1e6,
        validate_us=validate_s / n * 1e6,
        plan_hash_ms=hash_s * 1e3,
        append_memory_us=append["memory"],
        append_sqlite_us=append["sqlite"],
    )
