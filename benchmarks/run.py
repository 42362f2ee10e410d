"""Performance benchmarks for planlock.

    .venv/bin/python benchmarks/run.py            # full run (`make bench`), about a minute
    .venv/bin/python benchmarks/run.py --quick    # smoke run, a few seconds
    .venv/bin/python benchmarks/run.py --json out.json

First the comparison of ``compare.py`` (planlock per step and makespan against a hand-written
asyncio runner and LangGraph, on chain, fan-out and diamond DAGs; ``--no-compare`` skips it),
then three benchmarks, each compared with a baseline measured in the same run (the machines are
shared and noisy, so absolute numbers from another run are not comparable):

1. executor overhead per step: 1,000-step chains and fan-outs of no-op tools, in-memory and
   SQLite journals, against a bare loop calling the same functions (and an anyio floor);
2. makespan of random 100-step DAGs of sleeping tools, against their critical path (and an
   ideal anyio scheduler running the same DAG);
3. validation time of 1k/10k/100k-step chain plans, per step, and how it scales.

See benchmarks/README.md for what is measured and how, and the results on the reference machine.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from compare import print_compare

# Without src/planlock/py.typed, `mypy benchmarks/run.py` sees planlock as untyped; with it (or
# when src/ is checked too) the import is typed. The ignore keeps both cases clean.
import planlock  # type: ignore[import-untyped, unused-ignore]
from planlock.validation import clear_analyses  # type: ignore[import-untyped, unused-ignore]

# --------------------------------------------------------------------------------------------
# Configuration

TARGET_MEMORY_US = 50.0
"""Per-step wall time of a run with the in-memory journal (async no-op tools)."""
TARGET_SQLITE_US = 500.0
"""Per-step wall time of a run with the SQLite journal (async no-op tools)."""
TARGET_MAKESPAN_RATIO = 1.05
"""Makespan of a random DAG over its critical path (median DAG); also applied, as a same-run
check, to the makespan over that of an ideal anyio scheduler running the same DAG."""
TARGET_VALIDATE_10K_S = 1.0
"""Validation of a 10,000-step plan."""
TARGET_VALIDATE_10K_CPU_S = 0.3
"""The same, in CPU time (issue 16)."""
TARGET_SCALING = 1.5
"""Linearity checks (not targets of the brief): per-step time of a 100x larger plan's validation,
and of a 2x longer chain's run, over the smaller one's (linear is about 1.0)."""


@dataclass(frozen=True)
class Config:
    quick: bool
    steps: int
    """Steps in the chain and fan-out plans of the overhead benchmark."""
    reps: int
    """Repetitions of each overhead measurement (the best is reported)."""
    concurrency: int
    """``concurrency=`` given to planlock.run (and to the anyio floor and ideal scheduler)."""
    dags: int
    """Random DAGs in the makespan benchmark."""
    dag_steps: int
    dag_reps: int
    validation_sizes: tuple[tuple[int, int], ...]
    """(steps, repetitions) of the validation benchmark."""


FULL = Config(
    quick=False,
    steps=1000,
    reps=5,
    concurrency=100,
    dags=5,
    dag_steps=100,
    dag_reps=3,
    validation_sizes=((1_000, 5), (10_000, 3), (100_000, 2)),
)
QUICK = Config(
    quick=True,
    steps=200,
    reps=2,
    concurrency=100,
    dags=2,
    dag_steps=100,
    dag_reps=1,
    validation_sizes=((1_000, 2), (10_000, 1)),
)
DAG_SEED = 20261125

# --------------------------------------------------------------------------------------------
# Tools: the same functions are registered with planlock and called by the baselines.


async def anoop(x: int = 0) -> int:
    """Async no-op: returns its input."""
    return x


def snoop(x: int = 0) -> int:
    """Sync no-op: returns its input (planlock runs it in a worker thread)."""
    return x


async def sleeper(ms: float, inputs: list[int] | None = None) -> int:
    """Sleep ``ms`` milliseconds; ``inputs`` carries the outputs of the steps it depends on."""
    await anyio.sleep(ms / 1000)
    return len(inputs or ())


def transform(value: int, label: str, scale: float = 1.0, tags: list[str] | None = None) -> int:
    """A tool with a few typed parameters, for the validation benchmark (never run)."""
    return value + len(label) + int(scale) + len(tags or ())


def build_registry() -> planlock.ToolRegistry:
    registry = planlock.ToolRegistry()
    for fn in (anoop, snoop, sleeper, transform):
        registry.tool(effect="read")(fn)
    return registry


def validate_cold(plan: planlock.Plan, registry: planlock.ToolRegistry) -> Any:
    """``planlock.validate`` without what an earlier validation left (the analysis kept for the
    plan's run, parsed references, checked literals): the cost of a plan seen for the first time."""
    clear_analyses()
    return planlock.validate(plan, registry)


class NullStore:
    """A journal store that keeps nothing: isolates the executor's cost from the journal's."""

    def __init__(self) -> None:
        self._event = planlock.Event.model_construct(
            seq=0, run_id="", kind="run_started", at="", data={}, prev_hash="", hash=""
        )

    def append(self, run_id: str, kind: str, data: dict[str, Any]) -> planlock.Event:
        del run_id, kind, data
        return self._event

    def events(self, run_id: str | None = None, after: int = 0) -> list[planlock.Event]:
        del run_id, after
        return []


# --------------------------------------------------------------------------------------------
# Plans


def out_ref(step_id: str) -> str:
    return "{{steps." + step_id + ".output}}"


def chain_plan(n: int, tool: str) -> planlock.Plan:
    """``n`` steps, each taking the previous step's output."""
    steps: list[dict[str, Any]] = [{"id": "s0", "tool": tool, "args": {}}]
    steps += [
        {"id": f"s{i}", "tool": tool, "args": {"x": out_ref(f"s{i - 1}")}} for i in range(1, n)
    ]
    return planlock.Plan.parse({"goal": f"{n}-step chain", "steps": steps})


def fan_plan(n: int, tool: str) -> planlock.Plan:
    """``n`` independent steps."""
    steps = [{"id": f"s{i}", "tool": tool, "args": {}} for i in range(n)]
    return planlock.Plan.parse({"goal": f"{n}-wide fan-out", "steps": steps})


def validation_plan_data(n: int) -> dict[str, Any]:
    """A chain with a whole-value placeholder, an interpolated string and two literals a step."""
    steps: list[dict[str, Any]] = [
        {"id": "s0", "tool": "transform", "args": {"value": 0, "label": "start", "scale": 1.5}}
    ]
    for i in range(1, n):
        prev = out_ref(f"s{i - 1}")
        args = {"value": prev, "label": f"step {i} after {prev}", "scale": 1.5, "tags": ["a", "b"]}
        steps.append({"id": f"s{i}", "tool": "transform", "args": args})
    return {"goal": f"{n}-step validation chain", "steps": steps}


@dataclass(frozen=True)
class Dag:
    seed: int
    deps: tuple[tuple[int, ...], ...]
    sleep_ms: tuple[float, ...]

    @property
    def critical_path_ms(self) -> float:
        """Longest path through the DAG, weighted by the sleeps (steps are in topological order)."""
        finish: list[float] = []
        for i, ms in enumerate(self.sleep_ms):
            finish.append(ms + max((finish[d] for d in self.deps[i]), default=0.0))
        return max(finish)

    @property
    def depth(self) -> int:
        """Steps on the longest path by count."""
        level: list[int] = []
        for i in range(len(self.deps)):
            level.append(1 + max((level[d] for d in self.deps[i]), default=0))
        return max(level)

    def plan(self) -> planlock.Plan:
        steps: list[dict[str, Any]] = []
        for i, ms in enumerate(self.sleep_ms):
            args: dict[str, Any] = {"ms": ms}
            if self.deps[i]:
                args["inputs"] = [out_ref(f"n{d}") for d in self.deps[i]]
            steps.append({"id": f"n{i}", "tool": "sleeper", "args": args})
        return planlock.Plan.parse({"goal": f"random DAG, seed {self.seed}", "steps": steps})


def random_dag(seed: int, n: int) -> Dag:
    """Each step depends on 0-3 random earlier steps and sleeps 5-20 ms."""
    rng = random.Random(seed)
    deps = tuple(tuple(sorted(rng.sample(range(i), min(i, rng.randint(0, 3))))) for i in range(n))
    sleeps = tuple(round(rng.uniform(5.0, 20.0), 3) for _ in range(n))
    return Dag(seed, deps, sleeps)


# --------------------------------------------------------------------------------------------
# Timing helpers


RUN_BUDGET_S = 5.0
"""Stop repeating a measurement early once its runs have taken this long (a slow build, say
one with a quadratic hot spot, still finishes in a few minutes; at least two runs are kept)."""


def enough(times: Sequence[float], minimum: int) -> bool:
    return len(times) >= minimum and sum(times) > RUN_BUDGET_S


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    """Wall time of one call, after a full garbage collection (GC stays enabled while timed)."""
    gc.collect()
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def timed_sync(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(frozen=True)
class RunStats:
    seconds: float
    """Wall time of planlock.run."""
    cpu_seconds: float
    """CPU time of this process (all threads) during the run: what the wall time would be on
    an idle machine for CPU-bound work, so a steadier figure when the CPUs are shared."""
    events: int
    """Events journaled (0 for the null store)."""
    startup_s: float
    """From ``run_started`` to the first ``step_started`` in the journal: validation, hashing,
    risk assessment, approval and the first events (NaN for the null store)."""


async def run_plan(
    plan: planlock.Plan, registry: planlock.ToolRegistry, store: Any, concurrency: int
) -> RunStats:
    """Time one planlock.run. Raises if the run failed or its journal lacks a step's events."""
    journal = planlock.Journal(store)
    approver = planlock.approve_all()
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    result = await planlock.run(
        plan, registry, journal=journal, approver=approver, concurrency=concurrency
    )
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if not result.ok:
        raise RuntimeError(f"benchmark run failed at {result.failed_step}: {result.error}")
    if isinstance(store, NullStore):
        return RunStats(elapsed, cpu, 0, math.nan)
    events = journal.events()
    kinds = [e.kind for e in events]
    for kind in ("step_started", "step_finished"):
        if kinds.count(kind) != len(plan.steps):
            raise RuntimeError(f"expected one {kind} event per step, found {kinds.count(kind)}")
    first = next(e.at for e in events if e.kind == "step_started")
    startup = datetime.fromisoformat(first) - datetime.fromisoformat(events[0].at)
    return RunStats(elapsed, cpu, len(events), startup.total_seconds())


class Stores:
    """Fresh journal stores for each repetition; SQLite files live in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = 0
        self._open: list[Any] = []

    def make(self, kind: str) -> Any:
        if kind == "memory":
            return planlock.MemoryStore()
        if kind == "null":
            return NullStore()
        self._count += 1
        store = planlock.SQLiteStore(self.directory / f"journal-{self._count}.db")
        self._open.append(store)
        return store

    def close(self) -> None:
        for store in self._open:
            store.close()
        self._open.clear()


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


# --------------------------------------------------------------------------------------------
# 2. Makespan of random DAGs


async def ideal_schedule(dag: Dag, concurrency: int) -> None:
    """The same DAG without planlock: one task per step that waits for its dependencies' events,
    then calls the same tool. The best an anyio program can do, sleep overshoot included."""
    done = [anyio.Event() for _ in dag.sleep_ms]
    limiter = anyio.CapacityLimiter(concurrency)

    async def node(i: int) -> None:
        for d in dag.deps[i]:
            await done[d].wait()
        async with limiter:
            await sleeper(dag.sleep_ms[i], [0] * len(dag.deps[i]))
        done[i].set()

    async with anyio.create_task_group() as tg:
        for i in range(len(dag.sleep_ms)):
            tg.start_soon(node, i)


async def sleep_overshoot_ms(samples: int) -> float:
    """Median lateness of one ``anyio.sleep`` of 5-20 ms on this machine's event loop: the
    part of a makespan that no scheduler can remove (it is paid once per level of the DAG)."""
    rng = random.Random(DAG_SEED)
    late: list[float] = []
    for _ in range(samples):
        ms = rng.uniform(5.0, 20.0)
        start = time.perf_counter()
        await anyio.sleep(ms / 1000)
        late.append((time.perf_counter() - start) * 1e3 - ms)
    return statistics.median(late)


@dataclass
class DagRow:
    seed: int
    steps: int
    edges: int
    depth: int
    critical_ms: float
    ideal_ms: float
    memory_ms: float
    memory_startup_ms: float
    """Before the first step started (validation, hashing, approval, first events)."""
    sqlite_ms: float

    @property
    def ideal_ratio(self) -> float:
        return self.ideal_ms / self.critical_ms

    @property
    def memory_ratio(self) -> float:
        return self.memory_ms / self.critical_ms

    @property
    def sqlite_ratio(self) -> float:
        return self.sqlite_ms / self.critical_ms

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ideal_ratio": self.ideal_ratio,
            "memory_ratio": self.memory_ratio,
            "sqlite_ratio": self.sqlite_ratio,
        }


async def bench_makespan(
    cfg: Config, registry: planlock.ToolRegistry, stores: Stores
) -> list[DagRow]:
    rows: list[DagRow] = []
    for k in range(cfg.dags):
        dag = random_dag(DAG_SEED + k, cfg.dag_steps)
        plan = dag.plan()
        report = planlock.validate(plan, registry)
        if not report.ok:
            raise RuntimeError(f"DAG plan is invalid: {report.issues}")
        ideal: list[float] = []
        runs: dict[str, list[RunStats]] = {"memory": [], "sqlite": []}
        for _ in range(cfg.dag_reps):
            ideal.append(await timed(functools.partial(ideal_schedule, dag, cfg.concurrency)))
            for journal, stats in runs.items():
                stats.append(await run_plan(plan, registry, stores.make(journal), cfg.concurrency))
            stores.close()
        memory = min(runs["memory"], key=lambda r: r.seconds)
        rows.append(
            DagRow(
                seed=dag.seed,
                steps=len(dag.sleep_ms),
                edges=sum(len(d) for d in dag.deps),
                depth=dag.depth,
                critical_ms=dag.critical_path_ms,
                ideal_ms=min(ideal) * 1e3,
                memory_ms=memory.seconds * 1e3,
                memory_startup_ms=memory.startup_s * 1e3,
                sqlite_ms=min(r.seconds for r in runs["sqlite"]) * 1e3,
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# 3. Validation scaling


@dataclass
class ValidationRow:
    steps: int
    reps: int
    parse_s: float
    """Best time of Plan.parse on the decoded JSON (reported, not part of validation)."""
    validate_s: float
    """Best time of planlock.validate."""
    validate_cpu_s: float
    """Best CPU time of planlock.validate (steadier on a shared machine)."""

    @property
    def parse_us(self) -> float:
        return self.parse_s / self.steps * 1e6

    @property
    def validate_us(self) -> float:
        return self.validate_s / self.steps * 1e6

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "parse_us": self.parse_us, "validate_us": self.validate_us}


def bench_validation(cfg: Config, registry: planlock.ToolRegistry) -> list[ValidationRow]:
    rows: list[ValidationRow] = []
    for n, reps in cfg.validation_sizes:
        data = validation_plan_data(n)
        parse_times: list[float] = []
        plan: Any = None
        for _ in range(reps):
            gc.collect()
            start = time.perf_counter()
            plan = planlock.Plan.parse(data)
            parse_times.append(time.perf_counter() - start)
        del data  # as after loading a plan: only the Plan stays alive (a smaller heap for GC)
        report = planlock.validate(plan, registry) if reps > 1 else None  # warm-up
        times: list[float] = []
        cpu_times: list[float] = []
        for _ in range(reps):
            gc.collect()
            cpu = time.process_time()
            start = time.perf_counter()
            report = validate_cold(plan, registry)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
        if report is None or not report.ok:
            raise RuntimeError(f"validation plan is invalid: {report}")
        rows.append(ValidationRow(n, reps, min(parse_times), min(times), min(cpu_times)))
        del plan, report
    return rows


# --------------------------------------------------------------------------------------------
# Output


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain-text table; the first ``left`` columns are left-aligned, the rest right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(headers), line, *(fmt(r) for r in rows)])


def measured(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "MISSED")


def num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


@dataclass
class Target:
    name: str
    value: float
    limit: float
    unit: str
    cpu: float | None = None
    """The same figure in CPU time, where it applies (shown, not judged)."""

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def report_overhead(rows: list[OverheadRow], concurrency: int) -> str:
    headers = [
        "shape",
        "tool",
        "journal",
        "planlock us/step",
        "median",
        "cpu us/step",
        "validate us/step",
        "bare us/step",
        "planlock-bare",
        "ratio",
        "anyio floor",
        "x floor",
        "events",
        "target",
        "",
    ]
    body = [
        [
            r.shape,
            r.tool,
            r.journal,
            num(r.run_us),
            num(r.run_median_us),
            num(r.run_cpu_us),
            num(r.validate_us),
            num(r.bare_us, 3),
            num(r.overhead_us),
            f"{r.ratio:,.0f}x",
            num(r.floor_us),
            f"{r.floor_ratio:.1f}x",
            str(r.events),
            f"<= {r.target_us:g}" if r.target_us is not None else "-",
            verdict(r.met),
        ]
        for r in rows
    ]
    steps = rows[0].steps if rows else 0
    return (
        f"1. Executor overhead: {steps}-step plans of no-op tools, concurrency={concurrency} "
        "(best of reps; validation is included in planlock's time)\n" + table(headers, body, 3)
    )


def report_breakdown(b: Breakdown) -> str:
    body = [
        ["planlock.run, in-memory journal", num(b.run_memory_us), "us/step"],
        ["  CPU time of the process during that run", num(b.run_memory_cpu_us), "us/step"],
        ["  of which before the first step starts", num(b.startup_us), "us/step"],
        [
            f"planlock.run, {2 * b.steps}-step chain (x{b.scaling:.2f} per step)",
            num(b.large_run_us),
            "us/step",
        ],
        ["planlock.run, journal store that keeps nothing", num(b.run_null_us), "us/step"],
        ["planlock.validate (included in both runs)", num(b.validate_us), "us/step"],
        ["plan.hash of the whole plan (one call; not cached)", num(b.plan_hash_ms, 2), "ms/call"],
        ["Journal.record, MemoryStore (2 per step)", num(b.append_memory_us), "us/event"],
        ["Journal.record, SQLiteStore (2 per step)", num(b.append_sqlite_us), "us/event"],
    ]
    return f"   Where the time goes ({b.steps}-step async chain):\n" + "\n".join(
        f"   {label:<55}{value:>9} {unit}" for label, value, unit in body
    )


def report_makespan(rows: list[DagRow], overshoot_ms: float) -> str:
    headers = [
        "seed",
        "steps",
        "edges",
        "depth",
        "critical ms",
        "ideal ms",
        "ideal/cp",
        "planlock mem ms",
        "of which startup",
        "mem/cp",
        "planlock sqlite ms",
        "sqlite/cp",
        "mem/ideal",
    ]
    body = [
        [
            str(r.seed),
            str(r.steps),
            str(r.edges),
            str(r.depth),
            num(r.critical_ms),
            num(r.ideal_ms),
            f"{r.ideal_ratio:.3f}",
            num(r.memory_ms),
            num(r.memory_startup_ms),
            f"{r.memory_ratio:.3f}",
            num(r.sqlite_ms),
            f"{r.sqlite_ratio:.3f}",
            f"{r.memory_ms / r.ideal_ms:.3f}",
        ]
        for r in rows
    ]
    med = [
        "median",
        "",
        "",
        "",
        "",
        "",
        f"{statistics.median(r.ideal_ratio for r in rows):.3f}",
        "",
        "",
        f"{statistics.median(r.memory_ratio for r in rows):.3f}",
        "",
        f"{statistics.median(r.sqlite_ratio for r in rows):.3f}",
        f"{statistics.median(r.memory_ms / r.ideal_ms for r in rows):.3f}",
    ]
    depth = statistics.mean(r.depth for r in rows)
    gap = statistics.mean(r.ideal_ms - r.critical_ms for r in rows)
    return (
        "2. Makespan of random DAGs (async tools sleeping 5-20 ms; 0-3 dependencies a step; "
        "best of reps)\n"
        + table(headers, [*body, med])
        + f"\n   anyio.sleep is late by {overshoot_ms:.2f} ms (median) on this machine; "
        f"x mean depth {depth:.1f} = {overshoot_ms * depth:.1f} ms, "
        f"vs ideal - critical path = {gap:.1f} ms on average"
    )


def report_validation(rows: list[ValidationRow]) -> str:
    headers = [
        "steps",
        "reps",
        "parse ms",
        "parse us/step",
        "validate ms",
        "validate us/step",
        "cpu ms",
        "vs smallest",
    ]
    base = rows[0].validate_us
    body = [
        [
            f"{r.steps:,}",
            str(r.reps),
            num(r.parse_s * 1e3),
            num(r.parse_us),
            num(r.validate_s * 1e3),
            num(r.validate_us),
            num(r.validate_cpu_s * 1e3),
            f"{r.validate_us / base:.2f}",
        ]
        for r in rows
    ]
    return "3. Validation of chain plans (placeholders and literals; best of reps)\n" + table(
        headers, body, 0
    )


def targets_of(
    overhead: list[OverheadRow],
    breakdown: Breakdown,
    dags: list[DagRow],
    validation: list[ValidationRow],
) -> list[Target]:
    out: list[Target] = [
        Target(
            f"run, async {r.shape}, {r.journal} journal",
            r.run_us,
            r.target_us,
            "us/step",
            r.run_cpu_us,
        )
        for r in overhead
        if r.target_us is not None
    ]
    out.append(
        Target(
            f"run per step, {2 * breakdown.steps} / {breakdown.steps}-step chain",
            breakdown.scaling,
            TARGET_SCALING,
            "x",
        )
    )
    out.append(
        Target(
            "makespan / critical path, median DAG",
            statistics.median(r.memory_ratio for r in dags),
            TARGET_MAKESPAN_RATIO,
            "x",
        )
    )
    out.append(
        Target(
            "makespan / ideal anyio scheduler, median DAG",
            statistics.median(r.memory_ms / r.ideal_ms for r in dags),
            TARGET_MAKESPAN_RATIO,
            "x",
        )
    )
    ten_k = [r for r in validation if r.steps == 10_000]
    if ten_k:
        row = ten_k[0]
        out.append(
            Target(
                "validate 10k steps", row.validate_s, TARGET_VALIDATE_10K_S, "s", row.validate_cpu_s
            )
        )
        out.append(
            Target(
                "validate 10k steps, CPU time", row.validate_cpu_s, TARGET_VALIDATE_10K_CPU_S, "s"
            )
        )
    first, last = validation[0], validation[-1]
    out.append(
        Target(
            f"validation per step, {last.steps // 1000}k / {first.steps // 1000}k",
            last.validate_us / first.validate_us,
            TARGET_SCALING,
            "x",
        )
    )
    return out


def report_targets(targets: list[Target]) -> str:
    headers = ["target", "measured (wall)", "cpu", "limit", "verdict"]
    body = [
        [
            t.name,
            f"{measured(t.value)} {t.unit}",
            "" if t.cpu is None else f"{measured(t.cpu)} {t.unit}",
            f"<= {t.limit:g} {t.unit}",
            verdict(t.met),
        ]
        for t in targets
    ]
    return "Targets\n" + table(headers, body)


# --------------------------------------------------------------------------------------------
# Main


def metadata(cfg: Config) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "planlock": planlock.__version__,
        "quick": cfg.quick,
        "config": asdict(cfg),
        "load_before": load_average(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


def load_note(load: list[float]) -> str:
    """The load average, with a warning when other work shares the CPUs."""
    if not load:
        return "load average: unknown"
    text = f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    busy = (os.cpu_count() or 1) / 2
    if load[0] > busy:
        text += (
            f" (above {busy:g}: other processes share the CPUs, so absolute times are inflated;"
            " ratios against the same-run baselines are more trustworthy)"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="planlock performance benchmarks")
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run (smaller, fewer reps)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the asyncio-floor and LangGraph comparison"
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    meta = metadata(cfg)
    print(
        f"planlock {meta['planlock']} benchmarks{' (quick)' if cfg.quick else ''}: "
        f"Python {meta['python']}, {meta['cpus']} CPUs, {meta['platform']}, {meta['date']}"
    )
    print(load_note(meta["load_before"]), end="\n\n")
    registry = build_registry()
    started = time.perf_counter()
    compared = ([], []) if args.no_compare else print_compare(cfg.quick)
    with tempfile.TemporaryDirectory(prefix="planlock-bench-") as tmp:
        stores = Stores(Path(tmp))
        try:
            overhead = anyio.run(bench_overhead, cfg, registry, stores)
            print(report_overhead(overhead, cfg.concurrency), end="\n\n", flush=True)
            breakdown = anyio.run(bench_breakdown, cfg, registry, stores)
            print(report_breakdown(breakdown), end="\n\n", flush=True)
            dags = anyio.run(bench_makespan, cfg, registry, stores)
            overshoot = anyio.run(sleep_overshoot_ms, 10 if cfg.quick else 40)
            print(report_makespan(dags, overshoot), end="\n\n", flush=True)
        finally:
            stores.close()
    validation = bench_validation(cfg, registry)
    print(report_validation(validation))
    print()
    targets = targets_of(overhead, breakdown, dags, validation)
    print(report_targets(targets))
    elapsed = time.perf_counter() - started
    met = sum(t.met for t in targets)
    print(f"\n{met}/{len(targets)} targets met; the benchmarks took {elapsed:.0f} s")
    print(load_note(load_average()))
    if args.json:
        results = {
            "meta": {**meta, "seconds": round(elapsed, 1), "load_after": load_average()},
            "compare": [asdict(r) for r in compared[0]],
            "compare_makespan": [asdict(r) for r in compared[1]],
            "overhead": [r.to_json() for r in overhead],
            "breakdown": {**asdict(breakdown), "scaling": breakdown.scaling},
            "makespan": [r.to_json() for r in dags],
            "sleep_overshoot_ms": overshoot,
            "validation": [r.to_json() for r in validation],
            "targets": [t.to_json() for t in targets],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
