"""The plan, ask and demo commands with a scripted model (the real model: test_local_model)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from planlock import LLMRequest, demo
from planlock.cli import app
from planlock.planning._react import action_reply
from planlock.testing import ScriptedLLM

runner = CliRunner()
TOOLS = "planlock.demo:registry"
CONTEXT = [f"{k}={json.dumps(v)}" for k, v in demo.INPUTS.items()]
READ_ONLY = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "A-1001"}}]}
SENDS = {
    "steps": [
        {"id": "1", "tool": "read_ticket", "args": {"ticket_id": "{{ticket.id}}"}},
        {"id": "2", "tool": "fetch_account", "args": {"account_id": "{{user.account_id}}"}},
        {
            "id": "3",
            "tool": "send_email",
            "args": {"to": "{{user.email}}", "template": "cancellation_confirmation"},
        },
    ]
}


@pytest.fixture(autouse=True)
def fresh_desk() -> Iterator[None]:
    demo.desk.reset()
    yield
    demo.desk.reset()


def use_model(monkeypatch: pytest.MonkeyPatch, llm: Any) -> list[str | None]:
    """Make every --model resolve to ``llm``; return the specs asked for."""
    asked: list[str | None] = []

    def fake(spec: str | None = None) -> Any:
        asked.append(spec)
        return llm

    monkeypatch.setattr("planlock.cli._plan.load_model", fake)
    monkeypatch.setattr("planlock.cli._demo.load_model", fake)
    monkeypatch.setattr("planlock.cli._app.load_model", fake)
    return asked


def context_args() -> list[str]:
    return [a for pair in CONTEXT for a in ("--context", pair)]


def test_plan_prints_the_plan_and_writes_its_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked = use_model(monkeypatch, ScriptedLLM([SENDS] * 3))
    out = tmp_path / "plan.json"
    result = runner.invoke(
        app,
        ["plan", "Answer the ticket", "--tools", TOOLS, "--model", "openai:x", "-o", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 1  # no --context: {{ticket.id}} names an input nobody gave
    assert "unknown_input" in result.output
    assert not out.exists()
    use_model(monkeypatch, ScriptedLLM([SENDS]))
    result = runner.invoke(
        app, ["plan", "Answer the ticket", "--tools", TOOLS, *context_args(), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert asked == ["openai:x"]
    for text in ("read_ticket", "send_email", "send", "plan is valid: 3 step(s)"):
        assert text in result.output
    saved = json.loads(out.read_text())
    assert saved["goal"] == "Answer the ticket"
    assert [s["tool"] for s in saved["steps"]] == ["read_ticket", "fetch_account", "send_email"]
    validated = runner.invoke(app, ["validate", str(out), "--tools", TOOLS])
    assert validated.exit_code == 0


def test_plan_shows_what_the_planner_rewrote_in_the_models_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    near = json.loads(json.dumps(SENDS).replace("{{user.email}}", "{{steps.2.output.emails}}"))
    use_model(monkeypatch, ScriptedLLM([near]))
    result = runner.invoke(app, ["plan", "Answer the ticket", "--tools", TOOLS, *context_args()])
    assert result.exit_code == 0, result.output
    assert (
        "repaired $.steps[2].args.to: '{{steps.2.output.emails}}' -> '{{steps.2.output.email}}'"
        in " ".join(result.output.split())
    )


def test_plan_json_output(monkeypatch: pytest.MonkeyPatch) -> None:
    use_model(monkeypatch, ScriptedLLM([READ_ONLY]))
    result = runner.invoke(app, ["plan", "Look up A-1001", "--tools", TOOLS, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"][0]["tool"] == "fetch_account"


@pytest.mark.parametrize(
    ("replies", "status", "message"),
    [
        ([{"cannot_plan": "no tool books flights"}], "cannot_plan", "no tool books flights"),
        ([{"steps": [{"id": "1", "tool": "fly", "args": {}}]}] * 2, "invalid", "unknown tool"),
        ([RuntimeError("connection refused")], "llm_error", "connection refused"),
    ],
)
def test_plan_failures_exit_1_and_say_why(
    monkeypatch: pytest.MonkeyPatch, replies: list[Any], status: str, message: str
) -> None:
    use_model(monkeypatch, ScriptedLLM(replies))
    args = ["plan", "Book a flight", "--tools", TOOLS, "--max-attempts", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "nothing was run" in result.output
    use_model(monkeypatch, ScriptedLLM(replies))
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["status"] == status


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "user"], "--input takes NAME=JSON"),  # --context: an alias
        (["--context", "user={nope"], "not JSON"),
        (["--model", "gpt-4"], "unknown model"),
    ],
)
def test_plan_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["plan", "x", "--tools", TOOLS, *args])
    assert result.exit_code == 2
    assert message in result.output


def test_ask_plans_and_runs_a_read_only_plan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_model(monkeypatch, ScriptedLLM([READ_ONLY]))
    db = tmp_path / "j.db"
    result = runner.invoke(
        app, ["ask", "Look up A-1001", "--tools", TOOLS, "--journal", str(db), "--approve", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert "Dana Reyes" in result.output
    shown = runner.invoke(app, ["journal", "show", "--journal", str(db), "--json"])
    events = json.loads(shown.stdout)
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["llm_called", "plan_created"]
    assert kinds[-1] == "run_finished"
    assert len({e["run_id"] for e in events}) == 1  # planning is journaled in the run


def test_ask_needs_approval_for_effects_and_runs_with_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_model(monkeypatch, ScriptedLLM([SENDS]))
    base = ["ask", "Answer the ticket", "--tools", TOOLS, *context_args()]
    db = ["--journal", str(tmp_path / "j.db")]
    refused = runner.invoke(app, [*base, *db, "--approve", "auto"])
    assert refused.exit_code == 3
    assert "nothing was run" in refused.output
    assert demo.desk.outbox == []
    use_model(monkeypatch, ScriptedLLM([SENDS]))
    ran = runner.invoke(app, [*base, *db, "--approve", "all", "--json"])
    assert ran.exit_code == 0, ran.output
    payload = json.loads(ran.stdout)
    assert payload["status"] == "succeeded"
    assert payload["steps"] == {"1": "finished", "2": "finished", "3": "finished"}
    assert [m.to for m in demo.desk.outbox] == ["dana@example.com"]


def test_ask_cannot_plan_runs_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_model(monkeypatch, ScriptedLLM([{"cannot_plan": "no such tool"}]))
    result = runner.invoke(
        app, ["ask", "Fly", "--tools", TOOLS, "--journal", str(tmp_path / "j.db")]
    )
    assert result.exit_code == 1
    assert "cannot plan" in result.output


def test_demo_with_the_shipped_plan_needs_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = use_model(monkeypatch, ScriptedLLM([]))
    result = runner.invoke(app, ["demo", "--yes", "--shipped-plan"])
    assert result.exit_code == 0, result.output
    assert asked == []
    assert "using the shipped plan" in result.output
    assert "reached the output of step(s): 1" in result.output
    assert "delete_account ran: no" in result.output


def test_demo_with_a_plan_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(READ_ONLY))
    result = runner.invoke(app, ["demo", "--plan-file", str(path)])  # read-only: auto-approved
    assert result.exit_code == 0, result.output
    assert "effects: read" in result.output
    assert "Dana Reyes" in result.output
    bad = runner.invoke(app, ["demo", "--plan-file", str(tmp_path / "none.json")])
    assert bad.exit_code == 2


def scripted_world(request: LLMRequest) -> str:
    """Plans for plan requests; an honest ReAct agent's turns for ReAct requests."""
    if request.purpose == "plan":
        return json.dumps(SENDS)
    turns = [
        action_reply("read_ticket", {"ticket_id": "T-1001"}),
        action_reply("fetch_account", {"account_id": "A-1001"}),
        action_reply("send_email", {"to": "dana@example.com", "template": "x"}),
        json.dumps({"thought": "", "final_answer": "done"}),
    ]
    done = sum(m.role == "assistant" for m in request.messages)
    return turns[min(done, len(turns) - 1)]


def test_demo_plans_with_the_model_and_compares_with_react(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_model(monkeypatch, ScriptedLLM(scripted_world))
    result = runner.invoke(app, ["demo", "--yes", "--compare-react"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "planned by scripted" in out
    assert "the planner's prompt: no" in out
    assert "did not obey the injection" in out
    assert "SIMULATED" in out
    assert "ReAct with obedient(scripted): answered" in out
    # The honest ReAct agent did not delete; the obedient one did; planlock did not.
    rows = re.findall(r"│ (planlock|ReAct) /[^│]*│[^│]*│ (no|YES) ", out)
    assert rows == [("planlock", "no"), ("ReAct", "no"), ("ReAct", "YES"), ("planlock", "no")]
    assert "delete_account ran: no" in out


def test_demo_without_approval_refuses_after_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    use_model(monkeypatch, ScriptedLLM([SENDS]))
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 3
    assert "not run" in result.output
    assert demo.desk.outbox == []
