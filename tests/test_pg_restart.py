"""PostgreSQL restarted under load: ``planlock serve`` and two ``planlock worker`` processes ride
through it, without a restart of their own; every run finishes exactly once and the journal
verifies. Then, with the database kept down: 503 + Retry-After from the service, and a worker
with a short ``--db-wait`` gives up with exit 5 while the others wait and carry on.

The cluster is a throwaway one of this test's own (``scripts/postgres.sh`` with
``$PLANLOCK_PG_RESTART_DIR``, default /tmp/pg-restart, on port ``$PLANLOCK_PG_RESTART_PORT``,
default 54359), stopped and deleted at the end; the shared server (54329) is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from test_server_support import auth, serve, tls, wait_for

from planlock import Journal, demo

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "postgres.sh"
DIR = os.environ.get("PLANLOCK_PG_RESTART_DIR", "/tmp/pg-restart")
PORT = os.environ.get("PLANLOCK_PG_RESTART_PORT", "54359")
DSN = f"postgresql://planlock:planlock@127.0.0.1:{PORT}/planlock"
OWNER_DSN = f"postgresql://planlock_owner:planlock_owner@127.0.0.1:{PORT}/planlock"
CLI = [sys.executable, "-c", "from planlock.cli._main import main; main()"]
CLIENTS = 8
DOWN_S = 1.0
"""How long the database stays stopped during the restart under load (plus stop and start)."""

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.integration]


def pg(command: str) -> None:
    env = {**os.environ, "PLANLOCK_PG_DIR": DIR, "PLANLOCK_PG_PORT": PORT}
    script = ["bash", str(SCRIPT), command]
    done = subprocess.run(script, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"postgres.sh {command} exited {done.returncode}: {done.stderr}"


def reachable() -> bool:
    import psycopg

    try:
        psycopg.connect(DSN, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    found = os.environ.get("PLANLOCK_PG_BIN") or shutil.which("pg_ctl")
    if not (found or any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))):
        if os.environ.get("PLANLOCK_REQUIRE_PG") == "1":
            pytest.fail("PLANLOCK_REQUIRE_PG=1 but the PostgreSQL binaries are not installed")
        pytest.skip("PostgreSQL binaries not installed")
    assert PORT != "54329", "never restart the shared server"
    pg("stop") if Path(DIR, "data").exists() else None
    shutil.rmtree(DIR, ignore_errors=True)
    try:
        pg("start")
        migrate = [*CLI, "db", "migrate", "--dsn", OWNER_DSN, "--grant", "planlock"]
        done = subprocess.run(migrate, capture_output=True, text=True, check=False)
        # (Once, under 4 xdist workers, this exited 2 with its reason unseen: show it.)
        assert done.returncode == 0, f"db migrate exited {done.returncode}: {done.stderr}"
        yield DSN
    finally:
        pg("stop")
        shutil.rmtree(DIR, ignore_errors=True)


def worker(tmp_path: Path, name: str, db_wait: float) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    command = [
        *CLI,
        "worker",
        "--tools",
        "planlock.demo:registry",
        "--journal",
        DSN,
        "--id",
        name,
        "--poll",
        "0.1",
        "--db-wait",
        str(db_wait),
    ]
    with log:  # the child has its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


class Load:
    """Clients that submit and approve until told to stop, retrying on 503 and lost connections
    (as a client should: the answer may not have arrived); a prober on ``/api/me``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.stop = False
        self.runs: list[str] = []
        self.statuses: Counter[int] = Counter()
        self.me: list[tuple[float, float, int]] = []  # (sent, answered, status)

    async def call(self, method: str, path: str, who: str, body: Any = None) -> httpx.Response:
        for _ in range(60):
            try:
                r = await self.client.request(method, path, json=body, headers=auth(who))
            except httpx.TransportError:
                await anyio.sleep(0.2)
                continue
            self.statuses[r.status_code] += 1
            if r.status_code != 503:
                return r
            await anyio.sleep(min(float(r.headers["Retry-After"]), 0.5))
        raise AssertionError(f"{method} {path}: no answer after 60 attempts")

    async def client_loop(self, n: int) -> None:
        i = 0
        while not self.stop:
            plan = {**demo.PLAN, "goal": f"{demo.GOAL} (#{n}.{i})"}
            r = await self.call("POST", "/api/runs", "sam", {"plan": plan, "inputs": demo.INPUTS})
            assert r.status_code == 201, r.text
            sub = r.json()
            self.runs.append(sub["run_id"])
            decision = {"plan_hash": sub["plan_hash"], "reason": "restart test"}
            path = f"/api/approvals/{sub['approval_id']}/approve"
            r = await self.call("POST", path, "alice", decision)
            assert r.status_code == 200 or (r.status_code == 409 and "approved" in r.text), r.text
            i += 1

    async def prober(self) -> None:
        while not self.stop:
            sent = time.monotonic()
            try:
                r = await self.client.get("/api/me", headers=auth("sam"))
                self.me.append((sent, time.monotonic(), r.status_code))
            except httpx.TransportError:
                self.me.append((sent, time.monotonic(), 0))
            await anyio.sleep(0.05)


def test_a_restart_under_load_loses_and_duplicates_nothing(cluster: str, tmp_path: Path) -> None:
    workers = [worker(tmp_path, f"w{i}", db_wait=30) for i in range(2)]
    times: dict[str, float] = {}
    with serve(tmp_path, "--workers", "0", journal=cluster) as server:

        async def restart() -> None:
            await anyio.sleep(2.0)
            times["stop"] = time.monotonic()
            await anyio.to_thread.run_sync(pg, "stop")
            times["stopped"] = time.monotonic()
            await anyio.sleep(DOWN_S)
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, pg, "start")
                while not await anyio.to_thread.run_sync(reachable):  # noqa: ASYNC110  (polls the server)
                    await anyio.sleep(0.05)
                times["back"] = time.monotonic()

        async def go() -> Load:
            limits = httpx.Limits(max_connections=CLIENTS + 1, keepalive_expiry=2.0)
            async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as c:
                load = Load(c)
                async with anyio.create_task_group() as tg:
                    for n in range(CLIENTS):
                        tg.start_soon(load.client_loop, n)
                    tg.start_soon(load.prober)
                    await restart()
                    await anyio.sleep(2.0)
                    load.stop = True
                return load

        load = anyio.run(go)

        def finished() -> bool:
            r = httpx.get(
                f"{server.url}/api/runs?limit=1000", headers=auth("root"), timeout=30, verify=tls()
            )
            mine = [x for x in r.json() if x["run_id"] in set(load.runs)]
            return len(mine) == len(load.runs) and all(x["finished_at"] for x in mine)

        wait_for(finished, timeout=60, every=0.5)
        alive = [w.poll() is None for w in workers]
        for w in workers:
            w.terminate()
            w.wait(timeout=10)
        server_alive = server.proc.poll() is None

    assert alive == [True, True], "a worker exited during the restart"
    assert server_alive
    after = [(answered, status) for _, answered, status in load.me if answered >= times["back"]]
    first_ok = min(answered for answered, status in after if status == 200) - times["back"]
    down = [s for sent, _, s in load.me if times["stopped"] <= sent < times["back"]]
    sys.stdout.write(
        f"\nrestart: stop took {times['stopped'] - times['stop']:.2f}s, database back "
        f"{times['back'] - times['stopped']:.2f}s after it stopped; first 200 from /api/me "
        f"{first_ok:.2f}s after it was back; {len(load.runs)} runs submitted and approved; "
        f"HTTP statuses {dict(load.statuses)}; /api/me while down: {Counter(down)}\n"
    )
    assert first_ok < 5.0
    assert 500 not in load.statuses

    journal = Journal.open(cluster)
    report = journal.verify()
    assert report.ok, report.reason
    per_run: dict[str, Counter[str]] = {}
    for e in journal.events():
        per_run.setdefault(e.run_id, Counter())[e.kind] += 1
    assert len(set(load.runs)) == len(load.runs) > 0
    for run_id in load.runs:
        kinds = per_run[run_id]
        assert kinds["run_claimed"] == kinds["run_finished"] == 1, (run_id, kinds)
        assert kinds["approval_granted"] == kinds["approval_used"] == 1, (run_id, kinds)
        assert kinds["step_finished"] == 4, (run_id, kinds)
    statuses = Counter(r["status"] for r in _runs(journal))
    assert statuses == {"succeeded": len(load.runs)}, statuses  # no run lost or left behind
    journal.close()


def _runs(journal: Journal) -> list[dict[str, Any]]:
    from planlock.journal import database_of

    db = database_of(journal.store)
    try:
        rows = db.execute("SELECT run_id, status FROM runs").fetchall()
    finally:
        db.close()
    return [{"run_id": r[0], "status": r[1]} for r in rows]


def test_while_the_database_is_down_503_and_a_short_wait_worker_gives_up(
    cluster: str, tmp_path: Path
) -> None:
    patient = worker(tmp_path, "patient", db_wait=60)
    hasty = worker(tmp_path, "hasty", db_wait=2)
    with serve(tmp_path, "--workers", "0", "--db-wait", "1", journal=cluster) as server:
        me = f"{server.url}/api/me"
        assert httpx.get(me, headers=auth("sam"), timeout=10, verify=tls()).status_code == 200
        time.sleep(0.5)  # the workers are polling
        stopped = time.monotonic()  # before the stop: the worker may notice it while it runs
        pg("stop")
        answers = []
        for _ in range(3):
            start = time.monotonic()
            r = httpx.get(me, headers=auth("sam"), timeout=10, verify=tls())
            answers.append((r.status_code, r.headers.get("Retry-After"), time.monotonic() - start))
        hasty.wait(timeout=15)
        gave_up = time.monotonic() - stopped
        pg("start")
        back = time.monotonic()
        wait_for(
            lambda: httpx.get(me, headers=auth("sam"), timeout=10, verify=tls()).status_code == 200,
            5,
        )
        first_ok = time.monotonic() - back
        patient_alive = patient.poll() is None
        patient.terminate()
        patient.wait(timeout=10)
    log = (tmp_path / "hasty.log").read_text()
    sys.stdout.write(
        f"\ndown: /api/me answers {answers}; the --db-wait 2 worker exited "
        f"{hasty.returncode} after {gave_up:.1f}s; first 200 {first_ok:.2f}s after start\n"
    )
    assert [a[:2] for a in answers] == [(503, "2")] * 3
    assert all(took < 3 for *_, took in answers)  # never a hang
    assert hasty.returncode == 5
    assert "unreachable (gave up after" in log, log
    assert "exiting (exit 5)" in log, log
    assert "postgresql://planlock@127.0.0.1" in log, log
    assert "planlock:planlock" not in log
    assert 2 <= gave_up < 12
    assert patient_alive  # a longer --db-wait rides through the same outage
