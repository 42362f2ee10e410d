"""The journal's faster paths keep the chain byte for byte: the hash from the data's JSON written
once (``chain_hash``), several events in one transaction (``append_many``), and group commit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planlock import Journal, MemoryStore, SQLiteStore
from planlock.core import canonical_json, sha256_hex
from planlock.errors import UsageError
from planlock.journal._events import EVENT_KINDS, chain_hash, chain_next

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


def reference_hash(seq: int, run_id: str, kind: str, at: str, data: Any, prev: str) -> str:
    """The chain's definition (R10), written out as the original code did it."""
    body = {"seq": seq, "run_id": run_id, "kind": kind, "at": at, "data": data, "prev_hash": prev}
    return sha256_hex(canonical_json(body))


@given(
    data=st.dictionaries(st.text(), json_values, max_size=4),
    run_id=st.text(),
    at=st.text(),
    seq=st.integers(min_value=1, max_value=2**40),
    prev=st.just("ab" * 32) | st.text(),  # a stored head may hold anything
    kind=st.sampled_from(EVENT_KINDS),
)
def test_chain_hash_is_the_hash_of_the_whole_body(
    data: dict[str, Any], run_id: str, at: str, seq: int, prev: str, kind: str
) -> None:
    expected = reference_hash(seq, run_id, kind, at, data, prev)
    assert chain_hash(seq, run_id, kind, at, canonical_json(data), prev) == expected
    for _ in range(2):  # the second time, the run id's JSON is the one written the first time
        event = chain_next((seq - 1, prev), run_id, kind, data, at=at)
        assert event.hash == expected
    stamped = chain_next((seq - 1, prev), run_id, kind, data)  # ``at`` is now(), quoted as is
    assert stamped.hash == reference_hash(seq, run_id, kind, stamped.at, data, prev)


def test_an_unknown_kind_is_refused_before_anything_is_hashed() -> None:
    with pytest.raises(UsageError, match="unknown event kind"):
        chain_next(None, "r", "step_exploded", {})
    with pytest.raises(UsageError, match="unknown event kind"):
        chain_next(None, "r", 3, {})  # type: ignore[arg-type]


def test_an_event_keeps_its_own_copy_of_the_data() -> None:
    data = {"step": "a"}
    store = MemoryStore()
    store.append("r", "step_started", data)
    data["step"] = "b"  # the caller's dict changes afterwards: the journal does not
    assert Journal(store).verify().ok


Item = tuple[str, str, dict[str, Any], str, str | None]


def batch() -> list[Item]:
    at = "2026-12-05T03:00:00.00000{}+00:00"
    return [
        ("r1", "run_started", {"goal": "g", "inputs": {}}, at.format(1), None),
        ("r1", "step_started", {"step": "a", "args": {"x": "é"}}, at.format(2), None),
        ("r1", "step_finished", {"step": "a", "output": [1, 2.5]}, at.format(3), None),
    ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_append_many_is_the_chain_of_single_appends(kind: str, tmp_path: Path) -> None:
    def make(name: str) -> Any:
        return MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / f"{name}.db")

    one, many = make("one"), make("many")
    last = None
    singles = []
    for run_id, k, data, at, _ in batch():
        singles.append(chain_next(last, run_id, k, data, at=at))
        last = (singles[-1].seq, singles[-1].hash)
        one.append_many([(run_id, k, data, at, None)])
    batched = many.append_many(batch())
    assert [e.hash for e in batched] == [e.hash for e in singles]
    assert [e.hash for e in many.events()] == [e.hash for e in one.events()]
    assert Journal(many).verify().ok


# --------------------------------------------------------------------------------------------
# Group commit


class CountingStore(SQLiteStore):
    """An SQLite journal that counts its transactions and can say what was durable when."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[list[str]] = []

    def append_many(self, events: list[Any]) -> list[Any]:
        self.batches.append([kind for _, kind, *_ in events])
        return super().append_many(events)

    def durable(self, run_id: str | None = None) -> list[str]:
        return [e.kind for e in self.events(run_id)]


@pytest.mark.anyio
async def test_events_of_one_loop_turn_share_a_transaction(tmp_path: Path) -> None:
    import anyio

    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)

    async def start(i: int) -> None:
        await journal.commit("r", "step_started", {"step": str(i)})

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(start, i)
    assert len(store.batches) == 1
    assert len(store.durable()) == 20
    assert journal.verify().ok


@pytest.mark.anyio
async def test_a_waited_event_is_durable_with_everything_recorded_before_it(
    tmp_path: Path,
) -> None:
    """The guarantee: when ``commit`` returns, its event and every event deferred before it
    are in the database, in order; a deferred event alone is not waited for."""
    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    journal.defer("r", "step_finished", {"step": "a"})
    assert store.durable() == []  # not yet: nobody waits for it
    await journal.commit("r", "step_started", {"step": "b"})
    assert store.durable() == ["step_finished", "step_started"]
    assert store.batches == [["step_finished", "step_started"]]


@pytest.mark.anyio
async def test_a_deferred_event_is_committed_within_the_window(tmp_path: Path) -> None:
    import anyio

    from planlock.journal._group import WINDOW

    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    seen: list[str] = []
    journal.listeners.append(lambda e: seen.append(e.kind))
    journal.defer("r", "step_finished", {"step": "a"})
    assert seen == []  # listeners hear of an event once it is durable
    await anyio.sleep(WINDOW * 5)
    assert store.durable() == ["step_finished"]
    assert seen == ["step_finished"]


@pytest.mark.anyio
async def test_a_synchronous_record_keeps_the_order(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    journal.defer("r", "step_finished", {"step": "a"})
    journal.record("r", "endorsement_used", {"step": "b"})  # the plan-approval path
    assert store.durable() == ["step_finished", "endorsement_used"]


@pytest.mark.anyio
async def test_a_bad_event_fails_its_caller_not_the_batch(tmp_path: Path) -> None:
    from planlock import UsageError

    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    journal.defer("r", "step_finished", {"step": "a"})
    with pytest.raises(UsageError):
        journal.defer("r", "not_a_kind", {})
    with pytest.raises(TypeError):
        await journal.commit("r", "step_started", {"x": object()})
    await journal.commit("r", "step_started", {"step": "b"})
    assert store.durable() == ["step_finished", "step_started"]


@pytest.mark.anyio
async def test_a_failed_batch_fails_its_waiters_and_is_reported(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    store.close()  # every append now fails
    with pytest.raises(Exception, match="closed"):
        await journal.commit("r", "step_started", {"step": "a"})
    journal.defer("r", "step_finished", {"step": "a"})
    with pytest.raises(Exception, match="closed"):
        journal.flush()


def test_without_an_event_loop_every_event_is_appended_at_once(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    journal.defer("r", "step_finished", {"step": "a"})
    assert store.durable() == ["step_finished"]


@pytest.mark.anyio
async def test_a_run_waits_for_step_started_before_the_tool_runs(tmp_path: Path) -> None:
    """Attack on the guarantee: whatever a side-effecting tool sees, its step_started (and the
    outcome of the step it reads) is already in the database."""
    from planlock import Plan, ToolRegistry, approve_all, run

    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    reg = ToolRegistry()
    durable_at_call: list[list[str]] = []

    @reg.tool(effect="read", trusted_output=True)  # no call-time request for send
    async def probe(x: int = 0) -> int:
        return x + 1

    @reg.tool(effect="send")
    async def send(x: int = 0) -> int:
        durable_at_call.append(store.durable())
        return x + 1

    steps: list[dict[str, Any]] = [{"id": "a", "tool": "probe"}]
    steps.append({"id": "b", "tool": "send", "args": {"x": "{{steps.a.output}}"}})
    result = await run(
        Plan.parse({"goal": "g", "steps": steps}), reg, journal=journal, approver=approve_all()
    )
    assert result.ok
    (seen,) = durable_at_call
    assert seen[-3:] == ["step_started", "step_finished", "step_started"]
    kinds = store.durable()
    assert kinds[-1] == "run_finished"
    assert kinds.count("step_finished") == 2
    assert len(store.batches) < len(kinds)  # some events shared a transaction
    assert journal.verify().ok


@pytest.mark.anyio
async def test_a_read_only_step_s_start_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read repeats harmlessly if the process dies before its start is durable, so a chain of
    reads is not a transaction per step: with no timer to flush them, its events reach the
    database with the event the run waits for at the end, in order, and the chain verifies."""
    from planlock import Plan, ToolRegistry, approve_all, run

    monkeypatch.setattr("planlock.journal._group.WINDOW", 60.0)
    store = CountingStore(tmp_path / "j.db")
    journal = Journal(store)
    reg = ToolRegistry()

    @reg.tool(effect="read")
    async def probe(x: int = 0) -> int:
        return x + 1

    steps: list[dict[str, Any]] = [{"id": "s0", "tool": "probe"}]
    steps += [
        {"id": f"s{i}", "tool": "probe", "args": {"x": f"{{{{steps.s{i - 1}.output}}}}"}}
        for i in range(1, 10)
    ]
    result = await run(
        Plan.parse({"goal": "g", "steps": steps}), reg, journal=journal, approver=approve_all()
    )
    assert result.outputs["s9"] == 10
    last = store.batches[-1]
    assert last == ["step_started", "step_finished"] * 10 + ["run_finished"]
    assert not any("step_started" in b for b in store.batches[:-1])
    assert journal.verify().ok


def test_an_event_built_directly_is_a_normal_event() -> None:
    from pydantic import ValidationError

    from planlock import Event
    from planlock.journal import _events

    assert _events._event is _events._constructed  # this Pydantic's layout is the one checked
    event = chain_next(None, "r", "step_started", {"step": "a"}, at="t")
    same = Event.model_construct(**event.model_dump())
    assert event == same
    assert event.model_dump() == same.model_dump()
    assert event.model_dump_json() == same.model_dump_json()
    assert Event.model_validate(event.model_dump()) == event
    with pytest.raises(ValidationError):
        event.seq = 2  # type: ignore[misc]  # frozen, as before


@pytest.mark.anyio
async def test_group_commit_on_postgresql(pg_schema: str) -> None:
    """The same batch, one transaction, the same chain, on PostgreSQL (a multi-row INSERT of
    more rows than one statement takes)."""
    import anyio

    from planlock import PostgresStore

    store = PostgresStore(pg_schema)
    journal = Journal(store)
    try:

        async def start(i: int) -> None:
            await journal.commit("r", "step_started", {"step": str(i)})

        async with anyio.create_task_group() as tg:
            for i in range(150):
                tg.start_soon(start, i)
        journal.defer("r", "step_finished", {"step": "0"})
        await journal.commit("r", "run_finished", {"status": "succeeded"})
        kinds = [e.kind for e in journal.events()]
        assert kinds.count("step_started") == 150
        assert kinds[-2:] == ["step_finished", "run_finished"]
        assert journal.verify().ok
    finally:
        journal.close()


@given(
    value=st.dictionaries(st.text(), json_values, max_size=5) | st.lists(json_values, max_size=5)
)
def test_canonical_json_is_json_dumps_with_the_canonical_options(value: Any) -> None:
    """The hash of every event and plan depends on these bytes (R7, R10)."""
    import json

    expected = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert canonical_json(value) == expected


def test_canonical_json_still_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_threads_recording_at_once_share_transactions_and_each_gets_its_own_event(
    tmp_path: Path,
) -> None:
    """``Journal.record`` from many threads (a server's request threads): whoever holds the
    writer lock commits every queued event, so there are fewer transactions than events; each
    caller gets back exactly its own event, durable; the chain verifies."""
    import threading

    journal = Journal.open(tmp_path / "j.db")
    batches: list[int] = []
    append_many = journal.store.append_many  # type: ignore[attr-defined]

    def counted(items: list[Item]) -> Any:
        if not batches:  # hold the first commit until another thread has queued behind it, so
            # sharing does not hang on the scheduler (it once ran all 200 alone on a busy CI)
            deadline = time.monotonic() + 10
            while not journal._group._queued and time.monotonic() < deadline:  # pyright: ignore[reportPrivateUsage]
                time.sleep(0.001)
        batches.append(len(items))
        return append_many(items)

    journal.store.append_many = counted  # type: ignore[attr-defined]
    start = threading.Barrier(8)
    got: dict[tuple[int, int], Any] = {}

    def worker(t: int) -> None:
        start.wait()
        for i in range(25):
            got[(t, i)] = journal.record(f"r{t}", "step_started", {"step": f"{t}.{i}"})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(batches) == 200
    assert len(batches) < 200  # some transactions carried several threads' events
    for (t, i), event in got.items():
        assert (event.run_id, event.data) == (f"r{t}", {"step": f"{t}.{i}"})
    stored = {e.seq: e for e in Journal.open(tmp_path / "j.db").events()}
    assert all(stored[e.seq].hash == e.hash for e in got.values())
    assert len(stored) == 200
    assert journal.verify().ok


def test_a_failed_shared_commit_fails_every_thread_in_it(tmp_path: Path) -> None:
    import threading

    journal = Journal.open(tmp_path / "j.db")
    append_many = journal.store.append_many  # type: ignore[attr-defined]
    gate, inside = threading.Event(), threading.Event()

    def failing(items: list[Item]) -> Any:
        inside.set()
        gate.wait(5)  # hold the writer lock while the other threads queue their events
        if len(items) > 1:
            raise OSError("disk full")
        return append_many(items)

    journal.store.append_many = failing  # type: ignore[attr-defined]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            journal.record("r", "step_started", {"step": str(t)})
        except OSError as exc:
            errors.append(exc)

    first = threading.Thread(target=worker, args=(0,))
    first.start()
    assert inside.wait(5)  # the first holds the writer lock, its own event alone in its batch
    others = [threading.Thread(target=worker, args=(t,)) for t in range(1, 4)]
    for th in others:
        th.start()
    while len(journal._group._queued) < 3:  # the three others are queued behind the first
        threading.Event().wait(0.01)
    gate.set()
    for th in [first, *others]:
        th.join()
    assert len(errors) == 3  # the shared commit failed for all three; the first one's went in
    assert [e.data for e in journal.events()] == [{"step": "0"}]
    assert journal.verify().ok
