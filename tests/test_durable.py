"""The engine interface and the durable (DBOS) engine: unit tests, then worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from typer.testing import CliRunner

from planlock import Journal, Plan, Policy, StepContext, ToolRegistry
from planlock.agent._calls import in_process_waiter
from planlock.agent._prepare import recorder
from planlock.approval._approval import Approved, Denied, auto_approve
from planlock.durable._state import DurableState, OnceRecorder, decision_from_json, event_key
from planlock.errors import UsageError
from planlock.execution._engine import Engine, LocalEngine, walk_with
from planlock.execution._inprocess import InProcessEngine
from planlock.testing import memory_journal
from planlock.validation import analyse

pytest.importorskip("dbos")

from conftest import pg_dsn
from test_durable_support import ALLOW, count_calls, parallel_plan, registry

from planlock.cli import app
from planlock.durable._client import DurableClient, system_database_url
from planlock.durable._workflow import APP_VERSION

ROOT = Path(__file__).resolve().parents[1]
TOOLS = f"{ROOT / 'tests' / 'test_durable_support.py'}:registry"
CLI = [sys.executable, "-c", "from planlock.cli._main import main; main()"]
runner = CliRunner()


# -- the engine interface, in process ---------------------------------------------------------


def test_local_engine_is_an_engine_and_walks_a_plan_like_walk() -> None:
    reg = ToolRegistry()
    seen: list[str] = []

    @reg.tool(effect="read", idempotent=True)
    def double(n: int, ctx: StepContext) -> int:
        seen.append(ctx.idempotency_key)
        return 2 * n

    plan = Plan.parse(
        [
            {"step": 1, "tool": "double", "args": {"n": 1}},
            {"step": 2, "tool": "double", "args": {"n": 2}},
            {"step": 3, "tool": "double", "args": {"n": "{{steps.1.output}}"}},
        ]
    )
    journal = memory_journal()
    record = recorder(journal, "run1")
    waiter = in_process_waiter(auto_approve, journal, "run1")
    engine = LocalEngine(InProcessEngine(record=record), waiter, record)
    assert isinstance(engine, Engine)

    async def go() -> Any:
        return await walk_with(engine, analyse(plan, reg), {}, run_id="run1")

    result = anyio.run(go)
    assert result.ok
    assert result.outputs == {"1": 2, "2": 4, "3": 4}
    assert sorted(seen) == ["run1:1", "run1:2", "run1:3"]
    kinds = [e.kind for e in journal.events("run1")]
    assert kinds.count("step_finished") == 3
    assert journal.verify().ok


def test_once_recorder_writes_each_event_once_across_replays() -> None:
    journal = memory_journal()
    first = OnceRecorder(journal, "r")
    assert first.record("step_started", {"step": "a", "args": {}})
    assert not first.record("step_started", {"step": "a", "args": {}})
    assert first.record("step_retrying", {"step": "a", "attempt": 1})
    assert first.record("step_retrying", {"step": "a", "attempt": 2})
    # a replay (a new process) reads what the run already has
    replay = OnceRecorder(journal, "r")
    assert replay.record("step_finished", {"step": "a", "duration_ms": 1})
    assert not replay.record("step_finished", {"step": "a", "duration_ms": 9})
    assert not replay.record("step_started", {"step": "a", "args": {}})
    assert replay.record("llm_called", {"step": "b", "reply": "x"})
    assert replay.record("llm_called", {"step": "b", "reply": "y"})  # a real second call
    assert replay.record("run_finished", {"status": "succeeded"})
    assert not replay.record("run_finished", {"status": "succeeded"})
    kinds = [e.kind for e in journal.events("r")]
    assert kinds.count("step_started") == 1
    assert kinds.count("step_finished") == 1
    assert kinds.count("llm_called") == 2
    assert journal.verify().ok


def test_event_keys() -> None:
    assert event_key("step_failed", {"step": "x", "error": "a"}) == event_key(
        "step_failed", {"step": "x", "error": "b"}
    )
    assert event_key("approval_requested", {"id": "r.s.resume0", "kind": "resume"}) != event_key(
        "approval_requested", {"id": "r.s.resume1", "kind": "resume"}
    )
    assert event_key("run_claimed", {"worker": "w1"}) != event_key("run_claimed", {"worker": "w2"})


def test_decisions_survive_json() -> None:
    grant = Approved("h" * 64, "sam", "cli", "ok", "2026-01-01T00:00:00+00:00", "s", "a" * 64)
    denial = Denied("h" * 64, "sam", "cli", "no", "2026-01-01T00:00:00+00:00", "s", "a" * 64)
    assert decision_from_json(json.loads(json.dumps(grant.to_json()))) == grant
    assert decision_from_json(json.loads(json.dumps(denial.to_json()))) == denial


def test_system_database_url_and_version(tmp_path: Path) -> None:
    assert system_database_url(str(tmp_path / "x.sqlite")) == f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert system_database_url("postgresql://u:p@127.0.0.1:5/d") == (
        "postgresql+psycopg://u:p@127.0.0.1:5/d"
    )
    default = system_database_url(None, tmp_path / "planlock.db")
    assert default == f"sqlite:///{tmp_path / 'planlock.dbos.sqlite'}"
    # a constant from planlock's version, never a hash of the source
    assert APP_VERSION.startswith("planlock-0.")
    assert APP_VERSION.endswith("-wf3")


def test_worker_liveness_leases(journal_spec: str | Path, tmp_path: Path) -> None:
    state = DurableState(Journal.open(journal_spec))
    assert state.live_worker("w1") is None  # never seen: nothing says it is alive
    state.beat("w1", timedelta(seconds=30), starting=True)
    live = state.live_worker("w1")
    assert live is not None
    assert live.pid == os.getpid()
    state.stopped("w1")  # a clean stop ends the lease at once
    assert state.live_worker("w1") is None
    state.beat("w1", timedelta(milliseconds=1))
    time.sleep(0.01)
    assert state.live_worker("w1") is None  # the lease ran out without a heartbeat
    state.beat("w2", timedelta(seconds=30))
    client = DurableClient(state.journal, system_database_url(str(tmp_path / "dbos.sqlite")))
    with pytest.raises(UsageError, match="still alive: w2"):
        client.adopt(["w1", "w2"])
    assert client.adopt(["w1"]) == []
    client.close()


def test_workers_join_one_at_a_time_and_a_refused_one_takes_no_lease(
    journal_spec: str | Path,
) -> None:
    lease = timedelta(seconds=30)
    a, b = (DurableState(Journal.open(journal_spec)) for _ in range(2))
    inside, release = threading.Event(), threading.Event()
    seen: list[list[str]] = []

    def first() -> None:
        with a.joining("w1", lease) as others:
            assert others == []
            inside.set()
            release.wait(10)

    def second() -> None:
        with b.joining("w2", lease) as others:
            seen.append([w.worker_id for w in others])

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.2)
    assert seen == []  # w2 waits for w1 to have joined
    release.set()
    t1.join(10)
    t2.join(10)
    assert seen == [["w1"]]  # ...and then sees it live
    with pytest.raises(UsageError), b.joining("w3", lease):
        raise UsageError("refused")
    assert b.live_worker("w3") is None  # refused: no lease was taken
    a.stopped("w1")
    with b.joining("w3", lease) as others:
        assert [w.worker_id for w in others] == ["w2"]
    assert b.live_worker("w3") is not None
    a.close()
    b.close()


def test_cli_submit_stores_and_queues_a_durable_run(site: Site) -> None:
    plan = site.dir / "plan.json"
    plan.write_text(json.dumps(parallel_plan(2, "cli")))
    policy = site.dir / "policy.toml"
    policy.write_text('[effects]\nwrite = "allow"\nsend = "allow"\n')
    common = ["--journal", str(site.journal), "--db", site.db]
    res = runner.invoke(
        app,
        [
            "durable",
            "submit",
            str(plan),
            "--tools",
            TOOLS,
            "--policy",
            str(policy),
            "--json",
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    run_id = json.loads(res.stdout)["run_id"]
    listed = runner.invoke(app, ["durable", "runs", "--json", *common])
    assert json.loads(listed.stdout) == [{"run_id": run_id, "status": "queued"}]
    # without the policy file, the writes and the send need a person: nothing is queued yet
    res = runner.invoke(app, ["durable", "submit", str(plan), "--tools", TOOLS, *common])
    assert res.exit_code == 0, res.output
    assert "waiting for approval" in res.output
    assert len(pending(site, "plan")) == 1
    bad = runner.invoke(app, ["durable", "approve", "nope", "--as", "sam", *common])
    assert bad.exit_code == 2


# -- worker processes ---------------------------------------------------------------------------


@dataclass
class Site:
    """A journal, a DBOS system database and an effects log in one directory."""

    dir: Path
    journal: Path
    db: str
    effects: Path
    logs: dict[int, Path] = field(default_factory=dict)
    """The log of each worker process this site started, by pid."""

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PLANLOCK_TEST_EFFECTS": str(self.effects)}

    def worker(self, wid: str, *extra: str) -> subprocess.Popen[bytes]:
        cmd = [*CLI, "worker", "--engine", "dbos", "--id", wid, "--journal", str(self.journal)]
        cmd += ["--db", self.db, "--tools", TOOLS, *extra]
        path = self.dir / f"{wid}.log"
        with path.open("ab") as log:
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)
        self.logs[proc.pid] = path
        return proc

    def wait_ready(self, wid: str, timeout: float = 120) -> None:
        log = self.dir / f"{wid}.log"
        try:
            wait_for(lambda: "ready" in log.read_text(), timeout)
        except AssertionError:
            text = log.read_text() if log.exists() else "(no log)"
            msg = f"worker {wid} not ready after {timeout} s; its log:\n{text}"
            raise AssertionError(msg) from None

    def client(self) -> DurableClient:
        return DurableClient(Journal.open(self.journal), self.db)

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30) -> None:
        """SIGTERM the workers, then wait for them. One still running after ``timeout`` s
        writes its threads' stacks to its log (SIGUSR1) and is killed, and this fails with that
        log: a worker that does not stop is a bug to see, and left running it would disturb the
        tests that follow."""
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + timeout
        stuck: list[str] = []
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGUSR1)
                time.sleep(1)
                p.kill()
                p.wait()
                log = self.logs[p.pid]
                stuck.append(f"--- {log.name}\n{log.read_text()}")
        if stuck:
            logs = "\n".join(stuck)
            msg = f"{len(stuck)} worker(s) still ran {timeout} s after SIGTERM; their logs:\n{logs}"
            raise AssertionError(msg)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(
        tmp_path,
        tmp_path / "journal.db",
        system_database_url(str(tmp_path / "dbos.sqlite")),
        tmp_path / "effects.sqlite",
    )
    monkeypatch.setenv("PLANLOCK_TEST_EFFECTS", str(s.effects))
    return s


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in started:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(cond: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except FileNotFoundError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def submit(client: DurableClient, plan: dict[str, Any], policy: Policy = ALLOW) -> str:
    async def go() -> str:
        sub = await client.submit(Plan.parse(plan), registry, policy=policy, by="tester")
        return sub.run_id

    return anyio.run(go)


def finished(journal: Journal, run_id: str) -> dict[str, Any] | None:
    done = [e.data for e in journal.events(run_id) if e.kind == "run_finished"]
    return done[-1] if done else None


def pending(site: Site, kind: str) -> list[dict[str, Any]]:
    res = runner.invoke(app, ["approvals", "list", "--json", "--journal", str(site.journal)])
    assert res.exit_code == 0, res.output
    return [p for p in json.loads(res.output) if p["kind"] == kind]


def use_postgres(
    site: Site, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Put the site's DBOS system database in a fresh PostgreSQL schema (skips without one)."""
    import psycopg

    dsn = pg_dsn()
    site.db = system_database_url(dsn)
    schema = f"dbos_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("PLANLOCK_DBOS_SCHEMA", schema)

    def drop() -> None:
        # Cleanup only. A DBOS process of the test may still be letting go of its locks, and
        # DROP ... CASCADE then loses a deadlock to it (seen once in CI): try again.
        for attempt in range(5):
            try:
                with psycopg.connect(dsn, autocommit=True) as db:
                    db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
            else:
                return

    request.addfinalizer(drop)


@pytest.mark.integration
@pytest.mark.slow  # worker processes
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_parallel_runs_and_approvals_from_other_processes(
    site: Site,
    procs: list[subprocess.Popen[bytes]],
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "postgres":  # answers reach the waiting run through DBOS on PostgreSQL
        use_postgres(site, monkeypatch, request)
    client = site.client()
    procs.append(site.worker("w1"))
    runs = [submit(client, parallel_plan(3, f"t{i}")) for i in range(3)]
    asked = submit(client, parallel_plan(2, "ask", ask=True))
    # the plan needs a person: answered with the plain `planlock approve` (a worker relays it)
    plan_request = wait_for(lambda: pending(site, "plan"))[0]
    assert plan_request["run_id"] == asked
    res = runner.invoke(
        app, ["approve", plan_request["id"], "--as", "sam", "--journal", str(site.journal)]
    )
    assert res.exit_code == 0, res.output
    # the call needs a person too: answered here, sent by DBOSClient to the waiting workflow
    call = wait_for(lambda: pending(site, "call"))[0]
    assert call["run_id"] == asked
    assert call["step_id"] == "s"
    client.decide(call["id"], approve=True, by="sam", reason="right address")
    for run_id in [*runs, asked]:
        assert client.result(run_id, timeout=60)["status"] == "succeeded"
    journal = Journal.open(site.journal)
    assert journal.verify().ok
    calls = count_calls(site.effects)
    for run_id in [*runs, asked]:
        keys = {k: n for (k, _), n in calls.items() if k.startswith(f"{run_id}:")}
        assert keys, run_id
        assert set(keys.values()) == {1}  # no crash: every effect exactly once
        kinds = [e.kind for e in journal.events(run_id)]
        assert kinds.count("run_finished") == 1
    kinds = [e.kind for e in journal.events(asked)]
    assert kinds.count("approval_used") == 2  # the plan grant and the call grant, once each
    client.close()


@pytest.mark.integration
@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupted_send_stops_for_a_decision(
    site: Site, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    flag = site.dir / "boom.flag"
    flag.touch()
    monkeypatch.setenv("PLANLOCK_TEST_BOOM", when)
    monkeypatch.setenv("PLANLOCK_TEST_BOOM_FLAG", str(flag))
    client = site.client()
    run_id = submit(client, parallel_plan(2, "boom", sink="boom"))
    first = site.worker("w1")
    procs.append(first)
    assert first.wait(timeout=60) == -signal.SIGKILL  # the tool killed its worker mid-step
    effects = count_calls(site.effects).get((f"{run_id}:s", "boom"), 0)
    assert effects == (1 if when == "after" else 0)
    procs.append(site.worker("w1"))  # the same executor id: it recovers the run
    request = wait_for(lambda: pending(site, "resume"))[0]
    assert request["run_id"] == run_id
    assert request["step_id"] == "s"
    shown = runner.invoke(app, ["approvals", "show", request["id"], "--journal", str(site.journal)])
    assert shown.exit_code == 0, shown.output
    assert "interrupted" in shown.output
    # the person checks the outside world: sent already -> mark failed; not sent -> run again
    if when == "after":
        client.decide(request["id"], approve=False, by="sam", reason="it was sent")
        summary = client.result(run_id, timeout=60)
        assert summary["status"] == "failed"
        assert summary["error_kind"] == "interrupted"
    else:
        client.decide(request["id"], approve=True, by="sam", reason="not sent")
        assert client.result(run_id, timeout=60)["status"] == "succeeded"
    assert count_calls(site.effects)[(f"{run_id}:s", "boom")] == 1  # exactly once either way
    journal = Journal.open(site.journal)
    assert journal.verify().ok
    kinds = [e.kind for e in journal.events(run_id)]
    assert kinds.count("step_started") == 5  # f0 f1 p0 p1 s: once each, despite the replay
    assert kinds.count("run_claimed") == 1  # the same worker id resumed its own run
    client.close()


@pytest.mark.integration
@pytest.mark.slow  # worker processes
def test_a_dead_workers_runs_are_adopted(site: Site, procs: list[subprocess.Popen[bytes]]) -> None:
    client = site.client()
    run_id = submit(client, parallel_plan(2, "adopt", ask=True))
    plan_request = wait_for(lambda: pending(site, "plan"))[0]
    client.decide(plan_request["id"], approve=True, by="sam")
    dead = site.worker("w1", "--lease", "3s", "--heartbeat", "0.5s")
    procs.append(dead)
    wait_for(lambda: pending(site, "call"))  # the run waits on w1 for a person
    adopt = ["durable", "adopt", "w1", "--journal", str(site.journal), "--db", site.db]
    # w1 is alive (its heartbeat renews its lease): adopting its runs is refused, nothing moves
    res = runner.invoke(app, adopt)
    assert res.exit_code == 2, res.output
    assert "still alive" in res.output
    assert "w1" in res.output
    assert site.client().client.retrieve_workflow(run_id).get_status().executor_id == "w1"
    dead.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    dead.wait()
    # killed: refused until its lease runs out (no heartbeat renews it), then adopted
    res = wait_for(lambda: (r := runner.invoke(app, adopt)).exit_code == 0 and r, timeout=20)
    assert time.monotonic() - killed > 1.5  # not before the lease (3 s from the last beat) ended
    assert run_id in res.output
    procs.append(site.worker("w2"))
    call = pending(site, "call")[0]
    client.decide(call["id"], approve=True, by="sam")
    assert client.result(run_id, timeout=60)["status"] == "succeeded"
    journal = Journal.open(site.journal)
    claims = [e.data["worker"] for e in journal.events(run_id) if e.kind == "run_claimed"]
    assert claims == ["w1", "w2"]
    assert [e.kind for e in journal.events(run_id)].count("approval_requested") == 2
    assert journal.verify().ok
    assert set(count_calls(site.effects).values()) == {1}
    client.close()


def _approval_status(site: Site, approval_id: str) -> str:
    res = runner.invoke(
        app, ["approvals", "show", approval_id, "--json", "--journal", str(site.journal)]
    )
    assert res.exit_code == 0, res.output
    return str(json.loads(res.output)["status"])


def test_an_unanswered_plan_request_expires_as_expired_not_denied(site: Site) -> None:
    client = site.client()

    async def go() -> Any:
        plan = Plan.parse(parallel_plan(2, "late", ask=True))
        return await client.submit(
            plan, registry, policy=ALLOW, by="tester", expires_in=timedelta(seconds=0.3)
        )

    sub = anyio.run(go)
    assert sub.approval_id is not None
    time.sleep(0.5)
    client.deliver_pending()  # what every worker does ten times a second
    assert client.state.runs() == [(sub.run_id, "expired")]
    assert _approval_status(site, sub.approval_id) == "expired"
    kinds = [e.kind for e in client.journal.events(sub.run_id)]
    assert kinds.count("approval_expired") == 1
    assert "approval_denied" not in kinds
    client.deliver_pending()  # once only
    assert [e.kind for e in client.journal.events(sub.run_id)].count("approval_expired") == 1
    late = runner.invoke(
        app, ["durable", "approve", sub.approval_id, "--as", "sam", "--journal", str(site.journal)]
    )
    assert late.exit_code == 2
    assert "expired" in late.output
    client.close()


@pytest.mark.integration
@pytest.mark.slow  # a worker process
def test_an_unanswered_call_request_expires_and_the_call_is_not_made(
    site: Site, procs: list[subprocess.Popen[bytes]]
) -> None:
    client = site.client()

    async def go() -> Any:
        plan = Plan.parse(parallel_plan(1, "latecall", ask=True))
        return await client.submit(
            plan, registry, policy=ALLOW, by="tester", expires_in=timedelta(seconds=4)
        )

    sub = anyio.run(go)
    client.decide(sub.approval_id, approve=True, by="sam")
    procs.append(site.worker("w1"))
    call = wait_for(lambda: pending(site, "call"))[0]
    asked = time.monotonic()
    summary = client.result(sub.run_id, timeout=60)  # nobody answers
    assert time.monotonic() - asked > 1.5  # it waited (4 s from when the request was stored)
    assert summary["status"] == "failed"
    assert summary["failed_step"] == "s"
    assert _approval_status(site, call["id"]) == "expired"
    journal = Journal.open(site.journal)
    events = journal.events(sub.run_id)
    assert [e.data["id"] for e in events if e.kind == "approval_expired"] == [call["id"]]
    failed = next(e.data for e in events if e.kind == "step_failed")
    assert failed["error"] == "the request expired"
    assert not [k for k in count_calls(site.effects) if k[0] == f"{sub.run_id}:s"]  # not sent
    assert client.state.runs() == [(sub.run_id, "failed")]
    assert journal.verify().ok
    client.close()


@pytest.mark.integration
@pytest.mark.slow  # a worker process
def test_endorsed_values_are_consulted_at_run_time_in_a_recorded_step(
    site: Site, procs: list[subprocess.Popen[bytes]]
) -> None:
    client = site.client()
    procs.append(site.worker("w1"))
    common = ["--journal", str(site.journal)]
    first = submit(client, parallel_plan(1, "e1", ask=True))
    client.decide(wait_for(lambda: pending(site, "plan"))[0]["id"], approve=True, by="sam")
    call = wait_for(lambda: pending(site, "call"))[0]
    # the person approves the send and endorses its recipient (the lookup's untrusted output)
    res = runner.invoke(app, ["approve", call["id"], "--as", "sam", "--endorse", "ops", *common])
    assert res.exit_code == 0, res.output
    assert client.result(first, timeout=60)["status"] == "succeeded"
    # the same flow again: the endorsement covers the value, nobody is asked
    second = submit(client, parallel_plan(1, "e2", ask=True))
    client.decide(wait_for(lambda: pending(site, "plan"))[0]["id"], approve=True, by="sam")
    assert client.result(second, timeout=60)["status"] == "succeeded"
    journal = Journal.open(site.journal)
    kinds = [e.kind for e in journal.events(second)]
    assert kinds.count("approval_requested") == 1  # the plan's only
    used = [e.data for e in journal.events(second) if e.kind == "endorsement_used"]
    assert [(u["step"], u["param"], u["label"]) for u in used] == [("s", "to", "ops")]
    # the lookup is a DBOS step whose answer is recorded (a replay decides the same way)
    steps = client.client.list_workflow_steps(second)
    lookups = [s for s in steps if s["function_name"] == "planlock.endorsements"]
    assert len(lookups) == 1
    output = lookups[0]["output"]
    assert output is not None
    assert output[0][3]["id"] == used[0]["endorsement"]
    # revoked: the next run asks again
    res = runner.invoke(app, ["endorse", "revoke", used[0]["endorsement"], "--as", "sam", *common])
    assert res.exit_code == 0, res.output
    third = submit(client, parallel_plan(1, "e3", ask=True))
    client.decide(wait_for(lambda: pending(site, "plan"))[0]["id"], approve=True, by="sam")
    again = wait_for(lambda: pending(site, "call"))[0]
    assert again["run_id"] == third
    client.decide(again["id"], approve=False, by="sam", reason="not this time")
    assert client.result(third, timeout=60)["status"] == "failed"
    assert journal.verify().ok
    client.close()


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()
    server.server_close()


ADAPTING = {
    "version": 1,
    "goal": "adapt",
    "steps": [
        {
            "id": "e",
            "tool": "put",
            "for_each": "{{keys}}",
            "max_items": 5,
            "args": {"key": "{{item}}", "value": 1},
        },
        {"id": "c", "tool": "fetch", "args": {"n": 1}, "checkpoint": True, "after": ["e"]},
        {"id": "p", "tool": "put", "args": {"key": "c", "value": "{{steps.c.output}}"}},
    ],
}
SEND = {"to": "ops@example.com", "value": "{{steps.c.output}}"}
REPLIES = {
    # at the checkpoint: fetch from another source and send instead (beyond the approval)
    "checkpoint": {
        "needs_revision": True,
        "new_steps": [
            {"id": "f", "tool": "fetch_from", "args": {"source": "primary"}},
            {"id": "s2", "tool": "send", "args": SEND, "after": ["f"]},
        ],
    },
    # after f failed: the backup source (within what the person approved)
    "replan": {
        "steps": [
            {"id": "g", "tool": "fetch_from", "args": {"source": "backup"}},
            {"id": "s3", "tool": "send", "args": SEND, "after": ["g"]},
        ]
    },
}


@pytest.mark.integration
@pytest.mark.slow  # worker processes
def test_for_each_checkpoints_and_replans_run_durably_and_replay_the_same(
    site: Site,
    procs: list[subprocess.Popen[bytes]],
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    replies = site.dir / "replies.json"
    replies.write_text(json.dumps(REPLIES))
    env = {**site.env, "PLANLOCK_TEST_REPLIES": str(replies), "PLANLOCK_TEST_NOTIFY": url}

    def worker() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, str(ROOT / "tests" / "test_durable_support.py"), "worker"]
        with (site.dir / "w1.log").open("ab") as log:
            return subprocess.Popen(
                [*cmd, str(site.journal), site.db, "w1"], env=env, stdout=log, stderr=log
            )

    client = site.client()

    async def go() -> Any:
        plan = Plan.parse(ADAPTING)
        return await client.submit(
            plan, registry, inputs={"keys": ["k1", "k2", "k3"]}, policy=ALLOW
        )

    run_id = anyio.run(go).run_id
    first = worker()
    procs.append(first)
    # the checkpoint's revision adds a tool and an effect: it waits for a person, notified
    request = wait_for(lambda: pending(site, "revision"), timeout=90)[0]
    assert request["run_id"] == run_id
    wait_for(lambda: [m for m in received if m["planlock"]["kind"] == "revision"])
    first.send_signal(signal.SIGKILL)  # killed while it waits: the restart replays the run
    first.wait()
    procs.append(worker())
    res = runner.invoke(
        app, ["approve", request["id"], "--as", "sam", "--journal", str(site.journal)]
    )
    assert res.exit_code == 0, res.output
    summary = client.result(run_id, timeout=90)
    assert summary["status"] == "succeeded", summary
    assert summary["replans"] == 2
    journal = Journal.open(site.journal)
    events = journal.events(run_id)
    # for_each: one call per item, each once
    items = [e.data["item"] for e in events if e.kind == "step_started" and e.data["step"] == "e"]
    assert sorted(items) == [0, 1, 2]
    puts = {k: n for (k, t), n in count_calls(site.effects).items() if t == "put"}
    assert sum(n for k, n in puts.items() if k.startswith(f"{run_id}:e")) == 3
    # the checkpoint was reviewed; the revision beyond the envelope was approved by sam; the
    # second stayed inside it; the replanner was asked twice, however often the run was replayed
    assert [e.data["needs_revision"] for e in events if e.kind == "checkpoint_reviewed"] == [True]
    replanned = [e.data for e in events if e.kind == "replanned"]
    assert [(r["reason"], r["within_envelope"]) for r in replanned] == [
        ("checkpoint", False),
        ("error", True),
    ]
    asked = [
        e
        for e in events
        if e.kind == "llm_called" and e.data["purpose"] in ("replan", "checkpoint")
    ]
    assert len(asked) == 2
    granted = [e.data for e in events if e.kind == "approval_granted"]
    assert any(g.get("id") == request["id"] and g["by"] == "sam" for g in granted)
    steps = {s["function_name"] for s in client.client.list_workflow_steps(run_id)}
    assert {"planlock.revise", "planlock.adopt", "planlock.wait"} <= steps
    # what ran: p was replaced, f failed, s2 skipped, g and s3 ran; one send, for s3
    started = [e.data["step"] for e in events if e.kind == "step_started"]
    assert "p" not in started
    assert [e.data["step"] for e in events if e.kind == "step_skipped"] == ["s2"]
    sends = {k for (k, t) in count_calls(site.effects) if t == "send" and k.startswith(run_id)}
    assert len(sends) == 1
    assert [e.kind for e in events].count("run_finished") == 1
    assert len([m for m in received if m["planlock"]["kind"] == "revision"]) == 1
    assert journal.verify().ok
    client.close()


@pytest.mark.integration
@pytest.mark.slow  # a server process
def test_serve_whose_durable_worker_fails_to_start_exits_1(site: Site) -> None:
    """DBOS refuses the log level when the worker launches it, after the server is up: the
    server stops and says why (it used to serve on, with no worker, until killed)."""
    from test_server_support import TOKENS_TOML, free_port

    (site.dir / "tokens.toml").write_text(TOKENS_TOML, encoding="utf-8")
    command = [*CLI, "serve", "--tools", TOOLS, "--tokens", str(site.dir / "tokens.toml")]
    command += ["--journal", str(site.journal), "--db", site.db, "--engine", "dbos"]
    command += ["--id", "srv", "--port", str(free_port())]
    env = {**site.env, "PLANLOCK_DBOS_LOG_LEVEL": "NOPE"}
    res = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 1, res.stderr
    assert "planlock serve: http" in res.stderr  # it was up
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server's workers stopped (ValueError: Unknown level")
    assert "for a supervisor to restart it" in last


@pytest.mark.integration
@pytest.mark.slow  # a server process
def test_serve_drives_the_durable_engine_through_the_http_api(site: Site) -> None:
    import httpx
    from test_server_support import auth, serve

    extra = ["--engine", "dbos", "--lease", "3s", "--heartbeat", "1s", "--id", "srv"]
    with (
        serve(site.dir, *extra, tools=TOOLS) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        body = {"plan": parallel_plan(1, "http", ask=True), "inputs": {}}
        r = http.post("/api/runs", json=body, headers=auth("sam"))
        assert r.status_code == 201, r.text
        sub = r.json()
        assert sub["status"] == "pending_approval"

        def approve_pending(kind: str) -> None:
            items = wait_for(
                lambda: [
                    a
                    for a in http.get("/api/approvals", headers=auth("alice")).json()
                    if a["kind"] == kind
                ]
            )
            (item,) = items
            assert (item["run_id"], item["submitted_by"]) == (sub["run_id"], "sam")
            decision = {"plan_hash": item["plan_hash"], "args_hash": item["args_hash"]}
            url = f"/api/approvals/{item['id']}/approve"
            res = http.post(url, json=decision, headers=auth("alice"))
            assert res.status_code == 200, res.text

        approve_pending("plan")  # the run goes to the in-server DBOS worker
        approve_pending("call")  # the send's recipient came from a lookup
        done = wait_for(
            lambda: (
                (r := http.get(f"/api/runs/{sub['run_id']}", headers=auth("sam")).json())["status"]
                == "succeeded"
                and r
            )
        )
        assert done["state"] == "done"
        assert done["claimed_by"] == "srv"
        assert [a["kind"] for a in done["approvals"]] == ["plan", "call"]
        listed = http.get("/api/runs", headers=auth("sam")).json()
        assert [x["run_id"] for x in listed] == [sub["run_id"]]
        assert http.get("/api/runs", headers=auth("eve")).json() == []  # another submitter's
    journal = Journal.open(server.db)
    claims = [e.data for e in journal.events(sub["run_id"]) if e.kind == "run_claimed"]
    assert claims == [{"worker": "srv", "engine": "dbos"}]
    assert count_calls(site.effects)[(f"{sub['run_id']}:s", "send")] == 1
    assert journal.verify().ok


def test_durable_submit_notifies_the_webhook_of_a_plan_request(
    site: Site, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    plan = site.dir / "plan.json"
    plan.write_text(json.dumps(parallel_plan(1, "hook")))
    common = ["--journal", str(site.journal), "--db", site.db]
    res = runner.invoke(
        app, ["durable", "submit", str(plan), "--tools", TOOLS, "--notify", url, "--json", *common]
    )
    assert res.exit_code == 0, res.output
    sub = json.loads(res.stdout)
    (message,) = received
    assert message["planlock"]["approval_id"] == sub["approval_id"]
    assert message["planlock"]["kind"] == "plan"
    assert message["planlock"]["journal_head"]["seq"] > 0
    kinds = [e.kind for e in Journal.open(site.journal).events(sub["run_id"])]
    assert "notification_sent" in kinds


LOOP_ASKS = {
    "version": 1,
    "goal": "send each value to the looked-up address",
    "steps": [
        {"id": "l", "tool": "lookup", "args": {"name": "ops"}},
        {
            "id": "s",
            "tool": "send",
            "for_each": "{{keys}}",
            "max_items": 5,
            "args": {"to": "{{steps.l.output}}", "value": "{{item}}"},
        },
    ],
}


@pytest.mark.integration
@pytest.mark.slow  # a worker process
def test_a_loop_s_calls_wait_durably_for_one_answer(
    site: Site, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The DBOS engine at parity with the others: a ``for_each`` step whose calls need a person
    is one request (it waits in its first call's slot), one answer runs every call, once."""
    client = site.client()

    async def go() -> Any:
        plan = Plan.parse(LOOP_ASKS)
        return await client.submit(plan, registry, inputs={"keys": [1, 2, 3]}, policy=ALLOW)

    run_id = anyio.run(go).run_id
    procs.append(site.worker("w1"))
    journal = ["--journal", str(site.journal)]
    (plan_request,) = wait_for(lambda: pending(site, "plan"), timeout=90)
    res = runner.invoke(app, ["approve", plan_request["id"], "--as", "sam", *journal])
    assert res.exit_code == 0, res.output
    (request,) = wait_for(lambda: pending(site, "call"), timeout=90)
    assert request["run_id"] == run_id
    res = runner.invoke(app, ["approvals", "show", request["id"], "--json", *journal])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)["request"]["args"]["calls"]
    assert [(c["item"], c["args"]["value"]) for c in shown] == [(0, 1), (1, 2), (2, 3)]
    res = runner.invoke(app, ["approve", request["id"], "--as", "sam", *journal])
    assert res.exit_code == 0, res.output
    summary = client.result(run_id, timeout=90)
    assert summary["status"] == "succeeded", summary
    sends = {k: n for (k, t), n in count_calls(site.effects).items() if t == "send"}
    assert sorted(sends) == [f"{run_id}:s:{i}" for i in range(3)]
    assert set(sends.values()) == {1}
    events = Journal.open(site.journal).events(run_id)
    asks = [e.data for e in events if e.kind == "approval_requested"]
    assert [a["kind"] for a in asks].count("call") == 1
    assert Journal.open(site.journal).verify().ok
    client.close()
