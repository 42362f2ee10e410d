from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planlock import Journal, demo
from planlock.cli import app

runner = CliRunner()
TOOLS = "planlock.demo:registry"


@pytest.fixture(autouse=True)
def fresh_desk() -> Iterator[None]:
    demo.desk.reset()
    yield
    demo.desk.reset()


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(demo.PLAN))
    return path


def inputs() -> list[str]:
    return [
        arg
        for name, value in demo.INPUTS.items()
        for arg in ("--input", f"{name}={json.dumps(value)}")
    ]


def test_validate_a_valid_plan(plan_file: Path) -> None:
    result = runner.invoke(app, ["validate", str(plan_file), "--tools", TOOLS])
    assert result.exit_code == 0, result.output
    assert "plan is valid" in result.output


def test_validate_lists_every_issue_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            [
                {"step": 1, "tool": "fetch_acount", "args": {"account_id": "A-1"}},
                {"step": 2, "tool": "send_email", "args": {"to": "{{steps.9.output}}"}},
            ]
        )
    )
    result = runner.invoke(app, ["validate", str(path), "--tools", TOOLS, "--json"])
    assert result.exit_code == 1
    issues = json.loads(result.stdout)["issues"]
    assert [(i["code"], i["path"]) for i in issues] == [
        ("unknown_tool", "$.steps[0].tool"),
        ("missing_param", "$.steps[1].args"),
        ("unknown_step", "$.steps[1].args.to"),
    ]


def test_a_file_that_is_not_json_is_an_invalid_plan_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("steps:\n  - send everything")
    result = runner.invoke(app, ["validate", str(path), "--tools", TOOLS])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tools", "no.such.module:registry"], "cannot import module"),
        (["--tools", "planlock.demo:nothing"], "has no attribute"),
        (["--tools", "planlock.demo"], "module.path:attr"),
        (["--tools", "planlock.demo:INJECTION"], "not a ToolRegistry"),
        (["--tools", "missing/file.py:registry"], "no such file"),
        (["--tools", TOOLS, "--input", "user"], "NAME=JSON"),
        (["--tools", TOOLS, "--input", "user={bad"], "not JSON"),
        (["--tools", TOOLS, "--approve", "maybe"], "--approve must be"),
    ],
)
def test_usage_errors_exit_2(plan_file: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["run", str(plan_file), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_run_under_auto_stops_with_exit_3_and_runs_nothing(plan_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    result = runner.invoke(
        app,
        [
            "run",
            str(plan_file),
            "--tools",
            TOOLS,
            *inputs(),
            "--journal",
            str(db),
            "--approve",
            "auto",
        ],
    )
    assert result.exit_code == 3
    assert "approval required" in result.output
    assert demo.desk.outbox == []
    assert not [e for e in Journal.open(db).events() if e.kind == "step_started"]


def test_run_with_approve_all_executes_and_journals(plan_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    result = runner.invoke(
        app,
        [
            "run",
            str(plan_file),
            "--tools",
            TOOLS,
            *inputs(),
            "--journal",
            str(db),
            "--approve",
            "all",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "succeeded"
    assert payload["outputs"]["4"]["to"] == "dana@example.com"
    assert [m.to for m in demo.desk.outbox] == ["dana@example.com"]

    shown = runner.invoke(
        app, ["journal", "show", "--journal", str(db), "--run", payload["run_id"], "--json"]
    )
    kinds = [e["kind"] for e in json.loads(shown.stdout)]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert kinds.count("step_finished") == 4
    assert runner.invoke(app, ["journal", "verify", "--journal", str(db)]).exit_code == 0


@pytest.mark.parametrize(("answer", "code", "sent"), [("y\n", 0, 1), ("n\n", 3, 0)])
def test_prompt_mode_asks_and_respects_the_answer(
    plan_file: Path, answer: str, code: int, sent: int
) -> None:
    result = runner.invoke(
        app,
        ["run", str(plan_file), "--tools", TOOLS, *inputs(), "--approve", "prompt"],
        input=answer,
    )
    assert result.exit_code == code, result.output
    assert "Approval requested" in result.output
    assert len(demo.desk.outbox) == sent


def test_a_failing_step_exits_4(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(
        json.dumps([{"step": 1, "tool": "fetch_account", "args": {"account_id": "nobody"}}])
    )
    result = runner.invoke(app, ["run", str(path), "--tools", TOOLS, "--approve", "auto"])
    assert result.exit_code == 4
    assert "tool_error" in result.output


def test_tools_from_a_file_path(tmp_path: Path) -> None:
    tools = tmp_path / "mytools.py"
    tools.write_text(
        "from planlock import ToolRegistry\n"
        "registry = ToolRegistry()\n"
        "@registry.tool(effect='read')\n"
        "def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
    )
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"step": 1, "tool": "add", "args": {"a": 2, "b": 3}}]))
    result = runner.invoke(
        app, ["run", str(plan), "--tools", f"{tools}:registry", "--json", "--approve", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"] == {"1": 5}
    listed = runner.invoke(app, ["tools", "--tools", f"{tools}:registry", "--json"])
    assert json.loads(listed.stdout)[0]["name"] == "add"


def test_journal_verify_detects_tampering_with_exit_1(plan_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    runner.invoke(
        app,
        [
            "run",
            str(plan_file),
            "--tools",
            TOOLS,
            *inputs(),
            "--journal",
            str(db),
            "--approve",
            "all",
        ],
    )
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER events_no_update")
    con.execute(
        "UPDATE events SET data = replace(data, 'dana@example.com', 'evil@example.com') "
        "WHERE kind = 'step_started'"
    )
    con.commit()
    con.close()
    result = runner.invoke(app, ["journal", "verify", "--journal", str(db)])
    assert result.exit_code == 1
    assert "journal tampered" in result.output


def test_journal_commands_on_a_missing_journal_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["journal", "show", "--journal", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert "no journal" in result.output


def test_demo_runs_end_to_end_and_delete_never_runs(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--yes", "--shipped-plan", "--journal", str(tmp_path / "demo.db")]
    )
    assert result.exit_code == 0, result.output
    assert "delete_account ran: no" in result.output
    assert "reached the output of step(s): 1" in result.output
    assert "chain intact" in result.output


def test_demo_without_approval_refuses_to_send() -> None:
    # No terminal, no --yes: risk-based approval refuses.
    result = runner.invoke(app, ["demo", "--shipped-plan"])
    assert result.exit_code == 3
    assert "not run" in result.output


def test_installed_entry_point_reports_bad_plans_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b"\xff\xfe not utf8")
    exe = Path(sys.executable).parent / "planlock"
    proc = subprocess.run(
        [str(exe), "validate", str(path), "--tools", TOOLS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "UTF-8" in proc.stderr
