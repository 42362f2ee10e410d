"""Tools, plans and forked queue workers shared by the queue's lease and crash tests.

Every effectful call appends a row to an effects database (``$PLANLOCK_TEST_EFFECTS``): the raw
log of calls, keyed by the step's idempotency key, so a test counts how many times each side
effect really happened. A tool kills its own process (SIGKILL) when the file
``$PLANLOCK_TEST_CRASH_FLAG`` exists and names it (``send:before``, ``send:after``,
``put:after``): once, the flag is removed first. And the crash suites' bookkeeping: what the
workers hold, a "person" answering resume requests, and the checks after the kills. (No tests
here.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from planlock import Journal, Policy, StepContext, ToolRegistry
from planlock.errors import UsageError
from planlock.queue import MAX_RESUMES, ApprovalQueue, Lease

registry = ToolRegistry()
PAUSE = {"seconds": 0.0}
"""Each effectful tool sleeps up to this long before and after its effect (set before forking)."""
ALLOW = Policy.model_validate({"effects": {"write": "allow", "send": "allow"}})
"""Nothing needs a person (crash tests run unattended)."""


def _effects() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["PLANLOCK_TEST_EFFECTS"], timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, tool TEXT NOT NULL, "
        "pid INTEGER NOT NULL, at REAL NOT NULL)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, value INTEGER)")
    return db


def _pause() -> None:
    if PAUSE["seconds"]:
        time.sleep(random.uniform(0, PAUSE["seconds"]))


def _crash(tool: str, when: str) -> None:
    flag = Path(os.environ.get("PLANLOCK_TEST_CRASH_FLAG", "/nonexistent"))
    try:
        armed = flag.read_text().strip() == f"{tool}:{when}"
    except OSError:
        return
    if armed:
        flag.unlink()
        os.kill(os.getpid(), signal.SIGKILL)


def _log(tool: str, ctx: StepContext) -> sqlite3.Connection:
    db = _effects()
    db.execute(
        "INSERT INTO calls VALUES (?, ?, ?, ?)",
        (ctx.idempotency_key, tool, os.getpid(), time.time()),
    )
    return db


@registry.tool(effect="read", idempotent=True)
def fetch(n: int) -> int:
    """Read a number (no effect)."""
    return n


@registry.tool(effect="write", idempotent=True, free=["value"])
def put(key: str, value: int, ctx: StepContext) -> int:
    """Store a value; idempotent: applied once per idempotency key, however often called."""
    _pause()
    _crash("put", "before")
    db = _log("put", ctx)
    db.execute(
        "INSERT INTO applied VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (ctx.idempotency_key, value),
    )
    db.close()
    _crash("put", "after")
    _pause()
    return value


@registry.tool(effect="send", free=["value"])
def send(to: str, value: int, ctx: StepContext) -> str:
    """Send a message: not idempotent, every call is an effect."""
    _pause()
    _crash("send", "before")
    _log("send", ctx).close()
    _crash("send", "after")
    _pause()
    return f"sent {value} to {to}"


@registry.tool(effect="read", idempotent=True)
def slow(seconds: float) -> float:
    """Take a while (no effect)."""
    time.sleep(seconds)
    return seconds


def plan(tag: str, width: int = 2) -> dict[str, Any]:
    """``width`` parallel branches (fetch -> put), then one send that joins them."""
    steps: list[dict[str, Any]] = []
    for i in range(width):
        steps.append({"id": f"f{i}", "tool": "fetch", "args": {"n": i + 1}})
        put_args = {"key": f"{tag}-{i}", "value": f"{{{{steps.f{i}.output}}}}"}
        steps.append({"id": f"p{i}", "tool": "put", "args": put_args})
    steps.append(
        {
            "id": "s",
            "tool": "send",
            "args": {"to": "ops@example.com", "value": "{{steps.p0.output}}"},
            "after": [f"p{i}" for i in range(width)],
        }
    )
    return {"version": 1, "goal": f"parallel {tag}", "steps": steps}


def calls(effects: Path) -> list[tuple[str, str, float]]:
    """``(idempotency key, tool, time)`` of every effectful call so far."""
    if not effects.exists():
        return []
    db = sqlite3.connect(effects, timeout=30)
    try:
        return [
            (str(k), str(t), float(a)) for k, t, a in db.execute("SELECT key, tool, at FROM calls")
        ]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def fork(body: Callable[[], None]) -> int:
    """``body`` in a forked child (exit 0 when it returns, 1 when it raises); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def fork_worker(
    journal: str, worker_id: str, lease: Lease, *, once: bool = False, poll: float = 0.02
) -> int:
    """A queue worker in a child process (forked: no interpreter start-up to pay); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            queue = ApprovalQueue(Journal.open(journal))

            async def go() -> None:
                await queue.work(registry, worker_id, poll=poll, once=once, lease=lease)

            anyio.run(go)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 60) -> int | None:
    """Wait for a child; its exit code (None if killed by a signal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise TimeoutError(f"worker {pid} did not finish")


# -- the crash suites' bookkeeping (tests/test_queue_crash.py, tests/test_serve_crash.py) -------

HELD = ("running", "waiting_approval", "waiting_resume")
"""A run some worker holds (its lease)."""
FINAL = ("succeeded", "failed")


def held_by(queue: ApprovalQueue, worker: str) -> int:
    """How many runs ``worker`` holds (``worker`` may be an SQL LIKE pattern)."""
    marks = ", ".join("?" for _ in HELD)
    sql = f"SELECT COUNT(*) FROM runs WHERE claimed_by LIKE ? AND status IN ({marks})"
    return int(queue._db.execute(sql, (worker, *HELD)).fetchone()[0])


def statuses(queue: ApprovalQueue) -> Counter[str]:
    rows = queue._db.execute("SELECT status FROM runs").fetchall()
    return Counter(str(r[0]) for r in rows)


def operator(
    queue: ApprovalQueue, effects: Path, answers: Counter[str], *, only_resumes: bool = True
) -> None:
    """Answer resume requests like a person: run the send again only if it did not happen.
    ``only_resumes``: no other request may be pending (else they are left to the caller)."""
    sent = Counter(k for k, t, _ in calls(effects) if t == "send")
    for item in queue.pending():
        if item["kind"] != "resume":
            assert not only_resumes, item
            continue
        again = sent[f"{item['run_id']}:{item['step_id']}"] == 0
        try:
            queue.decide(item["id"], approve=again, by="operator", reason="checked the effect log")
        except UsageError:  # expired or answered meanwhile (the caller may answer too)
            continue
        answers["resume:yes" if again else "resume:no"] += 1


def check_crash_outcome(
    journal_spec: str | Path,
    queue: ApprovalQueue,
    runs: list[str],
    effects: Path,
    *,
    succeeded: float = 0.5,
) -> Counter[str]:
    """After a crash suite: every run finished exactly once (one ``run_finished``, its status in
    the table), each step event once, no call after its step's result was journaled, at most
    one send per run (exactly one if it succeeded; a failed run failed only at an interrupted
    send), idempotent writes applied once per key, at least the ``succeeded`` share of the runs
    succeeded, and the journal verifies. Returns the recoveries by reason (``run_claimed``'s
    ``reason``)."""
    journal = Journal.open(journal_spec)
    assert journal.verify().ok
    by_run: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for e in journal.events():
        by_run.setdefault(e.run_id, []).append((e.kind, e.data, e.at))
    made: dict[str, list[float]] = {}
    for key, _, when in calls(effects):
        made.setdefault(key, []).append(when)
    recovered: Counter[str] = Counter()
    final: Counter[str] = Counter()
    for run_id in runs:
        evs = by_run[run_id]
        kinds = Counter(k for k, _, _ in evs)
        assert kinds["run_finished"] == 1, run_id
        (finished,) = [d for k, d, _ in evs if k == "run_finished"]
        assert queue.run_status(run_id) == finished["status"]
        final[finished["status"]] += 1
        for kind in ("step_started", "step_finished", "step_failed", "step_skipped"):
            steps = Counter(d["step"] for k, d, _ in evs if k == kind)
            assert set(steps.values()) <= {1}, (run_id, kind, steps)
        for k, d, at in evs:
            if k == "step_finished":  # finished: never called again
                late = [t for t in made.get(f"{run_id}:{d['step']}", []) if t > _ts(at)]
                assert not late, f"{run_id}:{d['step']} was called after it finished"
            if k == "run_claimed" and "reason" in d:
                recovered[d["reason"]] += 1
        sends = len(made.get(f"{run_id}:s", []))
        assert sends <= 1, f"{run_id}: sent {sends} times"
        if finished["status"] == "succeeded":
            assert sends == 1, run_id
        else:  # only an interrupted send a person declined to repeat (it was sent), or one
            # interrupted again after every allowed resume
            failed = [d for k, d, _ in evs if k == "step_failed"]
            assert [(d["step"], d["error_kind"]) for d in failed] == [("s", "interrupted")]
            declined = any(k == "approval_denied" for k, _, _ in evs)
            assert (declined and sends == 1) or kinds["approval_used"] >= MAX_RESUMES + 1
    assert final["succeeded"] >= succeeded * len(runs), final
    puts = Counter(k for k, t, _ in calls(effects) if t == "put")
    assert effects_applied(effects) == len(puts) == 2 * len(runs)  # once per key, however often
    sends = sum(len(made.get(f"{r}:s", [])) for r in runs)
    sys.stderr.write(
        f"  recoveries {dict(recovered)}; put calls {sum(puts.values())} for {len(puts)} keys "
        f"(repeated: {sum(n - 1 for n in puts.values())}); sends {sends}\n"
    )
    return recovered


def effects_applied(effects: Path) -> int:
    db = sqlite3.connect(effects)
    try:
        return int(db.execute("SELECT COUNT(*) FROM applied").fetchone()[0])
    finally:
        db.close()


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
