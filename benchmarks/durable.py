"""Durable engine benchmark: steps per second and approval wake-up latency.

    .venv/bin/python benchmarks/durable.py                  # SQLite (+ PostgreSQL if configured)
    PLANLOCK_PG_DSN=postgresql://... .venv/bin/python benchmarks/durable.py --runs 40

Every engine runs the same workload in this process: ``--runs`` plans of ``--width`` parallel
branches (read -> idempotent write) joined by one send, i.e. ``2 * width + 1`` steps each, with
tools that do no waiting of their own, so the numbers are the engines' overhead. The in-process
engine (``planlock.run`` with an SQLite journal) is the baseline; the DBOS engine is measured
with its system database on SQLite and, when ``$PLANLOCK_PG_DSN`` is set, on PostgreSQL (the
journal stays SQLite). Steps per second = steps executed / wall time from the first submission
to the last finished run. Approval wake-up latency is the time from the delivery of an answer
(``DurableClient.deliver_pending``) to the waiting step's ``step_started`` event, median of
``--wakeups`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from planlock import Journal, Plan, auto_approve, run
from planlock.durable._client import DurableClient, DurableWorker, system_database_url
from planlock.durable._workflow import WorkerContext
from planlock.journal import Event
from planlock.queue._queue import ApprovalQueue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_durable_support import (  # type: ignore[import-not-found, unused-ignore]
    ALLOW,
    parallel_plan,
    registry,
)


def in_process(tmp: Path, runs: int, width: int) -> float:
    journal = Journal.open(tmp / "inproc.db")
    plans = [Plan.parse(parallel_plan(width, f"i{i}")) for i in range(runs)]

    async def one(plan: Plan) -> None:
        result = await run(plan, registry, journal=journal, policy=ALLOW, approver=auto_approve)
        assert result.ok

    async def go() -> None:  # all runs at once, as a worker with no limit would
        async with anyio.create_task_group() as tg:
            for plan in plans:
                tg.start_soon(one, plan)

    started = time.perf_counter()
    anyio.run(go)
    return runs * (2 * width + 1) / (time.perf_counter() - started)


def durable(
    tmp: Path, name: str, db_url: str, runs: int, width: int, wakeups: int
) -> dict[str, Any]:
    journal = Journal.open(tmp / f"{name}.db")
    worker = DurableWorker(
        WorkerContext(registry, journal), db_url=db_url, executor_id=f"bench-{name}"
    )
    started_steps: dict[str, float] = {}
    finished: dict[str, float] = {}

    def listen(event: Event) -> None:
        if event.kind == "step_started" and event.data.get("step") == "s":
            started_steps[event.run_id] = time.perf_counter()
        if event.kind == "run_finished":
            finished[event.run_id] = time.perf_counter()

    journal.listeners.append(listen)
    worker.start()
    try:
        client = worker.client
        plans = [Plan.parse(parallel_plan(width, f"{name}{i}")) for i in range(runs)]

        async def submit_all() -> list[str]:
            return [
                (await client.submit(p, registry, policy=ALLOW, by="bench")).run_id for p in plans
            ]

        began = time.perf_counter()
        ids = anyio.run(submit_all)
        # Timed to the last run_finished the worker journaled: polling DBOS for each result from
        # this process (DurableClient.result) would compete with the worker for the GIL, which a
        # client in another process does not.
        deadline = time.monotonic() + 600
        while not set(ids) <= finished.keys() and time.monotonic() < deadline:
            time.sleep(0.01)
        rate = runs * (2 * width + 1) / (max(finished[i] for i in ids) - began)
        for run_id in ids:
            assert client.result(run_id, timeout=600)["status"] == "succeeded"
        latencies = [_wakeup(client, journal, started_steps) for _ in range(wakeups)]
    finally:
        worker.close()
    return {"steps_per_s": rate, "wakeup_ms": statistics.median(latencies) * 1000}


def _wakeup(client: DurableClient, journal: Journal, started_steps: dict[str, float]) -> float:
    """Submit a plan whose send needs a person; answer the call request; time send -> resume."""

    async def submit() -> str:
        plan = Plan.parse(parallel_plan(1, "wake", ask=True))
        return (await client.submit(plan, registry, policy=ALLOW, by="bench")).run_id

    run_id = anyio.run(submit)
    queue = ApprovalQueue(journal)
    plan_request = next(p for p in queue.pending() if p["run_id"] == run_id)
    client.decide(plan_request["id"], approve=True, by="bench")
    deadline = time.monotonic() + 60
    while not (calls := [p for p in queue.pending() if p["run_id"] == run_id]):
        if time.monotonic() > deadline:
            raise TimeoutError("no call request")
        time.sleep(0.01)
    queue.decide(calls[0]["id"], approve=True, by="bench")  # the table; not yet delivered
    sent = time.perf_counter()
    client.deliver_pending()  # DBOSClient.send
    while run_id not in started_steps:
        time.sleep(0.001)
    client.result(run_id, timeout=60)
    return started_steps[run_id] - sent


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--width", type=int, default=3)
    parser.add_argument("--wakeups", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("PLANLOCK_TEST_PAUSE", "0")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["PLANLOCK_TEST_EFFECTS"] = str(tmp / "effects.sqlite")
        base = in_process(tmp, args.runs, args.width)
        print(f"in-process engine:    {base:8.1f} steps/s (baseline)")
        results = {
            "sqlite": durable(
                tmp,
                "sqlite",
                system_database_url(str(tmp / "dbos.sqlite")),
                args.runs,
                args.width,
                args.wakeups,
            )
        }
        dsn = os.environ.get("PLANLOCK_PG_DSN")
        if dsn:
            schema = f"dbos_bench_{uuid.uuid4().hex[:8]}"
            os.environ["PLANLOCK_DBOS_SCHEMA"] = schema
            try:
                results["postgres"] = durable(
                    tmp, "postgres", system_database_url(dsn), args.runs, args.width, args.wakeups
                )
            finally:
                _drop_schema(dsn, schema)
        for name, r in results.items():
            print(
                f"dbos on {name + ':':<12} {r['steps_per_s']:8.1f} steps/s "
                f"({r['steps_per_s'] / base:.2f}x in-process), "
                f"approval wake-up {r['wakeup_ms']:.0f} ms (median)"
            )


if __name__ == "__main__":
    main()
