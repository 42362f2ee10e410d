from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from planlock import EVENT_KINDS, Journal, JournalCorrupt, MemoryStore, SQLiteStore, UsageError
from planlock.journal import GENESIS


def fill(journal: Journal, n: int = 5) -> None:
    for i in range(n):
        journal.record(f"run{i % 2}", "step_started", {"step": str(i), "args": {"x": i}})


def test_events_are_chained_and_numbered(journal_spec: str | Path) -> None:
    for journal in (Journal(MemoryStore()), Journal.open(journal_spec)):
        fill(journal)
        events = journal.events()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert [e.seq for e in journal.events("run1")] == [2, 4]
        assert [e.seq for e in journal.events(after=3)] == [4, 5]
        report = journal.verify()
        assert (report.ok, report.count) == (True, 5)


def test_journal_persists_across_opens(journal_spec: str | Path) -> None:
    path = journal_spec
    fill(Journal.open(path), 3)
    again = Journal.open(path)
    fill(again, 2)
    assert [e.seq for e in again.events()] == [1, 2, 3, 4, 5]
    assert again.verify().ok


def test_unknown_event_kinds_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown event kind"):
        Journal().record("r", "made_up", {})
    assert "step_started" in EVENT_KINDS


def test_the_store_refuses_updates_and_deletes(
    journal_spec: str | Path, raw_sql: Callable[..., None]
) -> None:
    fill(Journal.open(journal_spec))
    with pytest.raises(Exception, match="append-only"):
        raw_sql("UPDATE events SET data = '{}' WHERE seq = 2")
    with pytest.raises(Exception, match="append-only"):
        raw_sql("DELETE FROM events WHERE seq = 2")
    assert Journal.open(journal_spec).verify().count == 5


@pytest.mark.parametrize(
    ("sql", "first_bad", "reason"),
    [
        ("""UPDATE events SET data = '{"step":"3","args":{"x":99}}' WHERE seq = 3""", 3, "content"),
        ("UPDATE events SET kind = 'step_finished' WHERE seq = 2", 2, "content"),
        ("UPDATE events SET data = 'not json' WHERE seq = 4", 4, "content"),
        ("DELETE FROM events WHERE seq = 2", 3, "expected event 2"),
        ("UPDATE events SET prev_hash = 'x' WHERE seq = 5", 5, "prev_hash"),
    ],
)
def test_verify_names_the_first_tampered_event(
    journal_spec: str | Path, raw_sql: Callable[..., None], sql: str, first_bad: int, reason: str
) -> None:
    path = journal_spec
    fill(Journal.open(path))
    raw_sql(sql, tamper=True)
    report = Journal.open(path).verify()
    assert report.ok is False
    assert report.first_bad == first_bad
    assert reason in report.reason
    with pytest.raises(JournalCorrupt) as exc:
        report.raise_if_bad()
    assert exc.value.seq == first_bad


def test_rehashing_one_event_still_breaks_the_chain_at_the_next(
    journal_spec: str | Path, raw_sql: Callable[..., None]
) -> None:
    """An attacker who recomputes the edited event's own hash is caught by its successor."""
    from planlock.journal._events import _content_hash

    path = journal_spec
    fill(Journal.open(path))
    e = Journal.open(path).events()[1]
    data = '{"args":{"x":1000},"step":"1"}'
    new_hash = _content_hash(
        e.seq, e.run_id, e.kind, e.at, {"args": {"x": 1000}, "step": "1"}, e.prev_hash
    )
    raw_sql("UPDATE events SET data = ?, hash = ? WHERE seq = 2", (data, new_hash), tamper=True)
    report = Journal.open(path).verify()
    assert (report.ok, report.first_bad) == (False, 3)


def test_a_corrupt_database_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UsageError, match="cannot open journal"):
        SQLiteStore(path)


def _append_many(path: str | Path, who: str, n: int) -> None:
    journal = Journal.open(path)
    for i in range(n):
        journal.record(who, "step_started", {"i": i})


@pytest.mark.slow  # two processes, 400 appends: seconds on SQLite
def test_two_processes_appending_keep_one_unbroken_chain(journal_spec: str | Path) -> None:
    path = journal_spec
    Journal.open(path)  # create and migrate once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, f"p{k}", 60)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    journal = Journal.open(path)
    events = journal.events()
    assert len(events) == 120
    assert {e.run_id for e in events} == {"p0", "p1"}
    assert journal.verify().ok


def test_many_openers_of_one_new_sqlite_journal_all_succeed(tmp_path: Path) -> None:
    # SQLite does not wait on its busy timeout to switch a new file to WAL: before the bounded
    # retry, two workers started together failed with "database is locked" (CI, 2026-12-04).
    failures: list[str] = []
    for round_ in range(20):
        path = tmp_path / f"j{round_}.db"
        barrier = threading.Barrier(6)

        def open_it(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                Journal.open(path).record("r", "run_started", {"goal": "g"})
            except UsageError as exc:
                failures.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Journal.open(path).verify().ok
    assert failures == []


@pytest.mark.parametrize(
    "ns", [0, 1_764_939_599_999_999_000, 1_764_939_600_000_000_999, 4_102_444_800_123_456_789]
)
def test_an_events_time_is_written_as_datetime_writes_it(
    ns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``now`` formats the second once and the microseconds each time: the same text as
    ``datetime.isoformat``, across a second's (and a day's, and a year's) turn."""
    from datetime import UTC, datetime

    from planlock.journal import _events

    for t in (ns, ns + 1_000, ns + 1_000_000_000):
        monkeypatch.setattr("planlock.journal._events.time.time_ns", lambda t=t: t)
        micros = t // 1000
        expected = (
            datetime.fromtimestamp(micros // 1_000_000, UTC)
            .replace(microsecond=micros % 1_000_000)
            .isoformat(timespec="microseconds")
        )
        assert _events.now() == expected
