"""The asynchronous approval gate: submit, list, approve/deny, worker; tampering; processes."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from planlock import Anchoring, Journal, Plan, ToolRegistry, UsageError, demo
from planlock.cli import app
from planlock.journal import anchor_mac
from planlock.queue._notify import WebhookNotifier
from planlock.queue._queue import ApprovalQueue
from planlock.queue._store import parse_duration

ROOT = Path(__file__).resolve().parents[1]
BANKING = f"{ROOT / 'examples' / 'banking.py'}:registry"
runner = CliRunner()


@pytest.fixture
def db(journal_spec: str | Path) -> str | Path:
    """The queue's database: an SQLite file, or a PostgreSQL DSN (see conftest)."""
    return journal_spec


def submit(queue: ApprovalQueue, plan: Any, registry: ToolRegistry, **kw: Any) -> Any:
    async def go() -> Any:
        return await queue.submit(Plan.parse(plan), registry, **kw)

    return anyio.run(go)


def work(queue: ApprovalQueue, registry: ToolRegistry, worker: str = "w1", **kw: Any) -> int:
    async def go() -> int:
        return await queue.work(registry, worker, once=True, poll=0.01, **kw)

    return anyio.run(go)


def kinds(journal: Journal, run_id: str) -> list[str]:
    return [e.kind for e in journal.events(run_id)]


def test_submit_approve_and_a_worker_runs_it_once(
    db: str | Path, registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS, by="sam")
    assert sub.status == "pending_approval"
    assert work(queue, registry) == 0  # not approved yet: nothing runs
    assert desk.outbox == []
    (pending,) = queue.pending()
    assert (pending["id"], pending["kind"], pending["run_id"]) == (
        sub.approval_id,
        "plan",
        sub.run_id,
    )
    assert pending["request"]["report"]["steps"][0]["tool"] == "send_email"

    decision = queue.decide(sub.approval_id, approve=True, by="alice", reason="ok")
    assert decision.plan_hash == Plan.parse(demo.PLAN).hash
    assert queue.pending() == []
    assert work(queue, registry) == 1
    assert [m.to for m in desk.outbox] == ["dana@example.com"]
    assert work(queue, registry, "w2") == 0  # nothing left: the run is not executed twice
    assert len(desk.outbox) == 1
    assert queue.run_status(sub.run_id) == "succeeded"
    events = kinds(queue.journal, sub.run_id)
    assert events.count("run_claimed") == 1
    assert events.count("approval_used") == 1
    assert events[-1] == "run_finished"
    granted = next(e.data for e in queue.journal.events(sub.run_id) if e.kind == "approval_granted")
    assert (granted["by"], granted["via"], granted["id"]) == ("alice", "cli", sub.approval_id)
    assert queue.journal.verify().ok


def test_read_only_plans_are_approved_by_policy_on_submit(
    db: str | Path, registry: ToolRegistry
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, demo.SEED_PLAN[:2], registry, inputs=demo.INPUTS)
    assert (sub.status, sub.approval_id) == ("approved", None)
    assert queue.pending() == []
    assert work(queue, registry) == 1
    assert queue.run_status(sub.run_id) == "succeeded"


def test_a_denied_run_never_executes(
    db: str | Path, registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS)
    queue.decide(sub.approval_id, approve=False, by="bob", reason="not this customer")
    assert work(queue, registry) == 0
    assert desk.outbox == []
    assert queue.run_status(sub.run_id) == "denied"
    denied = next(e.data for e in queue.journal.events(sub.run_id) if e.kind == "approval_denied")
    assert (denied["by"], denied["reason"]) == ("bob", "not this customer")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("unknown", "no approval request NOPE"),
        ("twice", "is approved, not pending"),
        ("denied", "is denied, not pending"),
        ("expired", "is expired, not pending"),
        ("no_reason", "a denial needs a reason"),
        ("no_name", "needs a name"),
    ],
)
def test_bad_answers_are_clear_errors(
    db: str | Path, registry: ToolRegistry, setup: str, message: str
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    expiry = timedelta(seconds=-1) if setup == "expired" else timedelta(days=1)
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS, expires_in=expiry)
    assert sub.approval_id is not None
    target = "NOPE" if setup == "unknown" else sub.approval_id
    if setup == "twice":
        queue.decide(target, approve=True, by="a")
    if setup == "denied":
        queue.decide(target, approve=False, by="a", reason="no")
    with pytest.raises(UsageError, match=message):
        queue.decide(
            target,
            approve=setup != "no_reason",
            by="" if setup == "no_name" else "b",
            reason="",
        )


def test_a_plan_edited_after_approval_does_not_run(
    db: str | Path, registry: ToolRegistry, desk: demo.HelpDesk, raw_sql: Callable[..., None]
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS)
    queue.decide(sub.approval_id, approve=True, by="alice")
    evil = json.loads(Plan.parse(demo.PLAN).canonical_json())
    evil["steps"][3]["args"]["to"] = "attacker@evil.example"
    raw_sql("UPDATE runs SET plan = ? WHERE run_id = ?", (json.dumps(evil), sub.run_id))
    assert work(queue, registry) == 1
    assert desk.outbox == []
    assert queue.run_status(sub.run_id) == "refused"
    assert "approval_refused" in kinds(queue.journal, sub.run_id)
    assert "step_started" not in kinds(queue.journal, sub.run_id)


def test_a_grant_rewritten_to_another_hash_is_refused(
    db: str | Path, registry: ToolRegistry, desk: demo.HelpDesk, raw_sql: Callable[..., None]
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS)
    queue.decide(sub.approval_id, approve=True, by="alice")
    evil = Plan.parse({**demo.PLAN, "goal": "something else"})
    raw_sql("UPDATE runs SET plan = ? WHERE run_id = ?", (evil.canonical_json(), sub.run_id))
    raw_sql("UPDATE approvals SET plan_hash = ? WHERE id = ?", (evil.hash, sub.approval_id))
    work(queue, registry)
    assert desk.outbox == []
    assert queue.run_status(sub.run_id) == "refused"
    refused = next(e.data for e in queue.journal.events(sub.run_id) if e.kind == "approval_refused")
    assert "does not match the journal" in refused["problem"]


def test_parse_duration() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("30") == timedelta(seconds=30)
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("soon")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def test_pending_approvals_are_posted_to_a_webhook(
    db: str | Path, registry: ToolRegistry, webhook: str
) -> None:
    queue = ApprovalQueue(Journal.open(db), WebhookNotifier(webhook))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS)
    (message,) = _Hook.received
    assert message["text"].startswith("planlock: approval needed for the plan")
    assert message["blocks"][0]["type"] == "section"
    assert message["planlock"]["approval_id"] == sub.approval_id
    assert message["planlock"]["reasons"] == ["effect 'send'"]
    assert "notification_sent" in kinds(queue.journal, sub.run_id)


def test_the_webhook_carries_the_journal_head_as_an_anchor(
    db: str | Path, registry: ToolRegistry, webhook: str, tmp_path: Path
) -> None:
    key = b"q" * 32
    queue = ApprovalQueue(Journal.open(db, Anchoring(key=key)), WebhookNotifier(webhook))
    submit(queue, demo.PLAN, registry, inputs=demo.INPUTS)
    (message,) = _Hook.received
    head = message["planlock"]["journal_head"]
    events = queue.journal.events()
    assert head["hash"] == events[head["seq"] - 1].hash
    assert events[head["seq"]].kind == "notification_sent"  # the head when it was sent
    assert head["mac"] == anchor_mac(key, head["seq"], head["hash"])
    # kept by the receiver, the heads are an anchor file for `journal verify --anchor`
    (tmp_path / "hook.jsonl").write_text(json.dumps(head) + "\n")
    assert queue.journal.verify(anchor=tmp_path / "hook.jsonl", key=key).anchors == 1


def test_a_notifier_loads_the_ca_bundle_once(webhook: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx makes a TLS context (loading the CA bundle: ~50 ms of CPU) for every request it is
    not given one for: a notifier makes it at its first message and keeps it."""
    made: list[object] = []
    original = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args or kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    notifier = WebhookNotifier(webhook)
    for n in range(3):
        notifier.notify({"text": f"message {n}"})
    assert [m["text"] for m in _Hook.received] == ["message 0", "message 1", "message 2"]
    assert len(made) == 1


def test_a_failing_webhook_is_journaled_and_loses_nothing(
    db: str | Path, registry: ToolRegistry
) -> None:
    queue = ApprovalQueue(Journal.open(db), WebhookNotifier("http://127.0.0.1:9/closed", timeout=1))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS)
    assert "notification_failed" in kinds(queue.journal, sub.run_id)
    assert [p["id"] for p in queue.pending()] == [sub.approval_id]


def test_queue_needs_an_sqlite_journal() -> None:
    with pytest.raises(UsageError, match="SQLite"):
        ApprovalQueue(Journal())


# -- across processes, through the CLI ---------------------------------------------------------

UNTRUSTED_PAYEE = [
    {"step": 1, "tool": "read_bill", "args": {"name": "electricity"}},
    {"step": 2, "tool": "send_money", "args": {"recipient": "{{steps.1.output}}", "amount": 84.2}},
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``planlock ARGS``, run in this process: the worker under test is a process of its own
    (a new interpreter per command cost ~1 s of CPU each and tested nothing more)."""
    res = runner.invoke(app, list(args))
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail("timed out")


@pytest.mark.slow  # a worker process, answered through the CLI from this one
def test_async_queue_across_processes_with_a_run_time_approval(
    db: str | Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(UNTRUSTED_PAYEE))
    submitted = cli("submit", str(plan), "--tools", BANKING, "--journal", str(db))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "planlock"),
            "worker",
            "--tools",
            BANKING,
            "--journal",
            str(db),
            "--poll",
            "0.1",
            # Long enough for the CLI calls below on a loaded machine: the worker must not run
            # out of work before the answers.
            "--idle-exit",
            "10",
            "--id",
            "worker-A",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listed = json.loads(cli("approvals", "list", "--journal", str(db), "--json").stdout)
        assert [(p["run_id"], p["kind"]) for p in listed] == [(run_id, "plan")]
        assert (
            cli("approve", listed[0]["id"], "--as", "alice", "--journal", str(db)).returncode == 0
        )

        def call_request() -> Any:
            rows = json.loads(cli("approvals", "list", "--journal", str(db), "--json").stdout)
            return [p for p in rows if p["kind"] == "call"]

        (call,) = wait_for(call_request)
        shown = json.loads(
            cli("approvals", "show", call["id"], "--journal", str(db), "--json").stdout
        )
        assert shown["request"]["args"]["recipient"].startswith("Electricity bill")
        assert shown["request"]["provenance"]["recipient"] == ["step:1"]
        denied = cli(
            "deny",
            call["id"],
            "--as",
            "alice",
            "--reason",
            "payee from a bill",
            "--journal",
            str(db),
        )
        assert denied.returncode == 0
        _, stderr = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    journal = Journal.open(db)
    events = list(journal.events(run_id))
    assert not [e for e in events if e.kind == "step_started" and e.data["tool"] == "send_money"]
    failed = next(e.data for e in events if e.kind == "step_failed")
    assert (failed["step"], failed["error_kind"]) == ("2", "denied")
    assert journal.verify().ok


@pytest.mark.slow  # two worker processes (the runs are submitted in this one: not under test)
def test_two_worker_processes_execute_every_run_exactly_once(
    db: str | Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            [
                {"step": 1, "tool": "list_transactions"},
                {"step": 2, "tool": "read_bill", "args": {"name": "electricity"}},
            ]
        )
    )
    runs = []
    for _ in range(12):
        out = runner.invoke(app, ["submit", str(plan), "--tools", BANKING, "--journal", str(db)])
        assert out.exit_code == 0, out.output
        runs.append(out.stdout.strip())
    exe = str(Path(sys.executable).parent / "planlock")
    workers = [
        subprocess.Popen(
            [
                exe,
                "worker",
                "--tools",
                BANKING,
                "--journal",
                str(db),
                "--once",
                "--id",
                f"w{i}",
                "--poll",
                "0.01",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for w in workers:
        w.communicate(timeout=120)
        assert w.returncode == 0
    journal = Journal.open(db)
    for run_id in runs:
        events = journal.events(run_id)
        assert [e.kind for e in events].count("run_claimed") == 1, run_id
        assert [e.kind for e in events].count("step_started") == 2, run_id
        assert events[-1].kind == "run_finished"
        assert events[-1].data["status"] == "succeeded"
    assert journal.verify().ok


def test_cli_submit_reports_invalid_and_denied_plans(db: str | Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"step": 1, "tool": "transfer_everything"}]))
    result = runner.invoke(app, ["submit", str(bad), "--tools", BANKING, "--journal", str(db)])
    assert result.exit_code == 1
    assert "unknown_tool" in result.output
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(UNTRUSTED_PAYEE))
    policy = ROOT / "examples" / "banking_policy.toml"
    result = runner.invoke(
        app,
        ["submit", str(plan), "--tools", BANKING, "--journal", str(db), "--policy", str(policy)],
    )
    assert result.exit_code == 3
    assert "a payee must come from the user" in result.output
    result = runner.invoke(app, ["approve", "NOPE", "--as", "x", "--journal", str(db)])
    assert result.exit_code == 2
    assert "no approval request NOPE" in result.output


def test_a_grant_used_after_it_expired_is_refused(
    db: str | Path, registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, demo.PLAN, registry, inputs=demo.INPUTS, expires_in=timedelta(seconds=1))
    queue.decide(sub.approval_id, approve=True, by="alice")
    time.sleep(1.2)
    work(queue, registry)
    assert desk.outbox == []
    assert queue.run_status(sub.run_id) == "refused"
    refused = next(e.data for e in queue.journal.events(sub.run_id) if e.kind == "approval_refused")
    assert "expired" in refused["problem"]
    assert queue.get(sub.approval_id)["inputs"] == demo.INPUTS
