"""The embedded model's on-disk prompt-prefix cache (``planlock.llm._prefix``).

The cache's decisions are tested here with a fake slot store, which writes and reads files the
way llama.cpp's slot save/restore does; ``test_local_model.py`` runs it on the real model,
across two fresh model instances.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planlock.llm._prefix import PrefixCache, prefix_cache_from_env

PREFIX = "You are the planner. Tools: " + "tool(x: string) -> string. " * 100


class FakeSlots:
    """Saves the 'state' (the text it was given) to a file, and restores it, like llama.cpp."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.saved: list[str] = []
        self.restored: list[str] = []
        self.state = ""
        self.fail_restore = False

    def save(self, filename: str) -> None:
        (self.directory / filename).write_text(self.state)
        self.saved.append(filename)

    def restore(self, filename: str) -> int:
        if self.fail_restore:
            raise RuntimeError("invalid slot save file")
        self.state = (self.directory / filename).read_text()
        self.restored.append(filename)
        return len(self.state)


def call(cache: PrefixCache, slots: FakeSlots, prefix: str | None) -> str:
    """One model call: before, 'read the prompt', after."""
    status = cache.before(slots, prefix)
    slots.state = prefix or ""
    cache.after(slots, prefix, status)
    return status


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("prefix-*.bin"))


def test_a_miss_saves_the_prefix_and_a_new_process_restores_it(tmp_path: Path) -> None:
    first, slots = PrefixCache(tmp_path, "model-a"), FakeSlots(tmp_path)
    assert call(first, slots, PREFIX) == "miss"
    assert len(entries(tmp_path)) == 1
    assert entries(tmp_path)[0].read_text() == PREFIX
    assert not list(tmp_path.glob("tmp-*")), "the save was renamed into place"
    # The same process holds it now: nothing to restore.
    assert call(first, slots, PREFIX) == "held"
    assert slots.restored == []
    # A fresh process (a new cache object, an empty model) restores it from disk.
    fresh, new_slots = PrefixCache(tmp_path, "model-a"), FakeSlots(tmp_path)
    assert call(fresh, new_slots, PREFIX) == "restored"
    assert new_slots.restored == [entries(tmp_path)[0].name]
    assert new_slots.saved == [], "a restored prefix is not saved again"


def test_a_changed_prompt_registry_or_model_is_a_miss_not_a_stale_hit(tmp_path: Path) -> None:
    call(PrefixCache(tmp_path, "model-a"), FakeSlots(tmp_path), PREFIX)
    # The registry is rendered into the prompt: another tool list is another prefix.
    other_tools = PREFIX.replace("tool(x", "other_tool(x")
    assert call(PrefixCache(tmp_path, "model-a"), FakeSlots(tmp_path), other_tools) == "miss"
    # The same prompt with another model (or runtime) is another key too.
    assert call(PrefixCache(tmp_path, "model-b"), FakeSlots(tmp_path), PREFIX) == "miss"
    assert len(entries(tmp_path)) == 3
    # The first entry is still there, and still a hit for its own model and prompt.
    assert call(PrefixCache(tmp_path, "model-a"), FakeSlots(tmp_path), PREFIX) == "restored"


def test_switching_prefixes_in_one_process_restores_each_from_disk(tmp_path: Path) -> None:
    cache, slots = PrefixCache(tmp_path, "m"), FakeSlots(tmp_path)
    other = PREFIX + " and more tools"
    assert [call(cache, slots, p) for p in (PREFIX, other, PREFIX, PREFIX)] == [
        "miss",
        "miss",
        "restored",  # the model held `other`: PREFIX comes back from disk
        "held",
    ]
    assert slots.state == PREFIX


def test_short_or_missing_prefixes_are_not_cached(tmp_path: Path) -> None:
    cache, slots = PrefixCache(tmp_path, "m"), FakeSlots(tmp_path)
    assert call(cache, slots, "Extract the IBAN.") == "short"
    assert call(cache, slots, None) == "short"
    assert entries(tmp_path) == []


def test_an_entry_that_will_not_restore_is_deleted_and_saved_again(tmp_path: Path) -> None:
    call(PrefixCache(tmp_path, "m"), FakeSlots(tmp_path), PREFIX)
    slots = FakeSlots(tmp_path)
    slots.fail_restore = True
    cache = PrefixCache(tmp_path, "m")
    status = cache.before(slots, PREFIX)
    assert status == "failed"
    assert entries(tmp_path) == [], "the bad entry is gone"
    slots.state = PREFIX
    cache.after(slots, PREFIX, status)
    assert [p.read_text() for p in entries(tmp_path)] == [PREFIX]


def test_a_failed_save_costs_the_cache_not_the_call(tmp_path: Path) -> None:
    class FullDisk(FakeSlots):
        def save(self, filename: str) -> None:
            (self.directory / filename).write_text("part")
            raise OSError("no space left on device")

    cache = PrefixCache(tmp_path, "m")
    call(cache, FullDisk(tmp_path), PREFIX)
    assert list(tmp_path.iterdir()) == [], "no entry and no temporary file left behind"


def test_a_call_that_did_not_finish_forgets_what_the_model_holds(tmp_path: Path) -> None:
    cache, slots = PrefixCache(tmp_path, "m"), FakeSlots(tmp_path)
    call(cache, slots, PREFIX)
    cache.forget()  # e.g. a call abandoned on its time limit
    assert cache.before(slots, PREFIX) == "restored"


def test_the_least_recently_used_entries_beyond_the_limit_are_removed(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, "m", max_entries=2)
    prefixes = [f"{PREFIX} v{i}" for i in range(3)]
    for i, prefix in enumerate(prefixes):
        call(cache, FakeSlots(tmp_path), prefix)
        for path in entries(tmp_path):  # distinct mtimes, oldest first
            os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 10 * (3 - i)))
    kept = {p.name for p in entries(tmp_path)}
    assert len(kept) == 2
    assert cache.filename(cache.key(prefixes[0])) not in kept


def test_the_environment_turns_the_cache_off_or_moves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANLOCK_PREFIX_CACHE", "off")
    assert prefix_cache_from_env(lambda: tmp_path, "m") is None
    monkeypatch.setenv("PLANLOCK_PREFIX_CACHE", str(tmp_path / "elsewhere"))
    cache = prefix_cache_from_env(lambda: tmp_path, "m")
    assert cache is not None
    assert cache.directory == tmp_path / "elsewhere"
    monkeypatch.delenv("PLANLOCK_PREFIX_CACHE")
    cache = prefix_cache_from_env(lambda: tmp_path, "m")
    assert cache is not None
    assert cache.directory == tmp_path / "prefix"
    assert prefix_cache_from_env(lambda: tmp_path, "m", setting=False) is None
