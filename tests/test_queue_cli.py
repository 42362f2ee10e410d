"""The queue's command line (issue 15): ``planlock runs``, approve/deny by run id, full ids,
self-approval, a failing webhook said on stderr; and a real ``planlock worker`` killed with
SIGKILL and restarted with its id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from planlock import Journal
from planlock.cli import app
from planlock.queue import ApprovalQueue, Lease
from planlock.tools import load_tools

ROOT = Path(__file__).resolve().parents[1]
BANKING = f"{ROOT / 'examples' / 'banking.py'}:registry"
SUPPORT = f"{Path(__file__).resolve().parent / 'test_queue_support.py'}:registry"
runner = CliRunner()

PAY_TWO = [
    {"step": 1, "tool": "read_bill", "args": {"name": "electricity"}},
    {"step": 2, "tool": "send_money", "args": {"recipient": "{{steps.1.output}}", "amount": 1}},
    {"step": 3, "tool": "send_money", "args": {"recipient": "{{steps.1.output}}", "amount": 2}},
]


def cli(db: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [*args, "--journal", str(db)], env=env)


def submitted(db: Path, tmp_path: Path, plan: Any = PAY_TWO, by: str = "sam") -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    result = cli(db, "submit", str(path), "--tools", BANKING, "--as", by)
    assert result.exit_code == 0, result.output
    return str(result.stdout.strip().splitlines()[0])


def test_submit_names_both_ids_and_approve_takes_the_run_id(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PAY_TWO))
    result = cli(db, "submit", str(path), "--tools", BANKING, "--as", "sam")
    run_id = result.stdout.strip().splitlines()[0]
    (pending,) = ApprovalQueue(Journal.open(db)).pending()
    assert f"waiting for approval {pending['id']} (run {run_id})" in result.output
    assert f"planlock approve {run_id} --as NAME" in result.output
    approved = cli(db, "approve", run_id, "--as", "alice")
    assert approved.exit_code == 0, approved.output
    assert f"approved {pending['id']} as alice" in approved.output
    again = cli(db, "approve", run_id, "--as", "alice")
    assert again.exit_code == 2
    assert f"run {run_id} has no pending request; its requests: {pending['id']} (approved)" in (
        again.output
    )
    (row,) = json.loads(cli(db, "runs", "--json").stdout)
    assert (row["run_id"], row["state"], row["status"]) == (run_id, "queued", "approved")


def test_a_run_with_two_pending_requests_names_them(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    run_id = submitted(db, tmp_path)
    assert cli(db, "approve", run_id, "--as", "alice").exit_code == 0
    queue = ApprovalQueue(Journal.open(db))
    registry = load_tools(BANKING)
    done: list[Any] = []

    async def go() -> None:
        done.append(await queue.work_one(registry, "w1", poll=0.02, lease=Lease()))

    thread = threading.Thread(target=anyio.run, args=(go,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while len(queue.pending()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ids = sorted(p["id"] for p in queue.pending())
    assert ids == [f"{run_id}.2.call", f"{run_id}.3.call"]
    result = cli(db, "deny", run_id, "--as", "alice", "--reason", "no")
    assert result.exit_code == 2
    assert f"run {run_id} has 2 pending requests; name one: {', '.join(ids)}" in result.output
    wide = cli(db, "runs", "--wide")
    line = next(x for x in wide.stdout.splitlines() if run_id in x)
    assert "awaiting approval" in line
    assert " ".join(ids) in line  # full, copyable ids on the run's line
    for i in ids:
        assert cli(db, "deny", i, "--as", "alice", "--reason", "no").exit_code == 0
    thread.join(30)
    assert done[0].status == "failed"
    assert json.loads(cli(db, "runs", "--json").stdout)[0]["state"] == "failed"


def test_approvals_list_cuts_no_id_with_wide(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    run_id = submitted(db, tmp_path)
    narrow = cli(db, "approvals", "list")
    assert not any(run_id in line for line in narrow.stdout.splitlines())  # 80 columns: folded
    assert run_id[:8] in narrow.stdout  # ...but not cut off
    wide = cli(db, "approvals", "list", "--wide")
    (line,) = [x for x in wide.stdout.splitlines() if run_id in x]
    (pending,) = ApprovalQueue(Journal.open(db)).pending()
    assert pending["id"] in line
    listed = json.loads(cli(db, "approvals", "list", "--json").stdout)
    assert (listed[0]["id"], listed[0]["run_id"]) == (pending["id"], run_id)


def test_self_approval_is_refused_on_the_cli_as_in_serve(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    run_id = submitted(db, tmp_path, by="sam")
    refused = cli(db, "approve", run_id, "--as", "sam")
    assert refused.exit_code == 3
    assert "sam submitted this run and may not approve it" in refused.output
    assert ApprovalQueue(Journal.open(db)).run_status(run_id) == "pending_approval"
    allowed = cli(db, "approve", run_id, "--as", "sam", env={"PLANLOCK_ALLOW_SELF_APPROVAL": "1"})
    assert allowed.exit_code == 0, allowed.output
    other = submitted(db, tmp_path, by="sam")
    assert cli(db, "approve", other, "--as", "sam", "--allow-self-approval").exit_code == 0
    # Denying one's own run is always allowed.
    third = submitted(db, tmp_path, by="sam")
    assert cli(db, "deny", third, "--as", "sam", "--reason", "oops").exit_code == 0


def test_a_failing_webhook_is_said_on_stderr(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PAY_TWO))
    result = cli(
        db, "submit", str(path), "--tools", BANKING, "--notify", "http://127.0.0.1:9/closed"
    )
    assert result.exit_code == 0  # the request is queued all the same
    assert "warning: the webhook failed for approval" in result.stderr
    assert "journaled as notification_failed" in result.stderr
    run_id = result.stdout.strip()
    kinds = [e.kind for e in Journal.open(db).events(run_id)]
    assert "notification_failed" in kinds


def test_runs_state_filter_and_bad_options(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    run_id = submitted(db, tmp_path)
    rows = json.loads(cli(db, "runs", "--json", "--state", "awaiting approval").stdout)
    assert [r["run_id"] for r in rows] == [run_id]
    assert json.loads(cli(db, "runs", "--json", "--state", "stranded").stdout) == []
    assert cli(db, "runs", "--state", "sleeping").exit_code == 2
    bad = runner.invoke(app, ["worker", "--tools", BANKING, "--lease", "5s", "--heartbeat", "9s"])
    assert bad.exit_code == 2
    assert "must be shorter than the lease" in bad.output
    nothing = cli(db, "runs", "resume", run_id, "--as", "ops")
    assert nothing.exit_code == 2
    assert "nothing to resume" in nothing.output


def test_a_worker_says_which_options_its_engine_does_not_use(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    args = ["worker", "--tools", BANKING, "--once", "--concurrency", "2", "--model", "local"]
    done = cli(db, *args)
    assert done.exit_code == 0, done.output
    warning = next(line for line in done.output.splitlines() if line.startswith("warning:"))
    assert "--concurrency, --model: only for --engine dbos" in warning
    assert "--once" not in warning  # the queue engine's own option, used
    quiet = cli(db, "worker", "--tools", BANKING, "--once", "--poll", "0.1")
    assert quiet.exit_code == 0, quiet.output
    assert "warning" not in quiet.output


def planlock(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "planlock"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, check=False, timeout=120
    )


@pytest.mark.slow  # three worker processes and a few CLI ones
def test_planlock_worker_killed_with_sigkill_is_recovered_by_its_restart(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "j.db")
    flag = tmp_path / "crash.flag"
    env = {
        **os.environ,
        "PLANLOCK_TEST_EFFECTS": str(tmp_path / "effects.sqlite"),
        "PLANLOCK_TEST_CRASH_FLAG": str(flag),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
    }
    plan = tmp_path / "plan.json"
    send = {"id": "s", "tool": "send", "args": {"to": "ops@example.com", "value": 1}}
    plan.write_text(json.dumps({"version": 1, "goal": "send", "steps": [send]}))
    sub = planlock("submit", str(plan), "--tools", SUPPORT, "--journal", db, "--as", "sam", env=env)
    run_id = sub.stdout.strip()
    assert planlock("approve", run_id, "--as", "alice", "--journal", db, env=env).returncode == 0
    flag.write_text("send:before")
    worker = ["worker", "--tools", SUPPORT, "--journal", db, "--id", "cw", "--poll", "0.05"]
    died = planlock(*worker, "--once", env=env)
    assert died.returncode == -9  # SIGKILL, inside the send
    rows = json.loads(planlock("runs", "--json", "--journal", db, env=env).stdout)
    assert (rows[0]["state"], rows[0]["claimed_by"]) == ("running", "cw")
    proc = subprocess.Popen(
        # Idle long enough for the CLI calls below on a loaded machine (see test_queue.py).
        [str(Path(sys.executable).parent / "planlock"), *worker, "--idle-exit", "10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline and state != "waiting for resume":
            rows = json.loads(planlock("runs", "--json", "--journal", db, env=env).stdout)
            state = rows[0]["state"]
            time.sleep(0.2)
        assert state == "waiting for resume"
        resumed = planlock("runs", "resume", run_id, "--as", "alice", "--journal", db, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed {run_id}" in resumed.stdout
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    rows = json.loads(planlock("runs", "--json", "--journal", db, env=env).stdout)
    assert rows[0]["state"] == "done"
    journal = Journal.open(db)
    claims = [e.data for e in journal.events(run_id) if e.kind == "run_claimed"]
    assert claims[-1] == {"worker": "cw", "recovered_from": "cw", "reason": "restart"}
    assert journal.verify().ok
