"""A database that goes away: lost commits resolved by re-reading (never re-sent blindly), pooled
PostgreSQL connections that reconnect, and a bounded wait that gives up with a clear error.

The PostgreSQL restart under load (a throwaway cluster) is in ``test_pg_restart.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from planlock import Journal, Plan, ToolRegistry, demo
from planlock.db import Database, PostgresDB, SQLiteDB, reconnect_wait, transact
from planlock.errors import ConnectionLost, DatabaseUnavailable
from planlock.journal import SQLStore
from planlock.queue import ApprovalQueue


class FlakyDB(SQLiteDB):
    """An SQLite file whose next transactions lose their connection: ``before`` commit (nothing
    kept) or ``after`` it (kept, but the caller cannot know): like a PostgreSQL restart."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.fail: list[str | None] = []
        self.commits = 0

    @contextmanager
    def tx(self) -> Iterator[Database]:
        mode = self.fail.pop(0) if self.fail else None
        with super().tx() as db:
            yield db
            if mode == "before":
                raise ConnectionLost("flaky", "server closed the connection", commit_unknown=False)
        self.commits += 1
        if mode == "after":
            raise ConnectionLost("flaky", "server closed the connection", commit_unknown=True)


def test_an_append_whose_commit_is_unknown_is_resolved_by_re_reading(tmp_path: Path) -> None:
    db = FlakyDB(tmp_path / "j.db")
    journal = Journal(SQLStore(db, db.path))
    journal.record("r", "run_started", {})
    db.fail = ["after"]  # committed, then the connection broke: re-sending would duplicate it
    e2 = journal.record("r", "step_started", {"n": 2})
    db.fail = ["before"]  # lost before COMMIT: nothing kept, so it is sent again
    e3 = journal.record("r", "run_finished", {"n": 3})
    assert [e.kind for e in journal.events()] == ["run_started", "step_started", "run_finished"]
    assert [e2.seq, e3.seq] == [2, 3]
    assert journal.events()[1].hash == e2.hash  # the event returned is the one stored
    assert journal.verify().ok
    assert db.commits == 4  # one, two (kept), three's lost attempt rolled back, three


def test_transact_without_a_check_refuses_to_guess(tmp_path: Path) -> None:
    db = FlakyDB(tmp_path / "t.db")
    db.execute("CREATE TABLE t (x INTEGER)")
    db.fail = ["after"]
    with pytest.raises(ConnectionLost) as caught:
        transact(db, lambda tx: tx.execute("INSERT INTO t VALUES (1)").rowcount)
    assert caught.value.commit_unknown
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # not re-sent
    db.fail = ["before", "before"]
    transact(db, lambda tx: tx.execute("INSERT INTO t VALUES (2)").rowcount)
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 2  # retried once it could


def _flaky_queue(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ApprovalQueue, FlakyDB]:
    made: list[FlakyDB] = []

    def database_of(_store: Any) -> FlakyDB:
        made.append(FlakyDB(path))
        return made[-1]

    monkeypatch.setattr("planlock.queue._store.database_of", database_of)
    return ApprovalQueue(Journal.open(path)), made[0]


def test_a_claim_whose_commit_is_unknown_is_the_workers_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: ToolRegistry
) -> None:
    queue, db = _flaky_queue(tmp_path / "q.db", monkeypatch)

    async def submit() -> str:
        sub = await queue.submit(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, by="sam")
        assert sub.approval_id is not None
        queue.decide(sub.approval_id, approve=True, by="alice")
        return sub.run_id

    run_id = anyio.run(submit)
    db.fail = ["after"]  # the claim committed; the worker did not hear back
    assert queue.claim("w1") == run_id  # resolved by reading the row: it is ours
    assert queue.claim("w2") is None  # and nobody else's
    assert queue.run_status(run_id) == "running"
    claims = [e for e in queue.journal.events(run_id) if e.kind == "run_claimed"]
    assert [e.data["worker"] for e in claims] == ["w1"]


def test_a_decision_lost_before_commit_is_applied_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: ToolRegistry
) -> None:
    queue, db = _flaky_queue(tmp_path / "q.db", monkeypatch)

    async def submit() -> str:
        sub = await queue.submit(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, by="sam")
        assert sub.approval_id is not None
        return sub.approval_id

    approval_id = anyio.run(submit)
    # expiring runs first (untouched); the decision is cut before COMMIT, then during it
    db.fail = [None, "before", "after"]
    queue.decide(approval_id, approve=True, by="alice")
    assert db.fail == []
    assert queue.get(approval_id)["status"] == "approved"
    grants = [e for e in queue.journal.events() if e.kind == "approval_granted"]
    assert len(grants) == 1


def test_a_worker_that_claims_before_the_grant_is_journaled_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    """The answer is committed to the queue, then journaled: a worker (another thread or
    process) may claim the run in between. It waits for the journal instead of refusing."""
    from planlock.queue import _decide

    queue = ApprovalQueue(Journal.open(tmp_path / "q.db"))
    held: list[tuple[Any, ...]] = []
    record_answer = _decide.record_answer  # type: ignore[attr-defined]
    monkeypatch.setattr(_decide, "record_answer", lambda *a, **k: held.append((a, k)))

    async def go() -> Any:
        sub = await queue.submit(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, by="sam")
        assert sub.approval_id is not None
        queue.decide(sub.approval_id, approve=True, by="alice")  # committed, not yet journaled
        async with anyio.create_task_group() as tg:
            result: list[Any] = []

            async def work() -> None:
                result.append(await queue.work_one(registry, "w1", poll=0.01))

            tg.start_soon(work)
            await anyio.sleep(0.3)
            (args, kwargs) = held[0]
            record_answer(*args, **kwargs)  # the decider journals it now
        return result[0]

    result = anyio.run(go)
    assert getattr(result, "status", result) == "succeeded"
    assert len(desk.outbox) == 1


# -- PostgreSQL: connections killed behind planlock's back (the shared server is not restarted) --


def _named(dsn: str) -> tuple[str, str]:
    name = f"planlock_reconnect_{uuid.uuid4().hex[:10]}"
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}", name


def _kill(dsn: str, name: str) -> int:
    """Terminate every backend of ``name`` (what a restart does: AdminShutdown, then EOF)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    time.sleep(0.1)
    return len(rows)


@pytest.mark.postgres
@pytest.mark.integration
def test_killed_connections_are_replaced_and_the_chain_holds(pg_schema: str) -> None:
    dsn, name = _named(pg_schema)
    journal = Journal.open(dsn)
    store = journal.store
    assert isinstance(store, SQLStore)
    assert isinstance(store._db, PostgresDB)
    pool = store._db.pool
    journal.record("r", "run_started", {})
    opened = pool.opened
    assert _kill(pg_schema, name) >= 1
    journal.record("r", "run_finished", {})  # no error: the dead connection was dropped, not used
    assert pool.opened == opened + 1
    assert [e.kind for e in journal.events()] == ["run_started", "run_finished"]
    assert journal.verify().ok


@pytest.mark.postgres
@pytest.mark.integration
def test_a_transaction_cut_before_commit_keeps_nothing(pg_schema: str) -> None:
    dsn, name = _named(pg_schema)
    db = PostgresDB(dsn)
    db.execute("CREATE TABLE t (x INTEGER)")

    def cut() -> None:
        with db.tx() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
            _kill(pg_schema, name)
            tx.execute("INSERT INTO t VALUES (2)")

    with pytest.raises(ConnectionLost) as caught:
        cut()
    assert not caught.value.commit_unknown
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()


@pytest.mark.postgres
@pytest.mark.integration
def test_an_unreachable_database_gives_up_after_the_wait_then_recovers(pg_schema: str) -> None:
    dsn, name = _named(pg_schema)
    db = PostgresDB(dsn)
    db.pool.dsn = "postgresql://planlock:planlock@127.0.0.1:1/planlock"  # the server is gone
    _kill(pg_schema, name)
    start = time.monotonic()
    with reconnect_wait(1.0), pytest.raises(DatabaseUnavailable) as caught:
        db.execute("SELECT 1")
    took = time.monotonic() - start
    assert 0.8 <= took < 4, took  # retried with backoff for about the wait, then gave up
    assert "gave up after" in str(caught.value)
    assert "planlock:planlock" not in str(caught.value)  # the password is not shown
    db.pool.dsn = dsn  # the server is back: the same object works, no restart
    assert db.execute("SELECT 1").fetchone() == (1,)
    db.close()
