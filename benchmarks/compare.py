"""planlock against the floor and against LangGraph, on the same DAGs, in one run.

    .venv/bin/python benchmarks/compare.py            # this comparison alone (~2 min)
    .venv/bin/python benchmarks/compare.py --quick    # smoke run
    .venv/bin/python benchmarks/run.py                # all benchmarks, this one first

Three DAG shapes of no-op async tools (1,000 steps; ``--quick``: 200):

- **chain**: step *i* takes step *i-1*'s output;
- **fan-out**: independent steps;
- **diamond**: stacked diamonds, a top step, 8 steps reading it, a bottom step reading the 8
  (as a list), the next top reading that bottom.

Each is run, interleaved repetition by repetition so that all of them share the machine's noise,
by:

- the **asyncio floor**: a hand-written asyncio runner of the same DAG (a task per step, a
  semaphore for the concurrency, a counter of unfinished inputs per step): what any asyncio
  executor pays before it does anything of its own;
- **planlock** (``planlock.run``, approve-all, ``concurrency=100``) with the in-memory journal and
  with the SQLite journal (a new file per repetition). Validation, assessment and approval are
  included: they are part of a run;
- **LangGraph** (optional ``bench`` extra): one node per step, one state key per step, an edge
  from each input (a node with several inputs waits for all of them), compiled and invoked
  without a checkpointer (its cheapest run; an ``InMemorySaver`` costs 0-40% more) and with its
  SQLite checkpointer (``AsyncSqliteSaver``, a new file per repetition). Building and compiling
  the graph are included, as planlock's validation is. LangGraph's per-step cost on a chain
  grows with the chain's length (a superstep per step), so the ratios depend on the size.

Per step = wall time of one whole run / steps; medians of the repetitions. Ratios are what to
compare across machines and runs. The makespan part runs the same shapes (100 steps) with tools
that sleep 5-20 ms (a literal in the plan) and reports makespan / critical path, startup
included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import anyio
from _table import table

import planlock  # type: ignore[import-untyped, unused-ignore]
from planlock.validation import clear_analyses  # type: ignore[import-untyped, unused-ignore]

CONCURRENCY = 100
DIAMOND_WIDTH = 8
SEED = 20261205

# --------------------------------------------------------------------------------------------
# Tools: the same functions for every runner


async def anoop(x: int = 0, inputs: list[int] | None = None) -> int:
    """Async no-op: returns its input (plus the number of inputs of a join)."""
    return x + len(inputs or ())


async def sleepy(ms: float, inputs: list[int] | None = None) -> int:
    """Sleeps ``ms`` milliseconds."""
    await asyncio.sleep(ms / 1000)
    return len(inputs or ())


def registry() -> planlock.ToolRegistry:
    reg = planlock.ToolRegistry()
    reg.tool(effect="read")(anoop)
    reg.tool(effect="read")(sleepy)
    return reg


# --------------------------------------------------------------------------------------------
# Shapes


@dataclass(frozen=True)
class Shape:
    name: str
    deps: tuple[tuple[int, ...], ...]
    """For each step, the steps whose output it reads (all earlier)."""
    sleep_ms: tuple[float, ...] | None = None
    """Sleeping tools (makespan) or no-ops (None)."""

    @property
    def size(self) -> int:
        return len(self.deps)

    def dependents(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.deps]
        for i, ds in enumerate(self.deps):
            for d in ds:
                out[d].append(i)
        return out

    def args(self, i: int, value: Callable[[int], Any]) -> dict[str, Any]:
        """Step ``i``'s arguments, each input given by ``value`` (a placeholder, or a result)."""
        ds = self.deps[i]
        if self.sleep_ms is not None:
            out: dict[str, Any] = {"ms": self.sleep_ms[i]}
            if ds:
                out["inputs"] = [value(d) for d in ds]
            return out
        if len(ds) == 1:
            return {"x": value(ds[0])}
        return {"inputs": [value(d) for d in ds]} if ds else {}

    @property
    def tool(self) -> Callable[..., Awaitable[int]]:
        return anoop if self.sleep_ms is None else sleepy

    def plan(self) -> planlock.Plan:
        steps = [
            {
                "id": f"s{i}",
                "tool": self.tool.__name__,
                "args": self.args(i, lambda d: "{{steps.s" + str(d) + ".output}}"),
            }
            for i in range(self.size)
        ]
        return planlock.Plan.parse({"goal": f"{self.name}, {self.size} steps", "steps": steps})

    @property
    def critical_path_ms(self) -> float:
        assert self.sleep_ms is not None
        finish: list[float] = []
        for i, ms in enumerate(self.sleep_ms):
            finish.append(ms + max((finish[d] for d in self.deps[i]), default=0.0))
        return max(finish)


def shapes(n: int, sleeps: bool = False) -> list[Shape]:
    chain = tuple(((i - 1,) if i else ()) for i in range(n))
    fan = tuple(() for _ in range(n))
    diamond: list[tuple[int, ...]] = []
    while len(diamond) + DIAMOND_WIDTH + 2 <= n:
        top = len(diamond)
        diamond.append((top - 1,) if top else ())
        diamond += [(top,)] * DIAMOND_WIDTH
        diamond.append(tuple(range(top + 1, top + 1 + DIAMOND_WIDTH)))
    out = [Shape("chain", chain), Shape("fan-out", fan), Shape("diamond", tuple(diamond))]
    if not sleeps:
        return out
    rng = random.Random(SEED)
    return [
        Shape(s.name, s.deps, tuple(round(rng.uniform(5.0, 20.0), 3) for _ in s.deps)) for s in out
    ]


# --------------------------------------------------------------------------------------------
# Runners: each returns the wall time of one run of the shape


def settle() -> None:
    """Before a timed run: collect the garbage, then freeze what is alive (this harness, every
    system's graphs and plans, the cached analyses) out of the collector's reach (``gc.freeze``),
    so that a collection during the run walks what the run itself allocated, as in a process of
    its own. Without it, the full collections that the in-memory journal's events set off walked
    LangGraph's compiled graphs too (72 against 43 us/step on the chain, 2026-12-05). Every
    system gets the same; the next ``settle`` thaws and collects again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def asyncio_floor(shape: Shape) -> float:
    """The same DAG by hand: a task per ready step, a semaphore, a counter per step."""
    settle()
    start = time.perf_counter()
    deps, dependents, tool = shape.deps, shape.dependents(), shape.tool
    pending = [len(d) for d in deps]
    out: list[Any] = [None] * shape.size
    sem = asyncio.Semaphore(CONCURRENCY)
    done = asyncio.Event()
    left = [shape.size]
    tasks: set[asyncio.Task[None]] = set()

    def launch(i: int) -> None:
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def one(i: int) -> None:
        async with sem:
            out[i] = await tool(**shape.args(i, out.__getitem__))
        for j in dependents[i]:
            pending[j] -= 1
            if pending[j] == 0:
                launch(j)
        left[0] -= 1
        if left[0] == 0:
            done.set()

    for i, ds in enumerate(deps):
        if not ds:
            launch(i)
    await done.wait()
    return time.perf_counter() - start


class NoWaitJournal(planlock.Journal):  # type: ignore[misc, unused-ignore]
    """What the durability guarantee costs: a journal that never waits for an event to be
    durable (every event group-committed within the window, none before its side effect).
    Measured, not offered: planlock's journals wait for step_started and run_finished."""

    async def commit(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        self.defer(run_id, kind, data)


async def planlock_run(
    plan: planlock.Plan,
    reg: planlock.ToolRegistry,
    store: Any,
    journal_class: type[planlock.Journal] = planlock.Journal,
) -> tuple[float, float]:
    """Wall time of planlock.run, and of its startup (run_started to the first step_started)."""
    journal = journal_class(store)
    settle()
    start = time.perf_counter()
    result = await planlock.run(
        plan, reg, journal=journal, approver=planlock.approve_all(), concurrency=CONCURRENCY
    )
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"planlock run failed at {result.failed_step}: {result.error}")
    journal.flush()  # only NoWaitJournal may hold some
    events = journal.events()
    started = [e for e in events if e.kind == "step_started"]
    if len(started) != len(plan.steps):
        raise RuntimeError(f"expected {len(plan.steps)} step_started events, got {len(started)}")
    startup = datetime.fromisoformat(started[0].at) - datetime.fromisoformat(events[0].at)
    return elapsed, startup.total_seconds()


def langgraph_available() -> bool:
    try:  # the `bench` extra installs both; either may be missing
        import langgraph.checkpoint.sqlite.aio  # noqa: PLC0415
        import langgraph.graph  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def build_graph(shape: Shape) -> Any:
    """One node per step, one state key per step, an edge from each input."""
    from langgraph.graph import END, START, StateGraph  # noqa: PLC0415

    keys = {f"s{i}": int for i in range(shape.size)}
    state = TypedDict("State", keys, total=False)  # type: ignore[misc]
    graph = StateGraph(state)
    tool = shape.tool
    dependents = shape.dependents()

    def node(i: int) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        key = f"s{i}"

        async def call(st: dict[str, Any]) -> dict[str, Any]:
            return {key: await tool(**shape.args(i, lambda d: st[f"s{d}"]))}

        return call

    for i in range(shape.size):
        graph.add_node(f"s{i}", node(i))  # type: ignore[call-overload]
    for i, ds in enumerate(shape.deps):
        if not ds:
            graph.add_edge(START, f"s{i}")
        else:
            graph.add_edge([f"s{d}" for d in ds] if len(ds) > 1 else f"s{ds[0]}", f"s{i}")
        if not dependents[i]:
            graph.add_edge(f"s{i}", END)
    return graph


async def langgraph_run(shape: Shape, sqlite: Path | None) -> float:
    settle()
    start = time.perf_counter()
    graph = build_graph(shape)
    config = {"configurable": {"thread_id": "bench"}, "recursion_limit": shape.size + 10}
    if sqlite is None:
        app = graph.compile()
        final = await app.ainvoke({}, config)
    else:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: PLC0415

        async with AsyncSqliteSaver.from_conn_string(str(sqlite)) as saver:
            app = graph.compile(checkpointer=saver)
            final = await app.ainvoke({}, config)
    elapsed = time.perf_counter() - start
    if len(final) != shape.size:
        raise RuntimeError(f"LangGraph ran {len(final)} of {shape.size} steps")
    return elapsed


# --------------------------------------------------------------------------------------------
# The comparison


SYSTEMS = (
    "floor",
    "planlock-memory",
    "planlock-memory-cold",
    "planlock-sqlite",
    "planlock-sqlite-nowait",
    "langgraph-memory",
    "langgraph-sqlite",
)
"""``-cold``: the plan's analysis is not reused (``clear_analyses`` before the run), as for a plan
run without having been validated first. ``-nowait``: ``NoWaitJournal``."""
PLANLOCK = 5
"""The systems before LangGraph's."""


@dataclass
class Row:
    shape: str
    steps: int
    us: dict[str, float]
    """Median per-step wall time of each system."""

    def ratio(self, a: str, b: str) -> float:
        return self.us[a] / self.us[b] if a in self.us and b in self.us else float("nan")


async def per_step(n: int, reps: int, tmp: Path) -> list[Row]:
    reg = registry()
    lg = langgraph_available()
    cases = [(s, s.plan()) for s in shapes(n)]
    times: dict[tuple[str, str], list[float]] = {}
    systems = SYSTEMS if lg else SYSTEMS[:PLANLOCK]
    count = 0
    for _ in range(reps):  # interleaved: every system once per repetition
        for shape, plan in cases:
            for system in systems:
                count += 1
                elapsed = await run_system(system, shape, plan, reg, tmp / f"{count}.db")
                times.setdefault((shape.name, system), []).append(elapsed)
    return [
        Row(
            shape.name,
            shape.size,
            {
                system: statistics.median(times[shape.name, system]) / shape.size * 1e6
                for system in SYSTEMS
                if (shape.name, system) in times
            },
        )
        for shape, _ in cases
    ]


async def run_system(
    system: str, shape: Shape, plan: planlock.Plan, reg: planlock.ToolRegistry, db: Path
) -> float:
    """One run of ``shape`` by ``system``; ``db``: a new file for the SQLite runs."""
    if system == "floor":
        return await asyncio_floor(shape)
    if system.endswith("-cold"):
        clear_analyses()
    elif system.startswith("planlock"):
        # Warm, as the columns say: the plan run once before the clock starts. A "-cold" run of
        # another shape clears every kept analysis, this shape's too, so until 2026-12-05 the
        # warm columns of a three-shape run were partly cold as well (chain: 74 us/step).
        await planlock_run(plan, reg, planlock.MemoryStore())
    if system.startswith("planlock-memory"):
        return (await planlock_run(plan, reg, planlock.MemoryStore()))[0]
    if system.startswith("planlock-sqlite"):
        store = planlock.SQLiteStore(db)
        lazy = system.endswith("-nowait")
        try:
            return (
                await planlock_run(plan, reg, store, NoWaitJournal if lazy else planlock.Journal)
            )[0]
        finally:
            store.close()
    return await langgraph_run(shape, db if system == "langgraph-sqlite" else None)


@dataclass
class SpanRow:
    shape: str
    steps: int
    critical_ms: float
    ms: dict[str, float]
    """Median makespan of each system (startup included)."""
    startup_ms: float
    """planlock's startup (before its first step started), median."""


async def makespan(n: int, reps: int) -> list[SpanRow]:
    reg = registry()
    lg = langgraph_available()
    rows: list[SpanRow] = []
    for shape in shapes(n, sleeps=True):
        plan = shape.plan()
        got: dict[str, list[float]] = {}
        startup: list[float] = []
        for _ in range(reps):
            got.setdefault("floor", []).append(await asyncio_floor(shape))
            elapsed, start = await planlock_run(plan, reg, planlock.MemoryStore())
            got.setdefault("planlock-memory", []).append(elapsed)
            startup.append(start)
            if lg:
                got.setdefault("langgraph-memory", []).append(await langgraph_run(shape, None))
        rows.append(
            SpanRow(
                shape.name,
                shape.size,
                shape.critical_path_ms,
                {k: statistics.median(v) * 1e3 for k, v in got.items()},
                statistics.median(startup) * 1e3,
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# Output


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _cell(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # noqa: PLR0124  (NaN)


def report_per_step(rows: Sequence[Row], reps: int) -> str:
    headers = [
        "shape",
        "steps",
        "floor us",
        "planlock mem us",
        "cold",
        "planlock sqlite us",
        "no-wait",
        "LangGraph mem us",
        "LangGraph sqlite us",
        "mem x floor",
        "cold x floor",
        "mem / LG mem",
        "sqlite / LG sqlite",
        "sqlite / mem",
        "guarantee us",
    ]
    nan = float("nan")
    body = [
        [
            r.shape,
            str(r.steps),
            _cell(r.us["floor"]),
            _cell(r.us["planlock-memory"]),
            _cell(r.us["planlock-memory-cold"]),
            _cell(r.us["planlock-sqlite"]),
            _cell(r.us["planlock-sqlite-nowait"]),
            _cell(r.us.get("langgraph-memory", nan)),
            _cell(r.us.get("langgraph-sqlite", nan)),
            _cell(r.ratio("planlock-memory", "floor")) + "x",
            _cell(r.ratio("planlock-memory-cold", "floor")) + "x",
            _cell(r.ratio("planlock-memory", "langgraph-memory"), 2) + "x",
            _cell(r.ratio("planlock-sqlite", "langgraph-sqlite"), 2) + "x",
            _cell(r.ratio("planlock-sqlite", "planlock-memory"), 2) + "x",
            _cell(r.us["planlock-sqlite"] - r.us["planlock-sqlite-nowait"]),
        ]
        for r in rows
    ]
    return (
        f"0a. Per step against the asyncio floor and LangGraph (no-op async tools, "
        f"concurrency={CONCURRENCY}, medians of {reps}, interleaved; cold: without reusing "
        "the analysis; no-wait: SQLite journal that never waits for durability; guarantee: "
        "what waiting costs per step)\n" + table(headers, body)
    )


def report_makespan(rows: Sequence[SpanRow], reps: int) -> str:
    headers = [
        "shape",
        "steps",
        "critical ms",
        "floor / cp",
        "planlock / cp",
        "of which startup ms",
        "LangGraph / cp",
    ]
    body = [
        [
            r.shape,
            str(r.steps),
            _cell(r.critical_ms),
            _cell(r.ms["floor"] / r.critical_ms, 3),
            _cell(r.ms["planlock-memory"] / r.critical_ms, 3),
            _cell(r.startup_ms),
            _cell(r.ms.get("langgraph-memory", float("nan")) / r.critical_ms, 3),
        ]
        for r in rows
    ]
    return (
        f"0b. Makespan / critical path, startup included (tools sleeping 5-20 ms, in-memory "
        f"journal, no checkpointer, medians of {reps})\n" + table(headers, body)
    )


async def compare(quick: bool) -> tuple[list[Row], list[SpanRow], str]:
    """Both parts, with the load average before and after."""
    before = load()
    with tempfile.TemporaryDirectory(prefix="planlock-compare-") as tmp:
        rows = await per_step(200 if quick else 1000, 2 if quick else 7, Path(tmp))
    spans = await makespan(100, 1 if quick else 3)
    return rows, spans, f"load average {before} before, {load()} after"


def print_compare(quick: bool) -> tuple[list[Row], list[SpanRow]]:
    try:
        rows, spans, loads = anyio.run(compare, quick)
    finally:
        gc.unfreeze()  # what ``settle`` froze is the caller's again (run.py runs more after)
    if not langgraph_available():
        print("LangGraph is not installed (pip install -e '.[bench]'): its columns are empty")
    print(report_per_step(rows, 2 if quick else 7), end="\n\n")
    print(report_makespan(spans, 1 if quick else 3))
    print(f"   {loads}", end="\n\n", flush=True)
    return rows, spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    args = parser.parse_args(argv)
    print_compare(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
