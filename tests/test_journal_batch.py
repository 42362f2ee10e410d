"""The journal's faster paths keep the chain byte for byte: the hash from the data's JSON written
once (``chain_hash``), several events in one transaction (``append_many``), and group commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planlock import Journal, MemoryStore, SQLiteStore
from planlock.core import canonical_json, sha256_hex
from planlock.journal._events import chain_hash, chain_next

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
)
def test_chain_hash_is_the_hash_of_the_whole_body(
    data: dict[str, Any], run_id: str, at: str, seq: int
) -> None:
    prev = "ab" * 32
    expected = reference_hash(seq, run_id, "step_started", at, data, prev)
    assert chain_hash(seq, run_id, "step_started", at, canonical_json(data), prev) == expected
    event = chain_next((seq - 1, prev), run_id, "step_started", data, at=at)
    assert event.hash == expected


def test_an_event_keeps_its_own_copy_of_the_data() -> None:
    data = {"step": "a"}
    store = MemoryStore()
    store.append("r", "step_started", data)
    data["step"] = "b"  # the caller's dict changes afterwards: the journal does not
    assert Journal(store).verify().ok


def batch() -> list[tuple[str, str, dict[str, Any], str]]:
    return [
        ("r1", "run_started", {"goal": "g", "inputs": {}}, "2026-12-05T03:00:00.000001+00:00"),
        (
            "r1",
            "step_started",
            {"step": "a", "args": {"x": "é"}},
            "2026-12-05T03:00:00.000002+00:00",
        ),
        (
            "r1",
            "step_finished",
            {"step": "a", "output": [1, 2.5]},
            "2026-12-05T03:00:00.000003+00:00",
        ),
    ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_append_many_is_the_chain_of_single_appends(kind: str, tmp_path: Path) -> None:
    def make(name: str) -> Any:
        return MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / f"{name}.db")

    one, many = make("one"), make("many")
    last = None
    singles = []
    for run_id, k, data, at in batch():
        singles.append(chain_next(last, run_id, k, data, at=at))
        last = (singles[-1].seq, singles[-1].hash)
        one.append_many([(run_id, k, data, at)])
    batched = many.append_many(batch())
    assert [e.hash for e in batched] == [e.hash for e in singles]
    assert [e.hash for e in many.events()] == [e.hash for e in one.events()]
    assert Journal(many).verify().ok
