"""Load: 500 concurrent submissions and approvals against ``planlock serve`` on loopback.

A real uvicorn server in a subprocess with in-server workers executing the runs; an httpx
AsyncClient with bounded concurrency. Every submitted run must finish exactly once (no lost or
duplicated run), within a bounded time, and the journal must verify.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from test_server_support import auth, serve

from planlock import Journal, demo

RUNS = int(os.environ.get("PLANLOCK_LOAD_RUNS", "500"))
CONCURRENCY = 64
BOUND_S = float(os.environ.get("PLANLOCK_LOAD_BOUND_S", "300"))
"""Generous: the CI machine is shared. The measured figures are printed (run with -s)."""


async def submit_and_approve(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    body = {"plan": {**demo.PLAN, "goal": f"{demo.GOAL} (#{n})"}, "inputs": demo.INPUTS}
    r = await client.post("/api/runs", json=body, headers=auth("sam"))
    assert r.status_code == 201, r.text
    sub: dict[str, Any] = r.json()
    decision = {"plan_hash": sub["plan_hash"], "reason": f"load test {n}"}
    r = await client.post(
        f"/api/approvals/{sub['approval_id']}/approve", json=decision, headers=auth("alice")
    )
    assert r.status_code == 200, r.text
    return sub


async def load(base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float, float]:
    limiter = anyio.Semaphore(CONCURRENCY)
    submitted: list[dict[str, Any]] = []
    # The client drops idle connections before uvicorn does (5 s): otherwise a request can race
    # the server closing its connection (a ReadError under load, not a lost run).
    limits = httpx.Limits(max_connections=CONCURRENCY, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        start = time.monotonic()

        async def one(n: int) -> None:
            async with limiter:
                submitted.append(await submit_and_approve(client, n))

        async with anyio.create_task_group() as tg:
            for n in range(RUNS):
                tg.start_soon(one, n)
        accepted = time.monotonic() - start
        while True:
            r = await client.get("/api/runs", params={"limit": 1000}, headers=auth("root"))
            runs: list[dict[str, Any]] = r.json()
            if sum(x["status"] == "succeeded" for x in runs) >= RUNS:
                break
            if time.monotonic() - start > BOUND_S:
                pytest.fail(
                    f"not all runs finished in {BOUND_S}s: {Counter(x['status'] for x in runs)}"
                )
            await anyio.sleep(0.5)
        return submitted, runs, accepted, time.monotonic() - start


@pytest.mark.integration
@pytest.mark.slow
def test_500_concurrent_submissions_and_approvals_each_run_exactly_once(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "4") as server:
        submitted, runs, accepted, total = anyio.run(load, server.url)
    ids = [s["run_id"] for s in submitted]
    assert len(ids) == len(set(ids)) == RUNS
    assert Counter(r["run_id"] for r in runs) == Counter(ids)  # none lost, none duplicated
    assert {r["status"] for r in runs} == {"succeeded"}
    assert total < BOUND_S

    journal = Journal.open(server.db)
    report = journal.verify()
    assert report.ok, report.reason
    per_run: dict[str, Counter[str]] = {}
    for e in journal.events():
        per_run.setdefault(e.run_id, Counter())[e.kind] += 1
    for run_id in ids:
        kinds = per_run[run_id]
        assert kinds["run_claimed"] == 1, run_id
        assert kinds["approval_granted"] == kinds["approval_used"] == 1, run_id
        assert kinds["step_finished"] == 4, run_id
        assert kinds["run_finished"] == 1, run_id
        assert kinds["http_request"] == 2, run_id  # the submission and the approval
    sys.stdout.write(
        f"\nload: {RUNS} submissions+approvals accepted in {accepted:.1f}s "
        f"({2 * RUNS / accepted:.0f} requests/s); all {RUNS} runs finished in {total:.1f}s "
        f"({RUNS / total:.1f} runs/s, {4 * RUNS / total:.0f} steps/s); "
        f"{report.count} journal events verified\n"
    )
