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
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from test_queue_support import (
    ALLOW,
    FINAL,
    PAUSE,
    check_crash_outcome,
    fork_worker,
    held_by,
    operator,
    plan,
    registry,
    statuses,
)

from planlock import Journal, Plan
from planlock.queue import ApprovalQueue, Lease

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("PLANLOCK_QUEUE_CRASH_KILLS", "100"))
WORKERS = 4
LEASE = Lease(timedelta(seconds=1), timedelta(seconds=0.25))


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

    recovered = check_crash_outcome(journal_spec, queue, runs, effects)
    assert recovered["restart"] > 0
    assert recovered["lease expired"] > 0
