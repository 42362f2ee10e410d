"""Tools, plans and forked queue workers shared by the queue's lease and crash tests.

Every effectful call appends a row to an effects database (``$PLANLOCK_TEST_EFFECTS``): the raw
log of calls, keyed by the step's idempotency key, so a test counts how many times each side
effect really happened. A tool kills its own process (SIGKILL) when the file
``$PLANLOCK_TEST_CRASH_FLAG`` exists and names it (``send:before``, ``send:after``,
``put:after``): once, the flag is removed first. (No tests here.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from planlock import Journal, Policy, StepContext, ToolRegistry
from planlock.queue import ApprovalQueue, Lease

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
