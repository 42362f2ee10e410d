"""The journal's head anchored outside the database: tail truncation and a consistently
rewritten chain pass the plain ``verify`` (its documented limit) and are caught with anchors
(an anchor file, the webhook's head) and keyed ``checkpoint`` events. On SQLite and PostgreSQL
(``journal_spec``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from planlock import Anchor, Anchoring, Head, Journal, UsageError, demo
from planlock.cli import app
from planlock.core import canonical_json
from planlock.journal import GENESIS, read_anchors
from planlock.journal._anchor import anchor_mac, key_id
from planlock.journal._events import _content_hash

KEY = b"k" * 32
runner = CliRunner()


def fill(journal: Journal, n: int = 6, start: int = 0) -> None:
    for i in range(start, start + n):
        journal.record(f"run{i % 2}", "step_started", {"step": str(i), "args": {"x": i}})


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def rewrite(spec: str | Path, raw_sql: Callable[..., None], seq: int, x: int) -> None:
    """Edit event ``seq``'s data and recompute every hash from there on, as someone with write
    access to the database would: the result is a valid chain. Checkpoint events are kept
    consistent too (their seq and hash), but their MAC cannot be recomputed without the key."""
    events = Journal.open(spec, Anchoring()).events()
    prev = events[seq - 2].hash if seq > 1 else GENESIS
    new_hash: dict[int, str] = {}
    for e in events[seq - 1 :]:
        data = dict(e.data)
        if e.seq == seq:
            data["args"] = {"x": x}
        if e.kind == "checkpoint" and data["seq"] in new_hash:
            data["hash"] = new_hash[data["seq"]]
        digest = _content_hash(e.seq, e.run_id, e.kind, e.at, data, prev)
        raw_sql(
            "UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (canonical_json(data), prev, digest, e.seq),
            tamper=True,
        )
        new_hash[e.seq] = digest
        prev = digest


def anchored_journal(spec: str | Path, tmp_path: Path, n: int = 6) -> Path:
    """A journal of ``n`` events whose head is anchored (without a key) in an anchor file."""
    file = tmp_path / "anchors.jsonl"
    journal = Journal.open(spec, Anchoring(file=file))
    fill(journal, n)
    journal.close()
    return file


# -- the head -----------------------------------------------------------------------------------


def test_the_head_is_the_last_event(journal_spec: str | Path) -> None:
    journal = Journal.open(journal_spec, Anchoring())
    assert journal.head() == Head(0, GENESIS)
    fill(journal, 3)
    last = journal.events()[-1]
    assert journal.head() == Head(3, last.hash)
    assert Journal().head() == Head(0, GENESIS)
    result = cli("journal", "head", "--journal", str(journal_spec), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["seq"], shown["hash"]) == (3, last.hash)
    assert "mac" not in shown
    text = cli("journal", "head", "--journal", str(journal_spec))
    assert f"head: event 3, hash {last.hash}" in text.stdout


def test_the_head_carries_a_mac_with_a_key(tmp_path: Path) -> None:
    spec = tmp_path / "j.db"
    fill(Journal.open(spec, Anchoring()), 2)
    env = {"PLANLOCK_ANCHOR_KEY": KEY.decode()}
    shown = json.loads(cli("journal", "head", "--journal", str(spec), "--json", env=env).stdout)
    assert shown["mac"] == anchor_mac(KEY, 2, shown["hash"])
    assert shown["key_id"] == key_id(KEY)


# -- tail truncation ------------------------------------------------------------------------


def test_a_truncated_tail_passes_plain_verify_but_not_the_anchor(
    journal_spec: str | Path, raw_sql: Callable[..., None], tmp_path: Path
) -> None:
    file = anchored_journal(journal_spec, tmp_path)
    spec = str(journal_spec)
    assert cli("journal", "verify", "--journal", spec, "--anchor", str(file)).exit_code == 0
    raw_sql("DELETE FROM events WHERE seq > 4", tamper=True)
    # The documented limit: what is left is a valid chain.
    assert Journal.open(journal_spec, Anchoring()).verify().ok
    assert cli("journal", "verify", "--journal", spec).exit_code == 0
    report = Journal.open(journal_spec, Anchoring()).verify(anchor=file)
    assert (report.ok, report.first_bad) == (False, 5)
    assert "tail truncated" in report.reason
    assert "records event 6, but the journal ends at event 4" in report.reason
    result = cli("journal", "verify", "--journal", spec, "--anchor", str(file))
    assert result.exit_code == 1
    assert "journal tampered" in result.output
    assert "tail truncated" in result.output
    as_json = json.loads(
        cli("journal", "verify", "--journal", spec, "--anchor", str(file), "--json").stdout
    )
    assert (as_json["ok"], as_json["first_bad"]) == (False, 5)


def test_an_untouched_journal_passes_with_its_anchors(
    journal_spec: str | Path, tmp_path: Path
) -> None:
    file = tmp_path / "anchors.jsonl"
    journal = Journal.open(journal_spec, Anchoring(file=file, every=2))
    fill(journal, 5)
    journal.close()
    anchors = read_anchors(file)
    assert [a.seq for a in anchors] == [2, 4, 5]  # every 2nd event, and on close
    assert all(a.mac is None for a in anchors)  # no key: no MAC
    assert [e.kind for e in Journal.open(journal_spec, Anchoring()).events()].count(
        "checkpoint"
    ) == 0
    report = Journal.open(journal_spec, Anchoring()).verify(anchor=file)
    assert (report.ok, report.anchors, report.checkpoints) == (True, 3, 0)
    result = cli("journal", "verify", "--journal", str(journal_spec), "--anchor", str(file))
    assert result.exit_code == 0, result.output
    assert "3 anchor(s) match" in result.stdout


# -- a rewritten chain ----------------------------------------------------------------------


def test_a_consistently_rewritten_chain_is_caught_by_the_anchor(
    journal_spec: str | Path, raw_sql: Callable[..., None], tmp_path: Path
) -> None:
    file = anchored_journal(journal_spec, tmp_path)
    rewrite(journal_spec, raw_sql, 3, 1000)
    journal = Journal.open(journal_spec, Anchoring())
    assert journal.events()[2].data["args"] == {"x": 1000}
    assert journal.verify().ok  # every hash recomputed: the plain chain cannot tell
    report = journal.verify(anchor=file)
    assert (report.ok, report.first_bad) == (False, 6)
    assert "chain rewritten" in report.reason
    result = cli("journal", "verify", "--journal", str(journal_spec), "--anchor", str(file))
    assert result.exit_code == 1
    assert "chain rewritten" in result.output


def test_keyed_checkpoints_catch_a_rewrite_without_any_anchor_file(
    journal_spec: str | Path, raw_sql: Callable[..., None]
) -> None:
    journal = Journal.open(journal_spec, Anchoring(key=KEY, every=3))
    fill(journal, 8)
    journal.close()
    events = Journal.open(journal_spec, Anchoring()).events()
    checkpoints = [e for e in events if e.kind == "checkpoint"]
    # after the events whose seq is a multiple of 3 (checkpoints count), and on close
    assert [c.data["seq"] for c in checkpoints] == [3, 6, 9, 11]
    assert all(c.run_id == "journal" for c in checkpoints)
    assert checkpoints[0].data["mac"] == anchor_mac(KEY, 3, events[2].hash)
    good = Journal.open(journal_spec, Anchoring()).verify(key=KEY)
    assert (good.ok, good.checkpoints) == (True, 4)
    env = {"PLANLOCK_ANCHOR_KEY": KEY.decode()}
    ok = cli("journal", "verify", "--journal", str(journal_spec), "--json", env=env)
    assert json.loads(ok.stdout)["checkpoints"] == 4

    rewrite(journal_spec, raw_sql, 2, 1000)
    plain = Journal.open(journal_spec, Anchoring())
    assert plain.verify().ok  # without the key a rewrite that keeps the chain passes
    report = plain.verify(key=KEY)
    assert (report.ok, report.first_bad) == (False, 4)
    assert "MAC does not match" in report.reason
    bad = cli("journal", "verify", "--journal", str(journal_spec), env=env)
    assert bad.exit_code == 1
    assert "MAC does not match" in bad.output
    other = Journal.open(journal_spec, Anchoring()).verify(key=b"x" * 32)
    assert "another key" in other.reason


def test_a_naive_rewrite_of_a_checkpoint_is_caught_without_the_key(
    journal_spec: str | Path, raw_sql: Callable[..., None]
) -> None:
    journal = Journal.open(journal_spec, Anchoring(key=KEY, every=3))
    fill(journal, 3)  # event 4 is the checkpoint of event 3
    events = journal.events()
    e = events[2]
    digest = _content_hash(e.seq, e.run_id, e.kind, e.at, {"x": 1}, e.prev_hash)
    cp = events[3]  # the checkpoint: relinked, but still naming the old hash of event 3
    cp_hash = _content_hash(cp.seq, cp.run_id, cp.kind, cp.at, cp.data, digest)
    raw_sql("UPDATE events SET data = ?, hash = ? WHERE seq = 3", ('{"x":1}', digest), tamper=True)
    raw_sql(
        "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = 4", (digest, cp_hash), tamper=True
    )
    plain = Journal.open(journal_spec, Anchoring())
    assert plain.verify().ok
    report = plain.verify(anchor=[])
    assert (report.ok, report.first_bad) == (False, 4)
    assert "another hash for event 3" in report.reason


# -- the anchor file and its MACs -----------------------------------------------------------


def test_a_forged_anchor_line_is_refused_with_the_key(tmp_path: Path) -> None:
    spec, file = tmp_path / "j.db", tmp_path / "anchors.jsonl"
    journal = Journal.open(spec, Anchoring(key=KEY, file=file, every=100))
    fill(journal, 2)
    journal.close()
    (line,) = file.read_text().splitlines()
    anchor = json.loads(line)
    assert anchor["seq"] == 3  # the checkpoint event recorded on close is the anchored head
    assert anchor["mac"] == anchor_mac(KEY, 3, anchor["hash"])
    assert Journal.open(spec, Anchoring()).verify(anchor=file, key=KEY).ok
    forged = {**anchor, "seq": 9, "hash": "f" * 64}  # someone who cannot compute the MAC
    (tmp_path / "forged.jsonl").write_text(json.dumps(forged) + "\n")
    report = Journal.open(spec, Anchoring()).verify(anchor=tmp_path / "forged.jsonl", key=KEY)
    assert report.ok is False
    assert "MAC does not match (forged)" in report.reason
    # without the key the MAC cannot be checked: the forged anchor reads as truncation
    assert (
        "tail truncated"
        in Journal.open(spec, Anchoring()).verify(anchor=tmp_path / "forged.jsonl").reason
    )


def test_the_cli_anchors_on_close_and_on_request(tmp_path: Path) -> None:
    spec, file = tmp_path / "j.db", tmp_path / "anchors.jsonl"
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            [{"step": 1, "tool": "fetch_account", "args": {"account_id": "{{user.account_id}}"}}]
        )
    )
    env = {"PLANLOCK_ANCHOR_FILE": str(file), "PLANLOCK_ANCHOR_KEY": KEY.decode()}
    inputs = json.dumps(demo.INPUTS["user"])
    result = cli(
        "run",
        str(plan),
        "--tools",
        "planlock.demo:registry",
        "--journal",
        str(spec),
        "--approve",
        "all",
        "--input",
        f"user={inputs}",
        "--json",
        env=env,
    )
    assert result.exit_code == 0, result.output
    journal = Journal.open(spec, Anchoring())
    events = journal.events()
    assert events[-1].kind == "checkpoint"  # recorded when the command closed the journal
    (anchor,) = read_anchors(file)
    assert (anchor.seq, anchor.hash) == (events[-1].seq, events[-1].hash)
    # reading commands record nothing, so they anchor nothing
    assert cli("journal", "show", "--journal", str(spec), env=env).exit_code == 0
    assert len(read_anchors(file)) == 1
    # `journal anchor`: a checkpoint now, appended to the file, printed
    made = cli("journal", "anchor", "--journal", str(spec), env=env)
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["seq"] == events[-1].seq + 1
    assert [a.seq for a in read_anchors(file)] == [events[-1].seq, events[-1].seq + 1]
    ok = cli("journal", "verify", "--journal", str(spec), "--anchor", str(file), env=env)
    assert ok.exit_code == 0, ok.output


def test_bad_anchor_files_and_settings_are_usage_errors(tmp_path: Path) -> None:
    spec = tmp_path / "j.db"
    fill(Journal.open(spec, Anchoring()), 1)
    missing = cli("journal", "verify", "--journal", str(spec), "--anchor", str(tmp_path / "no"))
    assert missing.exit_code == 2
    assert "cannot read anchor file" in missing.output
    (tmp_path / "bad.jsonl").write_text('{"seq": 1, "hash": "ab"}\n[1]\n')
    bad = cli("journal", "verify", "--journal", str(spec), "--anchor", str(tmp_path / "bad.jsonl"))
    assert bad.exit_code == 2
    assert "bad.jsonl:2: not an anchor" in bad.output
    with pytest.raises(UsageError, match="too short"):
        Anchoring.from_env({"PLANLOCK_ANCHOR_KEY": "short"})
    with pytest.raises(UsageError, match="not both"):
        Anchoring.from_env({"PLANLOCK_ANCHOR_KEY": "k" * 20, "PLANLOCK_ANCHOR_KEY_FILE": "f"})
    with pytest.raises(UsageError, match="whole number"):
        Anchoring.from_env({"PLANLOCK_CHECKPOINT_EVERY": "often"})
    keyfile = tmp_path / "key"
    keyfile.write_bytes(KEY + b"\n")
    read = Anchoring.from_env(
        {"PLANLOCK_ANCHOR_KEY_FILE": str(keyfile), "PLANLOCK_CHECKPOINT_EVERY": "7"}
    )
    assert (read.key, read.every, read.file) == (KEY, 7, None)
    assert Anchoring.from_env({}) == Anchoring()
    assert not Anchoring().enabled
    short = cli("journal", "head", "--journal", str(spec), env={"PLANLOCK_ANCHOR_KEY": "short"})
    assert short.exit_code == 2
    assert Anchor.from_json({"seq": 1, "hash": "x"}, "here") == Anchor(1, "x")
