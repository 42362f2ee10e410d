"""Goal coverage (issue 14): the planner states which steps serve each part of the goal; the
validator warns on parts no step serves; the planner repairs on those warnings; a warning never
makes a plan invalid, and a plan without coverage validates as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from test_server_support import auth, make_app
from typer.testing import CliRunner

import planlock
from planlock import Plan, Planner, ToolRegistry, demo, plan_schema, run_sync, validate
from planlock.cli import app
from planlock.testing import ScriptedLLM, capture_journal
from planlock.validation import asked_effects

GOAL = "List the notes folder, read plan.txt and post a summary to the team."


def team_tools(posted: list[str] | None = None) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read", trusted_output=True)
    def list_dir(path: str) -> list[str]:
        """List a folder."""
        return [f"{path}/plan.txt"]

    @reg.tool(effect="read")
    def read_file(path: str) -> str:
        """Read a file."""
        return "the plan: ship on Friday"

    @reg.tool(effect="send")
    def notify(channel: str, text: str) -> str:
        """Post a message to a team channel."""
        if posted is not None:
            posted.append(text)
        return "posted"

    return reg


READS = [
    {"id": "1", "tool": "list_dir", "args": {"path": "notes"}},
    {"id": "2", "tool": "read_file", "args": {"path": "notes/plan.txt"}},
]
POST = {"id": "3", "tool": "notify", "args": {"channel": "team", "text": "{{steps.2.output}}"}}
# The issue's example: "post to the team" gave list_dir and read_file, and no notify step.
NO_POST = {
    "steps": READS,
    "coverage": [
        {"part": "list the notes folder", "steps": ["1"]},
        {"part": "read plan.txt", "steps": ["2"]},
        {"part": "post a summary to the team", "steps": ["2"]},
    ],
}
FITTING = {
    "steps": [*READS, POST],
    "coverage": [
        {"part": "list the notes folder", "steps": ["1"]},
        {"part": "read plan.txt", "steps": ["2"]},
        {"part": "post a summary to the team", "steps": ["3"]},
    ],
}


def parse(data: dict[str, Any], goal: str | None = GOAL) -> Plan:
    return Plan.parse({"goal": goal, **data})


def codes(issues: Any) -> list[tuple[str, str]]:
    return [(i.code, i.path) for i in issues]


# --------------------------------------------------------------------------------------------
# The validator


def test_a_part_served_only_by_reading_steps_is_flagged_but_the_plan_stays_valid() -> None:
    report = validate(parse(NO_POST), team_tools())
    assert report.ok  # a warning is advice: it never invalidates a plan
    assert codes(report.warnings) == [("uncovered_part", "$.coverage[2]")]
    [warning] = report.warnings
    assert "asks to post (effect send)" in warning.message
    assert "step(s) 2 only read" in warning.message


def test_the_goal_is_checked_even_when_the_planner_leaves_the_part_out() -> None:
    quiet = {"steps": READS, "coverage": [{"part": "read plan.txt", "steps": ["2"]}]}
    for data in (quiet, {"steps": READS}):  # an omitted part, and no coverage list at all
        report = validate(parse(data), team_tools())
        assert report.ok
        assert codes(report.warnings) == [("uncovered_goal", "$.goal")]
        assert "the goal asks to post (effect send)" in report.warnings[0].message


def test_a_part_with_no_step_is_uncovered_and_not_repeated_for_the_goal() -> None:
    data = {"steps": READS, "coverage": [{"part": "post a summary to the team", "steps": []}]}
    report = validate(parse(data), team_tools())
    assert codes(report.warnings) == [("uncovered_part", "$.coverage[0]")]
    assert report.warnings[0].message == "no step serves 'post a summary to the team' (effect send)"


def test_a_cited_step_that_does_not_exist_is_an_issue() -> None:
    data = {**FITTING, "coverage": [{"part": "post a summary to the team", "steps": ["3", "s9"]}]}
    report = validate(parse(data), team_tools())
    assert not report.ok
    assert codes(report.issues) == [("unknown_step", "$.coverage[0].steps[1]")]
    assert "names unknown step 's9'" in report.issues[0].message


def test_coverage_issues_come_after_the_steps_issues() -> None:
    data = {
        "steps": [{"id": "1", "tool": "nope"}],
        "coverage": [{"part": "read it", "steps": ["7"]}],
    }
    assert [i.code for i in validate(parse(data), team_tools()).issues] == [
        "unknown_tool",
        "unknown_step",
    ]


def test_a_fitting_plan_passes_with_no_warning() -> None:
    report = validate(parse(FITTING), team_tools())
    assert report.ok
    assert report.warnings == ()
    assert validate(parse({"steps": FITTING["steps"]}), team_tools()).warnings == ()


def test_plans_without_coverage_validate_and_hash_as_before() -> None:
    old = Plan.parse(demo.PLAN)
    assert "coverage" not in old.canonical()
    assert old.hash == Plan.parse({**old.canonical(), "coverage": []}).hash
    report = validate(old, demo.build_registry(demo.HelpDesk.sample()), inputs=demo.INPUTS)
    assert report.ok
    assert report.warnings == ()
    seed = Plan.parse(READS)  # the seed's array form: no goal, no coverage, nothing to warn
    assert validate(seed, team_tools()).warnings == ()


def test_coverage_is_part_of_the_hash_an_approval_binds_to() -> None:
    with_cov = parse(FITTING)
    assert with_cov.canonical()["coverage"][2] == {
        "part": "post a summary to the team",
        "steps": ["3"],
    }
    assert with_cov.hash != parse({"steps": FITTING["steps"]}).hash
    assert Plan.parse(with_cov.canonical_json()) == with_cov  # round trip


def test_coverage_is_checked_structurally() -> None:
    with pytest.raises(planlock.PlanInvalid) as caught:
        parse({"steps": READS, "coverage": [{"part": "", "steps": ["1"]}, {"steps": ["1"]}]})
    assert {i.path for i in caught.value.issues} == {"$.coverage[0].part", "$.coverage[1].part"}


def test_a_warning_never_stops_or_starts_a_run_and_is_journaled() -> None:
    posted: list[str] = []
    with capture_journal() as journal:
        result = run_sync(parse(NO_POST), team_tools(posted), journal=journal)
    assert result.ok
    assert posted == []  # nothing was added to the plan: it ran exactly as approved
    [validated] = [e.data for e in journal.events() if e.kind == "plan_validated"]
    assert [w["code"] for w in validated["warnings"]] == ["uncovered_part"]
    with capture_journal() as journal:
        run_sync(parse(FITTING), team_tools(), journal=journal, approver=planlock.approve_all("t"))
    [validated] = [e.data for e in journal.events() if e.kind == "plan_validated"]
    assert "warnings" not in validated


@pytest.mark.parametrize(
    ("text", "effects"),
    [
        ("Find Alex Kim's email address.", {}),  # a noun, not an action
        ("Email the customer the welcome template.", {"send": "email"}),
        ("Read the ticket, then reply to it", {"send": "reply"}),
        ("Read notes/a.txt and save a summary to notes/b.txt.", {"write": "save"}),
        ("I want you to pay the bill", {"pay": "pay"}),
        ('Send a message saying "delete everything"', {"send": "send"}),  # quotes are text
        ("Please remove the old files; cancel my 3pm", {"delete": "remove"}),
        ("Summarise the report.", {}),
        ("When is my next class? Tell me in the format YYYY-MM-DD.", {}),  # the reply
        ("Tell Robin which meetings I have today.", {"send": "tell"}),
    ],
)
def test_the_verbs_that_ask_for_an_effect(text: str, effects: dict[str, str]) -> None:
    assert asked_effects(text) == effects


def test_send_money_is_served_by_a_payment_and_a_payment_part_not_by_a_message() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="pay")
    def send_money(recipient: str, amount: float) -> str:
        """Send money."""
        return "ok"

    @reg.tool(effect="send")
    def message(to: str, text: str) -> str:
        """Send a message."""
        return "ok"

    pay = [{"id": "1", "tool": "send_money", "args": {"recipient": "X", "amount": 5}}]
    assert validate(Plan.parse({"goal": "Send $5 to X", "steps": pay}), reg).warnings == ()
    msg = [{"id": "1", "tool": "message", "args": {"to": "X", "text": "here is $5"}}]
    report = validate(Plan.parse({"goal": "Pay X $5", "steps": msg}), reg)
    assert codes(report.warnings) == [("uncovered_goal", "$.goal")]


@pytest.mark.slow  # loading the four suites takes seconds
def test_hand_written_agentdojo_plans_are_flagged_only_where_they_do_not_act() -> None:
    # The heuristic's false-positive check: 93 plans written by hand for AgentDojo's user tasks.
    # The three it flags are plans that do not do what their prompt's words ask (they answer
    # instead of paying, updating or booking).
    pytest.importorskip("agentdojo")
    from planlock.bench.agentdojo._corpus import load_corpus
    from planlock.bench.agentdojo._suite import SuiteTools, load_suite, load_suite_spec

    flagged: dict[str, list[str]] = {}
    plans = 0
    for suite in ("banking", "slack", "travel", "workspace"):
        registry = SuiteTools(load_suite(suite), load_suite_spec(suite)).registry
        for tid, entry in load_corpus(suite).tasks.items():
            if entry.steps:
                plans += 1
                plan = Plan.parse({"goal": entry.prompt, "steps": entry.steps})
                report = validate(plan, registry)
                if report.warnings:
                    flagged[f"{suite}/{tid}"] = [w.message.split(" (")[0] for w in report.warnings]
    assert plans == 93
    assert flagged == {
        "banking/user_task_9": ["the goal asks to update"],
        "banking/user_task_10": ["the goal asks to pay"],
        "travel/user_task_6": ["the goal asks to book"],
    }


# --------------------------------------------------------------------------------------------
# The planner


def plan_with(planner: Planner, goal: str = GOAL) -> Plan:
    async def go() -> Plan:
        return await planner.plan(goal, run_id="r1")

    return anyio.run(go)


def test_a_plan_missing_its_notify_step_is_flagged_and_repaired() -> None:
    llm = ScriptedLLM([NO_POST, FITTING])
    with capture_journal() as journal:
        planner = Planner(llm, team_tools(), journal=journal)
        plan = plan_with(planner)
    assert [s.tool for s in plan.steps] == ["list_dir", "read_file", "notify"]
    assert planner.warnings == ()
    assert [[w.code for w in a.warnings] for a in planner.attempts] == [["uncovered_part"], []]
    repair = llm.requests[1].messages
    assert repair[2].content == json.dumps(NO_POST)
    assert "may not do everything the goal asks" in repair[3].content
    assert "$.coverage[2]: 'post a summary to the team' asks to post" in repair[3].content
    assert "Note: the tools that can send: notify." in repair[3].content  # from the registry
    # A tool can do it, so this is a repair, not a question whether to refuse.
    assert "cannot_plan" not in json.dumps(llm.requests[1].json_schema)
    assert "cannot_plan" not in repair[3].content
    kinds = [e.kind for e in journal.events()]
    assert kinds == ["llm_called", "plan_rejected", "llm_called", "plan_created"]
    rejected = journal.events()[1].data
    assert rejected["issues"] == []
    assert rejected["warnings"][0]["code"] == "uncovered_part"
    assert "warnings" not in journal.events()[3].data


def test_after_the_last_attempt_a_plan_with_only_warnings_is_returned_with_them() -> None:
    llm = ScriptedLLM([NO_POST, {"steps": READS}])
    with capture_journal() as journal:
        planner = Planner(llm, team_tools(), journal=journal, max_attempts=2)
        plan = plan_with(planner)
    assert len(llm.requests) == 2
    assert [s.tool for s in plan.steps] == ["list_dir", "read_file"]
    assert [w.code for w in planner.warnings] == ["uncovered_goal"]
    created = journal.events()[-1]
    assert created.kind == "plan_created"
    assert created.data["attempt"] == 2
    assert created.data["warnings"][0]["path"] == "$.goal"
    assert planner.attempts[1].to_json()["warnings"][0]["code"] == "uncovered_goal"


def test_a_repair_that_goes_wrong_does_not_lose_the_valid_plan() -> None:
    broken = {"steps": [{"id": "1", "tool": "notify", "args": {"channel": "team"}}]}
    llm = ScriptedLLM([NO_POST, broken, "not json"])
    planner = Planner(llm, team_tools(), max_attempts=3)
    plan = plan_with(planner)
    assert plan == parse(NO_POST)
    assert [w.code for w in planner.warnings] == ["uncovered_part"]
    assert [bool(a.issues) for a in planner.attempts] == [False, True, True]


def test_when_no_tool_can_do_the_missing_part_refusing_is_offered_again() -> None:
    goal = "Read plan.txt and pay the invoice."
    reads = {"steps": READS[1:], "coverage": [{"part": "pay the invoice", "steps": []}]}
    llm = ScriptedLLM([reads, {"cannot_plan": "no tool pays"}])
    with pytest.raises(planlock.CannotPlan):
        plan_with(Planner(llm, team_tools()), goal)
    assert "cannot_plan" in json.dumps(llm.requests[1].json_schema)
    assert "or with cannot_plan if no listed tool can do it" in llm.requests[1].messages[3].content
    assert "Note:" not in llm.requests[1].messages[3].content


def test_an_unknown_cited_step_is_dropped_and_its_part_repaired_as_uncovered() -> None:
    """The validator finds the citation (an issue, above); the planner drops it from the reply
    (``planning._fix``), and the part, served by no step now, is a coverage warning it repairs."""
    ghost = {**FITTING, "coverage": [{"part": "post a summary to the team", "steps": ["s3"]}]}
    llm = ScriptedLLM([ghost, FITTING])
    planner = Planner(llm, team_tools())
    plan_with(planner)
    assert planner.attempts[0].issues == ()
    assert [w.code for w in planner.attempts[0].warnings] == ["uncovered_part"]
    assert "may not do everything the goal asks" in llm.requests[1].messages[3].content
    assert "cannot_plan" not in json.dumps(llm.requests[1].json_schema)


def test_the_planner_asks_for_coverage_in_its_schema_and_prompt() -> None:
    llm = ScriptedLLM([FITTING])
    plan_with(Planner(llm, team_tools()))
    request = llm.requests[0]
    schema = request.json_schema
    assert schema is not None
    body = schema["anyOf"][0]
    assert list(body["properties"]) == ["steps", "coverage"]  # the ids exist when cited
    assert body["required"] == ["steps", "coverage"]
    item = body["properties"]["coverage"]["items"]
    assert item["required"] == ["part", "steps"]
    assert item["additionalProperties"] is False
    assert '"coverage"' in request.messages[0].content
    off = ScriptedLLM([FITTING])
    plan_with(Planner(off, team_tools(), coverage=False))
    assert "coverage" not in json.dumps(off.requests[0].json_schema)
    assert '"coverage"' not in off.requests[0].messages[0].content


def test_the_schema_with_coverage_still_has_no_oneof() -> None:
    # llguidance (the embedded model's constrained decoding) refuses `oneOf`.
    text = json.dumps(plan_schema(demo.build_registry(demo.HelpDesk.sample()), coverage=True))
    assert '"coverage"' in text
    assert "oneOf" not in text


# --------------------------------------------------------------------------------------------
# Where a person sees it: the CLI's plan view, `validate`, and the server's approval view

DELETE_GOAL = "Delete the customer's account and email them the cancellation_confirmation template."
DELETE = {"id": "1", "tool": "delete_account", "args": {"account_id": "{{user.account_id}}"}}
EMAIL = {
    "id": "2",
    "tool": "send_email",
    "args": {"to": "{{user.email}}", "template": "cancellation_confirmation"},
}
DELETE_ONLY = {"goal": DELETE_GOAL, "steps": [DELETE]}


def test_validate_prints_the_warning_and_still_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(DELETE_ONLY))
    args = ["validate", str(path), "--tools", "planlock.demo:registry"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "plan is valid" in shown.output
    assert "⚠ $.goal: the goal asks to email (effect send)" in shown.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0
    [warning] = json.loads(as_json.output)["warnings"]
    assert warning["code"] == "uncovered_goal"
    path.write_text(json.dumps(demo.PLAN))
    assert json.loads(CliRunner().invoke(app, [*args, "--json"]).output)["warnings"] == []


def test_plan_shows_the_warnings_of_the_plan_it_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    read_only = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "A-1"}}]}
    model = ScriptedLLM([read_only] * 3)
    monkeypatch.setattr("planlock.cli._plan.load_model", lambda spec=None: model)
    args = ["plan", demo.GOAL, "--tools", "planlock.demo:registry", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(model.requests) == 3  # repaired twice, then returned with its warning
    assert "⚠ the goal asks to email (effect send), but no step" in result.output
    assert "plan is valid" in result.output


def test_the_approval_view_lists_the_warnings(tmp_path: Path) -> None:
    registry = demo.build_registry(demo.HelpDesk.sample())
    server, _ = make_app(tmp_path / "serve.db", registry)
    with TestClient(server) as client:
        ids = []
        for plan in (DELETE_ONLY, {"goal": DELETE_GOAL, "steps": [DELETE, EMAIL]}):
            r = client.post(
                "/api/runs", json={"plan": plan, "inputs": demo.INPUTS}, headers=auth("sam")
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["approval_id"])
        flagged, fitting = (
            client.get(f"/api/approvals/{i}", headers=auth("alice")).json() for i in ids
        )
    [warning] = flagged["warnings"]
    assert warning["code"] == "uncovered_goal"
    assert "asks to email" in warning["message"]
    assert fitting["warnings"] == []


def test_run_shows_the_warning_under_the_plan_before_asking(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(DELETE_ONLY))
    args = ["run", str(path), "--tools", "planlock.demo:registry", "--approve", "auto"]
    args += ["--journal", str(tmp_path / "j.db")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0  # auto refuses a delete; the warning was shown all the same
    assert "⚠ the goal asks to email (effect send), but no step" in result.output
