"""Benchmark 2 of benchmarks/run.py: makespan of random DAGs, against their critical path and
an ideal anyio scheduler running the same DAG.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from _run_setup import DAG_SEED, Config, Dag, RunStats, Stores, random_dag, run_plan, sleeper, timed

# The ignores on planlock's imports: see the comment on them in run.py.
import planlock  # type: ignore[import-untyped, unused-ignore]

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
