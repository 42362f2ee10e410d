"""Tools, plans and a worker entry point shared by the durable-engine tests and benchmark.

Every tool call appends a row to an effects database (``$PLANLOCK_TEST_EFFECTS``): the raw log
of calls, so a test can count how many times each side effect really happened, keyed by the
step's idempotency key. (No tests here.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from planlock import Policy, StepContext, ToolRegistry

registry = ToolRegistry()
PAUSE = float(os.environ.get("PLANLOCK_TEST_PAUSE", "0.01"))


def _effects() -> sqlite3.Connection:
    path = os.environ.get("PLANLOCK_TEST_EFFECTS")
    if not path:
        raise RuntimeError("PLANLOCK_TEST_EFFECTS is not set")
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, tool TEXT NOT NULL, "
        "pid INTEGER NOT NULL, at REAL NOT NULL)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, value INTEGER)")
    return db


def _pause() -> None:
    if PAUSE:
        time.sleep(random.uniform(0, PAUSE))


@registry.tool(effect="read", idempotent=True)
def fetch(n: int) -> int:
    """Read a number (no effect)."""
    _pause()
    return n


@registry.tool(effect="write", idempotent=True, free=["value"])
def put(key: str, value: int, ctx: StepContext) -> int:
    """Store a value; idempotent: applied once per idempotency key, however often called."""
    _pause()
    db = _effects()
    db.execute(
        "INSERT INTO calls VALUES (?, 'put', ?, ?)", (ctx.idempotency_key, os.getpid(), time.time())
    )
    db.execute(
        "INSERT INTO applied VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (ctx.idempotency_key, value),
    )
    db.close()
    _pause()
    return value


@registry.tool(effect="send", free=["value"])
def send(to: str, value: int, ctx: StepContext) -> str:
    """Send a message: not idempotent, every call is an effect."""
    _pause()
    db = _effects()
    db.execute(
        "INSERT INTO calls VALUES (?, 'send', ?, ?)",
        (ctx.idempotency_key, os.getpid(), time.time()),
    )
    db.close()
    _pause()
    return f"sent {value} to {to}"


@registry.tool(effect="read", idempotent=True)
def fetch_from(source: str) -> int:
    """Read a number from a source; the ``primary`` source is down (fails every time)."""
    if source == "primary":
        raise ConnectionError("primary is down")
    return 7


@registry.tool(effect="read", idempotent=True)
def lookup(name: str) -> str:
    """Look up an address (untrusted output)."""
    _pause()
    return f"{name}@example.com"


@registry.tool(effect="send", free=["value"])
def boom(to: str, value: int, ctx: StepContext) -> str:
    """Like ``send``, but while ``$PLANLOCK_TEST_BOOM_FLAG`` exists it kills its own process
    (once: it removes the flag) ``before`` or ``after`` the effect (``$PLANLOCK_TEST_BOOM``)."""
    flag = Path(os.environ.get("PLANLOCK_TEST_BOOM_FLAG", "/nonexistent"))
    armed = flag.exists()
    if armed:
        flag.unlink()
    if armed and os.environ.get("PLANLOCK_TEST_BOOM") == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    db = _effects()
    db.execute(
        "INSERT INTO calls VALUES (?, 'boom', ?, ?)",
        (ctx.idempotency_key, os.getpid(), time.time()),
    )
    db.close()
    if armed:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"sent {value} to {to}"


ALLOW = Policy.model_validate({"effects": {"write": "allow", "send": "allow"}})
"""Nothing needs a person (crash and scale tests run unattended)."""


def parallel_plan(
    width: int = 3, tag: str = "r", *, sink: str = "send", ask: bool = False
) -> dict[str, Any]:
    """``width`` parallel branches (fetch -> put), then one ``sink`` call that joins them. With
    ``ask`` the sink's recipient comes from a ``lookup`` (untrusted): the call needs a person."""
    steps: list[dict[str, Any]] = []
    for i in range(width):
        steps.append({"id": f"f{i}", "tool": "fetch", "args": {"n": i + 1}})
        put_args = {"key": f"{tag}-{i}", "value": f"{{{{steps.f{i}.output}}}}"}
        steps.append({"id": f"p{i}", "tool": "put", "args": put_args})
    to = "ops@example.com"
    if ask:
        steps.append({"id": "l", "tool": "lookup", "args": {"name": "ops"}})
        to = "{{steps.l.output}}"
    steps.append(
        {
            "id": "s",
            "tool": sink,
            "args": {"to": to, "value": "{{steps.p0.output}}"},
            "after": [f"p{i}" for i in range(width)],
        }
    )
    return {"version": 1, "goal": f"parallel {tag}", "steps": steps}


def count_calls(path: Path) -> dict[tuple[str, str], int]:
    """``(idempotency key, tool) -> number of calls`` from an effects database."""
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT key, tool, COUNT(*) FROM calls GROUP BY key, tool").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    return {(k, t): n for k, t, n in rows}


def crash_loop(journal: str, db: str, kills: int, low: float, high: float) -> dict[str, int]:
    """Fork a worker (executor ``w1``), SIGKILL it after a random delay, again and again; then
    let one last worker finish everything. Forking after the imports makes a restart cheap, so
    hundreds of kills fit in a test. Goes on until ``kills`` kills have interrupted at least one
    run (a kill of a worker with nothing in flight does not count), or until nothing is left to
    run, or after ``4 * kills`` kills in all; then creates ``kills_done(journal)`` and waits for
    ``backlog_closed(journal)`` before the last worker."""
    import json
    import signal

    import anyio

    from planlock import Journal
    from planlock.durable._client import DurableWorker
    from planlock.durable._workflow import WorkerContext

    def child(final: bool) -> None:
        worker = DurableWorker(
            WorkerContext(registry, Journal.open(journal)),
            db_url=db,
            executor_id="w1",
            worker_concurrency=8,
        )
        worker.start()
        worker.serve(idle_exit=0.5 if final else None, poll=0.05)
        worker.close()

    # anyio imports its asyncio backend at its first call, in each forked worker again (7%
    # of the workers' CPU in this loop, seen with py-spy): made here once, before the forks.
    anyio.run(anyio.sleep, 0)
    stats = {"kills": 0, "kills_in_flight": 0, "runs_interrupted": 0}
    while stats["kills_in_flight"] < kills and stats["kills"] < 4 * kills:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child is killed
            try:
                child(final=False)
            finally:
                os._exit(0)
        time.sleep(random.uniform(low, high))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        stats["kills"] += 1
        in_flight = _in_flight(journal)
        stats["runs_interrupted"] += in_flight
        stats["kills_in_flight"] += in_flight > 0
        if not in_flight and _all_finished(journal):
            break
    kills_done(journal).touch()
    deadline = time.monotonic() + 60  # for the operator to stop submitting (it never waits long)
    while not backlog_closed(journal).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            child(final=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    sys.stdout.write(json.dumps(stats) + "\n")
    return stats


def kills_done(journal: str | Path) -> Path:
    """The file ``crash_loop`` creates when it has killed enough; it then waits for
    ``backlog_closed`` before it starts its last worker."""
    return Path(f"{journal}.kills-done")


def backlog_closed(journal: str | Path) -> Path:
    """The file the crash test's operator creates once it submits no more runs: the last worker
    then finds every run there will be."""
    return Path(f"{journal}.backlog-closed")


def unfinished(journal: str) -> int:
    """Queued runs that have not finished (read with a connection of its own)."""
    db = sqlite3.connect(journal, timeout=30)
    try:
        (left,) = db.execute(
            "SELECT COUNT(DISTINCT run_id) FROM events WHERE kind = 'run_queued' AND run_id NOT IN "
            "(SELECT run_id FROM events WHERE kind = 'run_finished')"
        ).fetchone()
    finally:
        db.close()
    return int(left)


def _all_finished(journal: str) -> bool:
    """Every queued run has finished (nothing left for a worker to do)."""
    return unfinished(journal) == 0


def _in_flight(journal: str) -> int:
    """Runs claimed by a worker and not finished (read with a connection of its own)."""
    db = sqlite3.connect(journal, timeout=30)
    try:
        rows = db.execute(
            "SELECT run_id FROM events WHERE kind = 'run_claimed' AND run_id NOT IN "
            "(SELECT run_id FROM events WHERE kind = 'run_finished')"
        ).fetchall()
    finally:
        db.close()
    return len({r[0] for r in rows})


def serve_worker(journal: str, db: str, wid: str) -> None:
    """A durable worker with what the CLI worker cannot be given: a scripted replanner (its
    reply for each purpose, ``replan`` or ``checkpoint``, a JSON object in the file
    ``$PLANLOCK_TEST_REPLIES``: a restarted worker answers the same) and a webhook
    (``$PLANLOCK_TEST_NOTIFY``). Stops on SIGTERM."""
    import json
    import threading

    from planlock import Journal
    from planlock.durable._client import DurableWorker
    from planlock.durable._workflow import WorkerContext
    from planlock.planning import Replanner
    from planlock.queue import WebhookNotifier
    from planlock.testing import ScriptedLLM

    j = Journal.open(journal)
    replies = os.environ.get("PLANLOCK_TEST_REPLIES")
    by_purpose = json.loads(Path(replies).read_text()) if replies else None
    llm = ScriptedLLM(lambda request: by_purpose[request.purpose]) if by_purpose else None
    url = os.environ.get("PLANLOCK_TEST_NOTIFY")
    context = WorkerContext(
        registry,
        j,
        replanner=Replanner(llm, registry, journal=j) if llm else None,
        notifier=WebhookNotifier(url) if url else None,
    )
    worker = DurableWorker(context, db_url=db, executor_id=wid)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    sys.stderr.write(f"worker {wid}: ready\n")
    sys.stderr.flush()
    try:
        worker.serve(stop=stop)
    finally:
        worker.close()


if __name__ == "__main__":  # pragma: no cover - tests run this as a subprocess
    if sys.argv[1] == "worker":
        serve_worker(*sys.argv[2:5])
    else:
        _, journal_path, db_url, n, lo, hi = sys.argv
        crash_loop(journal_path, db_url, int(n), float(lo), float(hi))
