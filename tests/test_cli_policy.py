"""Approval modes and policies through the CLI: the exit-code contract holds at run time too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planlock import Journal
from planlock.cli import app

ROOT = Path(__file__).resolve().parents[1]
BANKING = f"{ROOT / 'examples' / 'banking.py'}:registry"
POLICY = str(ROOT / "examples" / "banking_policy.toml")
runner = CliRunner()

UNTRUSTED_PAYEE = [
    {"step": 1, "tool": "read_bill", "args": {"name": "electricity"}},
    {"step": 2, "tool": "send_money", "args": {"recipient": "{{steps.1.output}}", "amount": 84.2}},
]


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(UNTRUSTED_PAYEE))
    return path


def sent(db: Path) -> list[str]:
    return [
        e.data["args"]["recipient"]
        for e in Journal.open(db).events()
        if e.kind == "step_started" and e.data["tool"] == "send_money"
    ]


def test_auto_refuses_a_plan_with_a_run_time_flow_before_anything_runs(
    plan: Path, tmp_path: Path
) -> None:
    db = tmp_path / "j.db"
    result = runner.invoke(
        app, ["run", str(plan), "--tools", BANKING, "--journal", str(db), "--approve", "auto"]
    )
    assert result.exit_code == 3
    assert not [e for e in Journal.open(db).events() if e.kind == "step_started"]


@pytest.mark.parametrize(
    ("answers", "code", "paid"), [("y\ny\n", 0, 1), ("y\nn\n", 3, 0), ("n\n", 3, 0)]
)
def test_prompt_asks_for_the_plan_then_for_the_call(
    plan: Path, tmp_path: Path, answers: str, code: int, paid: int
) -> None:
    db = tmp_path / "j.db"
    result = runner.invoke(
        app,
        ["run", str(plan), "--tools", BANKING, "--journal", str(db), "--approve", "prompt"],
        input=answers,
    )
    assert result.exit_code == code, result.output
    assert len(sent(db)) == paid
    if answers.startswith("y"):
        assert "Approval requested for a call (step 2)" in result.output
        assert "GB29NWBK60161331926819" in result.output  # the person sees the concrete value


def test_approve_all_grants_call_approvals_too(plan: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    result = runner.invoke(
        app, ["run", str(plan), "--tools", BANKING, "--journal", str(db), "--approve", "all"]
    )
    assert result.exit_code == 0, result.output
    assert len(sent(db)) == 1
    granted = [e.data for e in Journal.open(db).events() if e.kind == "approval_granted"]
    assert [g["step_id"] for g in granted] == [None, "2"]
    assert granted[1]["args_hash"]


def test_deny_rules_win_even_under_approve_all(plan: Path, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    result = runner.invoke(
        app,
        [
            "run",
            str(plan),
            "--tools",
            BANKING,
            "--journal",
            str(db),
            "--approve",
            "all",
            "--policy",
            POLICY,
        ],
    )
    assert result.exit_code == 3
    assert "a payee must come from the user" in result.output
    assert sent(db) == []


def test_assess_prints_flows_and_json(plan: Path) -> None:
    result = runner.invoke(app, ["assess", str(plan), "--tools", BANKING, "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["flows"] == [
        {
            "step": "2",
            "tool": "send_money",
            "param": "recipient",
            "sources": ["step:1"],
            "action": "require_approval",
        }
    ]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ('[[rules]]\ntool = "wire_money"\naction = "deny"\n', "unknown tool 'wire_money'"),
        (
            '[[rules]]\ntool = "send_money"\nuntrusted = ["payee"]\naction = "deny"\n',
            "no parameter 'payee'",
        ),
        ('effects = { teleport = "allow" }\n', "effects.teleport"),
        ('[[rules]]\neffect = "mine"\naction = "deny"\n', "rules.0.effect"),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_bad_policy_files_are_clear_usage_errors(
    plan: Path, tmp_path: Path, policy: str, message: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    result = runner.invoke(app, ["run", str(plan), "--tools", BANKING, "--policy", str(path)])
    assert result.exit_code == 2
    assert message in result.output
