"""Crash suite for the approval queue's workers (R11, issue 13): SIGKILL at random points.

Several queue workers (forked processes, ``test_queue_support``) share a stream of short runs:
two parallel branches of a read and an idempotent write (``put``), joined by a non-idempotent
``send``; every effect is logged to a file the test counts. The test kills a random worker at a
random moment, over and over, and restarts it: usually with the same id (it recovers its runs at
once), sometimes with a new one (its old runs are stranded until their lease expires, and then
any worker recovers them). A "person" answers resume requests the way an operator would: run the
send again only if the effect log shows it did not happen.

Afterwards: every run finished exactly once (one ``run_finished``, a final status), no run is
left stranded, no send happened twice (a succeeded run sent exactly once), no call of a step was
made after that step's result was journaled, idempotent writes were applied once per key (the
repeated calls are counted separately), and the journal verifies.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_queue_support import ALLOW, PAUSE, calls, fork_worker, plan, registry

from planlock import Journal, Plan
from planlock.queue import MAX_RESUMES, ApprovalQueue, Lease

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("PLANLOCK_QUEUE_CRASH_KILLS", "200"))
WORKERS = 4
LEASE = Lease(timedelta(seconds=1), timedelta(seconds=0.25))
HELD = ("running", "waiting_approval", "waiting_resume")
FINAL = ("succeeded", "failed")


def held_by(queue: ApprovalQueue, worker: str) -> int:
    marks = ", ".join("?" for _ in HELD)
    sql = f"SELECT COUNT(*) FROM runs WHERE claimed_by = ? AND status IN ({marks})"
    return int(queue._db.execute(sql, (worker, *HELD)).fetchone()[0])


def statuses(queue: ApprovalQueue) -> Counter[str]:
    rows = queue._db.execute("SELECT status FROM runs").fetchall()
    return Counter(str(r[0]) for r in rows)


def operator(queue: ApprovalQueue, effects: Path, answers: Counter[str]) -> None:
    """Answer resume requests like a person: run the send again only if it did not happen."""
    sent = Counter(k for k, t, _ in calls(effects) if t == "send")
    for item in queue.pending():
        assert item["kind"] == "resume", item
        again = sent[f"{item['run_id']}:{item['step_id']}"] == 0
        queue.decide(item["id"], approve=again, by="operator", reason="checked the effect log")
        answers["resume:yes" if again else "resume:no"] += 1


def test_sigkill_of_queue_workers_at_random_points_loses_and_repeats_nothing(
    journal_spec: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    effects = tmp_path / "effects.sqlite"
    monkeypatch.setenv("PLANLOCK_TEST_EFFECTS", str(effects))
    monkeypatch.setitem(PAUSE, "seconds", 0.03)  # effects take a moment: kills land inside them too
    spec = str(journal_spec)
    queue = ApprovalQueue(Journal.open(journal_spec))
    runs: list[str] = []

    def top_up(n: int) -> None:
        t0 = time.monotonic()

        async def go() -> None:
            for _ in range(n):
                sub = await queue.submit(Plan.parse(plan(f"c{len(runs)}")), registry, policy=ALLOW)
                runs.append(sub.run_id)

        anyio.run(go)
        stats["submit_ms"] += int((time.monotonic() - t0) * 1000)

    stats: Counter[str] = Counter()
    rng = random.Random(int(os.environ.get("PLANLOCK_QUEUE_CRASH_SEED", "13")))
    top_up(30)
    started = time.monotonic()
    generation = Counter[str]()
    workers = {f"w{i}": fork_worker(spec, f"w{i}", LEASE) for i in range(WORKERS)}
    answers: Counter[str] = Counter()
    try:
        while stats["kills_in_flight"] < KILLS and stats["kills"] < 4 * KILLS:
            time.sleep(rng.uniform(0.01, 0.06))
            slot = rng.choice(sorted(workers))
            os.kill(workers[slot], signal.SIGKILL)
            os.waitpid(workers[slot], 0)
            stats["kills"] += 1
            wid = f"{slot}.{generation[slot]}" if generation[slot] else slot
            in_flight = held_by(queue, wid)
            stats["kills_in_flight"] += in_flight > 0
            stats["runs_interrupted"] += in_flight
            if rng.random() < 0.2:  # a new id: the old one's runs wait for their lease to expire
                generation[slot] += 1
                stats["restarts_with_a_new_id"] += 1
                wid = f"{slot}.{generation[slot]}"
            workers[slot] = fork_worker(spec, wid, LEASE)
            operator(queue, effects, answers)
            if statuses(queue)["approved"] < WORKERS:
                top_up(8)
        stats["kill_phase_ms"] = int((time.monotonic() - started) * 1000)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            operator(queue, effects, answers)
            if sum(statuses(queue)[s] for s in FINAL) == len(runs):
                break
            time.sleep(0.05)
    finally:
        for pid in workers.values():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    wall = time.monotonic() - started
    final = statuses(queue)
    sys.stderr.write(
        f"queue crash test ({'postgres' if '://' in spec else 'sqlite'}): {dict(stats)}, "
        f"{len(runs)} runs {dict(final)}, answers {dict(answers)}, {wall:.1f} s\n"
    )
    assert stats["kills_in_flight"] >= KILLS
    assert sum(final[s] for s in FINAL) == len(runs), final  # 0 stranded, 0 left behind

    journal = Journal.open(journal_spec)
    assert journal.verify().ok
    by_run: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for e in journal.events():
        by_run.setdefault(e.run_id, []).append((e.kind, e.data, e.at))
    made: dict[str, list[float]] = {}
    for key, _, when in calls(effects):
        made.setdefault(key, []).append(when)
    recovered: Counter[str] = Counter()
    for run_id in runs:
        evs = by_run[run_id]
        kinds = Counter(k for k, _, _ in evs)
        assert kinds["run_finished"] == 1, run_id
        (finished,) = [d for k, d, _ in evs if k == "run_finished"]
        assert queue.run_status(run_id) == finished["status"]
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
    assert recovered["restart"] > 0
    assert recovered["lease expired"] > 0
    assert final["succeeded"] >= len(runs) // 2, final
    puts = Counter(k for k, t, _ in calls(effects) if t == "put")
    applied = effects_applied(effects)
    assert applied == len(puts) == 2 * len(runs)  # once per key, however often called
    sends = sum(len(made.get(f"{r}:s", [])) for r in runs)
    sys.stderr.write(
        f"  recoveries {dict(recovered)}; put calls {sum(puts.values())} for {len(puts)} keys "
        f"(repeated: {sum(n - 1 for n in puts.values())}); sends {sends}\n"
    )


def effects_applied(effects: Path) -> int:
    import sqlite3

    db = sqlite3.connect(effects)
    try:
        return int(db.execute("SELECT COUNT(*) FROM applied").fetchone()[0])
    finally:
        db.close()


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
