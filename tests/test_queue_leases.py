"""Leases on queue runs (issue 13, stranded runs): a worker killed with SIGKILL mid-run leaves a
run that its restart (same id) recovers at once and any worker recovers once the lease expired;
the recovery replays from the journal, re-runs idempotent calls, and asks a person before a
non-idempotent call that may have happened runs again. Workers are forked processes that kill
themselves inside a tool (see ``test_queue_support``)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_queue_support import ALLOW as ALLOW_ALL
from test_queue_support import calls, fork_worker, plan, reap, registry

from planlock import Journal, Plan, Policy, UsageError
from planlock.queue import ApprovalQueue, Lease
from planlock.queue._notify import approval_message

LONG = Lease(timedelta(seconds=30), timedelta(seconds=10))
SHORT = Lease(timedelta(seconds=0.8), timedelta(seconds=0.2))


@pytest.fixture
def site(journal_spec: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PLANLOCK_TEST_EFFECTS", str(tmp_path / "effects.sqlite"))
    flag = tmp_path / "crash.flag"
    monkeypatch.setenv("PLANLOCK_TEST_CRASH_FLAG", str(flag))

    class Site:
        journal = str(journal_spec)
        effects = tmp_path / "effects.sqlite"
        crash = flag
        queue = ApprovalQueue(Journal.open(journal_spec))

        def submit(self, body: dict[str, Any]) -> str:
            async def go() -> Any:
                return await self.queue.submit(Plan.parse(body), registry, policy=ALLOW_ALL)

            return str(anyio.run(go).run_id)

        def count(self, tool: str) -> Counter[str]:
            return Counter(k for k, t, _ in calls(self.effects) if t == tool)

    return Site()


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail("timed out")


def events(site: Any, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in site.queue.journal.events(run_id) if e.kind == kind]


def killed_mid_run(site: Any, crash: str, lease: Lease = LONG, worker: str = "w1") -> str:
    """Submit a run, arm the crash, and let worker ``worker`` die in it (SIGKILL)."""
    run_id: str = site.submit(plan("k", width=1))
    site.crash.write_text(crash)
    assert reap(fork_worker(site.journal, worker, lease, once=True)) is None  # killed
    assert not site.crash.exists()
    return run_id


def test_a_killed_worker_strands_its_run_until_its_restart_recovers_it_at_once(site: Any) -> None:
    run_id = killed_mid_run(site, "put:after")  # an idempotent call, interrupted
    (row,) = site.queue.runs()
    assert (row["state"], row["claimed_by"]) == ("running", "w1")  # the lease is still live
    assert site.queue.claim("w2", LONG) is None  # ...so no other worker takes the run
    assert reap(fork_worker(site.journal, "w1", LONG, once=True)) == 0
    assert site.queue.run_status(run_id) == "succeeded"
    claims = events(site, run_id, "run_claimed")
    assert claims[1] == {"worker": "w1", "recovered_from": "w1", "reason": "restart"}
    # The idempotent put ran again (its result was lost); the send ran once; no resume asked.
    assert site.count("put")[f"{run_id}:p0"] == 2
    assert site.count("send")[f"{run_id}:s"] == 1
    assert not [a for a in events(site, run_id, "approval_requested") if a["kind"] == "resume"]
    assert [d["status"] for d in events(site, run_id, "run_finished")] == ["succeeded"]
    starts = Counter(d["step"] for d in events(site, run_id, "step_started"))
    assert set(starts.values()) == {1}  # each step's events once, however often it was replayed
    assert site.queue.journal.verify().ok


def test_a_send_that_may_have_happened_waits_for_a_person_who_says_it_did(site: Any) -> None:
    run_id = killed_mid_run(site, "send:after")  # the effect happened, its result was lost
    assert site.count("send")[f"{run_id}:s"] == 1
    worker = fork_worker(site.journal, "w1", LONG, once=True)
    (request,) = wait_for(site.queue.pending)
    assert (request["kind"], request["run_id"], request["step_id"]) == ("resume", run_id, "s")
    (reason,) = request["request"]["reasons"]
    assert reason["key"] == "resume_uncertain_step"
    assert reason["message"].startswith("step s (tool send, not idempotent) was interrupted")
    told = approval_message(request["request"])  # what a webhook is told
    assert told["text"].startswith("planlock: approval needed for the resume of interrupted step s")
    assert wait_for(lambda: site.queue.run(run_id)["state"] == "waiting for resume")
    site.queue.decide(request["id"], approve=False, by="ops", reason="it was sent")
    assert reap(worker) == 0
    assert site.count("send")[f"{run_id}:s"] == 1  # not sent again
    (failed,) = events(site, run_id, "step_failed")
    assert (failed["step"], failed["error_kind"]) == ("s", "interrupted")
    assert "ops marked it failed: it was sent" in failed["error"]
    assert site.queue.run_status(run_id) == "failed"
    assert site.queue.journal.verify().ok


def test_a_send_that_did_not_happen_runs_once_when_a_person_resumes_the_run(site: Any) -> None:
    run_id = killed_mid_run(site, "send:before")
    assert site.count("send")[f"{run_id}:s"] == 0
    worker = fork_worker(site.journal, "w1", LONG, once=True)
    wait_for(lambda: site.queue.run(run_id)["state"] == "waiting for resume")
    assert site.queue.resume(run_id, by="ops") is not None  # approves the resume request
    assert reap(worker) == 0
    assert site.count("send")[f"{run_id}:s"] == 1
    assert site.queue.run_status(run_id) == "succeeded"
    kinds = [e.kind for e in site.queue.journal.events(run_id)]
    assert kinds.count("run_finished") == 1
    assert site.queue.journal.verify().ok


def test_an_expired_lease_lets_another_worker_recover_the_run(site: Any) -> None:
    run_id = killed_mid_run(site, "put:after", SHORT, worker="gone")
    assert site.queue.claim("w2", SHORT) is None  # live for 0.8 s more
    assert wait_for(lambda: site.queue.run(run_id)["state"] == "stranded", timeout=5)
    assert reap(fork_worker(site.journal, "w2", SHORT, once=True)) == 0
    assert site.queue.run_status(run_id) == "succeeded"
    recovered = events(site, run_id, "run_claimed")[1]
    assert recovered == {"worker": "w2", "recovered_from": "gone", "reason": "lease expired"}
    assert site.count("send")[f"{run_id}:s"] == 1


def work_in_thread(site: Any, worker: str, lease: Lease, out: list[Any]) -> threading.Thread:
    queue = ApprovalQueue(Journal.open(site.journal))

    async def go() -> None:
        out.append(await queue.work_one(registry, worker, poll=0.02, lease=lease))

    thread = threading.Thread(target=anyio.run, args=(go,), daemon=True)
    thread.start()
    return thread


SLOW_THEN_SEND = {
    "version": 1,
    "goal": "slow, then send",
    "steps": [
        {"id": "w", "tool": "slow", "args": {"seconds": 1.2}},
        {"id": "s", "tool": "send", "args": {"to": "ops@example.com", "value": 1}, "after": ["w"]},
    ],
}


def test_the_heartbeat_keeps_a_long_step_s_run_from_other_workers(site: Any) -> None:
    run_id = site.submit(SLOW_THEN_SEND)
    lease = Lease(timedelta(seconds=0.4), timedelta(seconds=0.1))
    out: list[Any] = []
    thread = work_in_thread(site, "w1", lease, out)
    wait_for(lambda: events(site, run_id, "step_started"))
    for _ in range(6):  # 1.2 s: three leases long
        assert site.queue.claim("w2", lease) is None
        time.sleep(0.2)
    thread.join(30)
    assert out[0].status == "succeeded"
    assert [d["worker"] for d in events(site, run_id, "run_claimed")] == ["w1"]


def test_a_worker_that_lost_its_lease_calls_nothing_more(site: Any, raw_sql: Any) -> None:
    """Attack: a worker paused past its lease (GC, SIGSTOP) while another took the run over; it
    must not go on to send."""
    run_id = site.submit(SLOW_THEN_SEND)
    out: list[Any] = []
    thread = work_in_thread(site, "w1", LONG, out)
    wait_for(lambda: events(site, run_id, "step_started"))
    raw_sql("UPDATE runs SET claimed_by = 'w2' WHERE run_id = ?", (run_id,))
    thread.join(30)
    assert out == ["lost"]
    assert site.count("send")[f"{run_id}:s"] == 0
    assert site.queue.run(run_id)["claimed_by"] == "w2"  # untouched by the loser
    assert not events(site, run_id, "run_finished")


def test_a_worker_that_lost_its_lease_journals_nothing_more(site: Any, raw_sql: Any) -> None:
    """Attack (seen once in CI as two ``step_finished`` for one step): a worker paused past its
    lease while its step's call was in flight; another worker recovered the run. The loser's
    late outcome must not reach the journal, where the winner writes the step's events: every
    event is inserted in a transaction that checks the claim still holds the run (``Fence``)."""
    run_id = site.submit(SLOW_THEN_SEND)
    out: list[Any] = []
    thread = work_in_thread(site, "w1", LONG, out)
    wait_for(lambda: events(site, run_id, "step_started"))
    before = len(site.queue.journal.events(run_id))
    # Another claim took the run over (a new worker id and claim time, as ``take`` writes).
    raw_sql(
        "UPDATE runs SET claimed_by = 'w2', claimed_at = '2999-01-01T00:00:00' WHERE run_id = ?",
        (run_id,),
    )
    thread.join(30)
    assert out == ["lost"]
    assert len(site.queue.journal.events(run_id)) == before  # its call finished: not journaled
    assert not events(site, run_id, "step_finished")
    assert site.count("send")[f"{run_id}:s"] == 0
    assert site.queue.journal.verify().ok


def test_requeue_refuses_a_live_lease_unless_forced(site: Any) -> None:
    run_id = killed_mid_run(site, "put:after")
    with pytest.raises(UsageError, match=r"held by w1 until .*--force if that worker is gone"):
        site.queue.requeue(run_id, by="ops")
    site.queue.requeue(run_id, by="ops", force=True)
    assert site.queue.run(run_id)["state"] == "stranded"
    (requeued,) = events(site, run_id, "run_requeued")
    assert requeued == {"by": "ops", "previous_worker": "w1", "forced": True}
    assert reap(fork_worker(site.journal, "w2", LONG, once=True)) == 0
    assert site.queue.run_status(run_id) == "succeeded"
    assert json.loads(json.dumps(site.queue.runs()))[0]["state"] == "done"


def test_a_resume_request_is_listed_shown_and_answered_over_http(site: Any) -> None:
    """``GET /api/approvals`` answered 500 while a resume request was pending (its kind was not
    in the schema): found by the serve crash suite."""
    from fastapi.testclient import TestClient
    from test_server_support import TOKENS, auth

    from planlock.server import QueueEngine, ServerConfig, TokenStore, create_app

    run_id = killed_mid_run(site, "send:after")
    worker = fork_worker(site.journal, "w1", LONG, once=True)
    wait_for(lambda: site.queue.run(run_id)["state"] == "waiting for resume")
    engine = QueueEngine(Journal.open(site.journal), registry)
    app = create_app(engine, TokenStore.from_tokens(TOKENS), ServerConfig(workers=0))
    with TestClient(app) as c:
        listed = c.get("/api/approvals", headers=auth("alice"))
        assert listed.status_code == 200, listed.text
        (item,) = listed.json()
        assert (item["kind"], item["run_id"], item["step_id"]) == ("resume", run_id, "s")
        assert item["why"][0].startswith("step s (tool send, not idempotent) was interrupted")
        shown = c.get(f"/api/approvals/{item['id']}", headers=auth("alice"))
        assert shown.status_code == 200, shown.text
        assert shown.json()["kind"] == "resume"
        body = {"plan_hash": item["plan_hash"], "args_hash": item["args_hash"], "reason": "sent"}
        denied = c.post(f"/api/approvals/{item['id']}/deny", json=body, headers=auth("alice"))
        assert denied.status_code == 200, denied.text
    engine.close()
    assert reap(worker) == 0
    assert site.count("send")[f"{run_id}:s"] == 1  # not sent again
    assert site.queue.run_status(run_id) == "failed"


def test_a_decider_killed_right_after_its_commit_leaves_its_answer_journaled(site: Any) -> None:
    """The answer and its journal event are one transaction. Before, the event was written
    after the commit: the serve crash suite killed the server between the two, and the worker
    refused the approved run (its grant was not in the journal, R7)."""
    import os
    import signal

    from test_queue_support import fork

    ask = Policy.model_validate({"effects": {"write": "allow", "send": "require_approval"}})

    async def go() -> Any:
        return await site.queue.submit(Plan.parse(plan("d", width=1)), registry, policy=ask)

    submitted = anyio.run(go)
    assert submitted.approval_id is not None

    def decide_then_die() -> None:
        queue = ApprovalQueue(Journal.open(site.journal))
        transact = queue._transact

        def then_die(body: Any, committed: Any) -> Any:
            out = transact(body, committed)
            if body.__name__ == "answer":  # committed: die before anything else happens
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        queue._transact = then_die  # type: ignore[method-assign,assignment]
        queue.decide(submitted.approval_id, approve=True, by="alice")

    assert reap(fork(decide_then_die)) is None  # killed
    granted = events(site, submitted.run_id, "approval_granted")
    assert [g["id"] for g in granted] == [submitted.approval_id]
    assert reap(fork_worker(site.journal, "w1", LONG, once=True)) == 0
    assert site.queue.run_status(submitted.run_id) == "succeeded"
    assert site.count("send")[f"{submitted.run_id}:s"] == 1
    assert site.queue.journal.verify().ok
