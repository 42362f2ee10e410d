"""Crash safety (R11) and scale-out of the durable engine, with real processes.

The crash test SIGKILLs a worker at random moments, over and over, while runs with parallel
branches are in flight, then lets a last worker finish. A "person" answers requests the way an
operator would: a resume request (an interrupted send) is approved only if the effect log shows
the send did not happen. Afterwards every run finished exactly once, no step of a finished run
was called after its result was journaled, every send happened exactly once for a successful run
(and at most once for any run), idempotent writes were applied once per key, and the journal
verifies.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from planlock import Journal

pytest.importorskip("dbos")

from test_durable import Site, submit, wait_for
from test_durable_support import (
    backlog_closed,
    count_calls,
    kills_done,
    parallel_plan,
    unfinished,
)

from planlock.durable._client import DurableClient, system_database_url
from planlock.durable._workflow import MAX_RESUMES
from planlock.queue._queue import ApprovalQueue

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUPPORT = Path(__file__).resolve().parent / "test_durable_support.py"
KILLS = int(os.environ.get("PLANLOCK_CRASH_KILLS", "100"))
BACKLOG = int(os.environ.get("PLANLOCK_CRASH_BACKLOG", "30"))
"""Runs kept waiting while the kills go on: the operator submits more as runs finish, so there is
work in flight at every kill on a machine of any speed, and the last worker finishes only about
this many. (180 runs submitted at the start left ~150 to it: a quarter of the test's time.)"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(
        tmp_path,
        tmp_path / "journal.db",
        system_database_url(str(tmp_path / "dbos.sqlite")),
        tmp_path / "effects.sqlite",
    )
    monkeypatch.setenv("PLANLOCK_TEST_EFFECTS", str(s.effects))
    return s


def operator(
    client: DurableClient, effects: Path, stop: threading.Event, runs: list[str], journal: Path
) -> list[str]:
    """Answer requests like a person: plans and calls yes; an interrupted step is run again only
    if its effect is not in the log. And keep ``BACKLOG`` runs waiting (new ones on ``runs``)
    until the kills are over."""
    answered: list[str] = []
    queue = ApprovalQueue(client.journal)
    while not stop.is_set():
        if kills_done(journal).exists():
            backlog_closed(journal).touch()  # no submission is under way, and none will follow
        else:
            for _ in range(BACKLOG - unfinished(str(journal))):
                runs.append(crash_run(client, len(runs)))
        for item in queue.pending():
            approve = True
            if item["kind"] == "resume":
                key = f"{item['run_id']}:{item['step_id']}"
                approve = not any(k == key for k, _ in count_calls(effects))
            client.decide(item["id"], approve=approve, by="operator", reason="checked the log")
            answered.append(f"{item['kind']}:{'yes' if approve else 'no'}")
        stop.wait(0.1)
    return answered


def test_sigkill_at_random_points_loses_and_repeats_nothing(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps pause up to 0.1 s so the work outlasts the kills on a fast, quiet machine too (the
    # loop stops early when every run has finished, and fewer kills than KILLS would land).
    monkeypatch.setenv("PLANLOCK_TEST_PAUSE", "0.1")
    client = site.client()
    runs = [crash_run(client, i) for i in range(BACKLOG)]
    stop = threading.Event()
    answered: list[str] = []
    person = threading.Thread(
        target=lambda: answered.extend(operator(client, site.effects, stop, runs, site.journal)),
        daemon=True,
    )
    person.start()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SUPPORT), str(site.journal), site.db, str(KILLS), "0.1", "0.5"],
        env={**site.env, "PLANLOCK_TEST_PAUSE": "0.1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    stop.set()
    person.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    sys.stderr.write(
        f"crash test: {stats}, {len(runs)} runs, answers {Counter(answered)}, "
        f"{time.monotonic() - started:.0f} s\n"
    )
    assert stats["kills_in_flight"] >= KILLS  # kills that landed while runs were in flight
    assert stats["runs_interrupted"] >= KILLS  # (run, kill) pairs: a run in flight when killed

    journal = Journal.open(site.journal)
    assert journal.verify().ok
    events = journal.events()
    by_run: dict[str, list[tuple[str, dict[str, object], str]]] = {}
    for e in events:
        by_run.setdefault(e.run_id, []).append((e.kind, e.data, e.at))
    calls = _calls(site.effects)
    statuses: Counter[str] = Counter()
    for run_id in runs:
        evs = by_run[run_id]
        kinds = Counter(k for k, _, _ in evs)
        assert kinds["run_finished"] == 1, run_id
        status = str(next(d["status"] for k, d, _ in evs if k == "run_finished"))
        statuses[status] += 1
        for kind in ("step_started", "step_finished", "step_failed", "step_skipped"):
            steps = Counter(d["step"] for k, d, _ in evs if k == kind)
            assert all(n == 1 for n in steps.values()), (run_id, kind, steps)
        finished_at = {d["step"]: _ts(at) for k, d, at in evs if k == "step_finished"}
        for step, when in finished_at.items():
            late = [t for t in calls.get(f"{run_id}:{step}", []) if t > when]
            assert not late, f"{run_id}:{step} was called again after it finished"
        sends = len(calls.get(f"{run_id}:s", []))
        assert sends <= 1, f"{run_id}: the send happened {sends} times"
        if status == "succeeded":
            assert sends == 1
            for i in range(3):
                assert calls.get(f"{run_id}:p{i}"), f"{run_id}:p{i} never ran"
        else:
            failed = [d for k, d, _ in evs if k == "step_failed"]
            assert [d["error_kind"] for d in failed] == ["interrupted"], failed
            # ...and only because a person declined to resume the interrupted step, or it was
            # interrupted again after every allowed resume (MAX_RESUMES approvals).
            denied = any(k == "approval_denied" for k, _, _ in evs)
            resumed = sum(
                k == "approval_granted"
                and str(d.get("id", "")).endswith(tuple(f".resume{i}" for i in range(MAX_RESUMES)))
                for k, d, _ in evs
            )
            assert denied or resumed == MAX_RESUMES, (run_id, failed)
    assert set(statuses) <= {"succeeded", "failed"}, statuses
    assert statuses["succeeded"] >= len(runs) // 3, statuses  # most interruptions were resumed
    applied = sqlite3.connect(site.effects).execute("SELECT COUNT(*) FROM applied").fetchone()[0]
    puts = {k for k in calls if k.rsplit(":", 1)[1].startswith("p")}
    assert applied == len(puts)  # idempotent writes: applied once per key, however often called
    client.close()


def crash_run(client: DurableClient, i: int) -> str:
    """The crash test's ``i``-th run: three parallel branches and a send; every tenth send's
    recipient comes from a lookup, so its call needs a person."""
    return submit(client, parallel_plan(3, f"c{i}", ask=i % 10 == 0))


def _calls(effects: Path) -> dict[str, list[float]]:
    db = sqlite3.connect(effects)
    out: dict[str, list[float]] = {}
    for key, at in db.execute("SELECT key, at FROM calls"):
        out.setdefault(key, []).append(at)
    db.close()
    return out


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _pg_dsn() -> str | None:
    dsn = os.environ.get("PLANLOCK_PG_DSN")
    if not dsn and os.environ.get("PLANLOCK_REQUIRE_PG") == "1":
        pytest.fail("PLANLOCK_REQUIRE_PG=1 but PLANLOCK_PG_DSN is not set")
    return dsn


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_share_the_queue_and_run_everything_once(
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    backend: str,
    workers: int,
) -> None:
    if backend == "postgres":
        dsn = _pg_dsn()
        if not dsn:
            pytest.skip("PLANLOCK_PG_DSN is not set")
        site.db = system_database_url(dsn)
        schema = f"dbos_test_{uuid.uuid4().hex[:12]}"
        monkeypatch.setenv("PLANLOCK_DBOS_SCHEMA", schema)
        request.addfinalizer(lambda: _drop_schema(dsn, schema))
    monkeypatch.setenv("PLANLOCK_TEST_PAUSE", "0.02")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.extend(site.worker(f"w{n}", "--concurrency", "3") for n in range(workers))
        for n in range(workers):
            site.wait_ready(f"w{n}")
        client = site.client()
        runs = [submit(client, parallel_plan(3, f"m{i}")) for i in range(30)]
        for run_id in runs:
            assert client.result(run_id, timeout=120)["status"] == "succeeded"
    finally:
        site.stop(procs)
    journal = Journal.open(site.journal)
    assert journal.verify().ok
    claims: dict[str, list[str]] = {
        e.run_id: [] for e in journal.events() if e.kind == "run_started"
    }
    for e in (e for e in journal.events() if e.kind == "run_claimed"):
        claims[e.run_id].append(e.data["worker"])
    assert all(len(w) == 1 for w in claims.values()), claims  # each run executed exactly once
    assert len({w[0] for w in claims.values()}) >= 2  # the work was shared
    calls = count_calls(site.effects)
    assert len(calls) == 30 * 4  # 3 puts and a send per run
    assert set(calls.values()) == {1}
    client.close()
    wait_for(lambda: all(p.returncode is not None for p in procs), 5)
