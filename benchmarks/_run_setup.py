"""The shared parts of benchmarks/run.py: configuration and targets, the tools and their
registry, the benchmark plans and random DAGs, and the timing helpers (RunStats, run_plan, Stores).
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

# The ignores on planlock's imports: see the comment on them in run.py.
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
