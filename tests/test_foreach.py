"""Bounded loops: a step with ``for_each`` runs its (fixed) tool once per item of a list, each
call checked by the policy like any call; ``max_items`` bounds the list and a longer list fails
the step before any call."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from planlock import (
    ApprovalRequest,
    Decision,
    Plan,
    Policy,
    Rule,
    StepContext,
    ToolRegistry,
    assess,
    run_sync,
    validate,
)
from planlock.core import canonical_json, sha256_hex
from planlock.core._plan import MAX_ITEMS_CAP
from planlock.planning._plan_schema import plan_schema
from planlock.planning._prompt import PLANNER_SYSTEM, describe_tools
from planlock.testing import ScriptedLLM, memory_journal

CHANNELS = ["general", "random", "External_0"]
MEMBERS = [{"name": "Alice", "email": "a@x.org"}, {"name": "Bob", "email": "b@x.org"}]


def office(calls: list[tuple[str, dict[str, Any]]]) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def channels() -> list[str]:
        """Channel names (anyone can create one: untrusted)."""
        return CHANNELS

    @reg.tool(effect="read", trusted_output=["[*].name"])
    def members() -> list[dict[str, str]]:
        """Workspace members: the names are the directory's, the emails were typed by users."""
        return MEMBERS

    @reg.tool(effect="read", idempotent=True)
    def read_channel(channel: str, ctx: StepContext) -> int:
        """How many messages a channel has."""
        calls.append(("read_channel", {"channel": channel, "key": ctx.idempotency_key}))
        return len(channel)

    @reg.tool(effect="send", sensitive=["to", "body"])
    def message(to: str, body: str) -> str:
        """Send a direct message."""
        calls.append(("message", {"to": to, "body": body}))
        return f"sent to {to}"

    return reg


def loop_plan(
    *, for_each: Any = "{{steps.1.output}}", max_items: int | None = 5, **args: Any
) -> list[dict[str, Any]]:
    step: dict[str, Any] = {"step": "2", "tool": "read_channel", "for_each": for_each}
    if max_items is not None:
        step["max_items"] = max_items
    step["args"] = args or {"channel": "{{item}}"}
    return [{"step": "1", "tool": "channels"}, step]


def codes(plan: list[dict[str, Any]], **kwargs: Any) -> list[tuple[str, str]]:
    return [(i.code, i.path) for i in validate(Plan.parse(plan), office([]), **kwargs).issues]


SEND_ALL = Plan.parse(
    [
        {"step": "1", "tool": "members"},
        {
            "step": "2",
            "tool": "message",
            "for_each": "{{steps.1.output}}",
            "max_items": 10,
            "args": {"to": "{{item.name}}", "body": "Hi {{item.name}}"},
        },
    ]
)
ALLOW_SEND = Policy(effects={"send": "allow"})


# --- validation ---------------------------------------------------------------------------------


def test_a_well_formed_loop_validates() -> None:
    assert codes(loop_plan()) == []
    assert validate(SEND_ALL, office([])).ok


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (loop_plan(max_items=None), ("missing_max_items", "$.steps[1]")),
        (
            loop_plan(max_items=MAX_ITEMS_CAP + 1),
            ("max_items_too_large", "$.steps[1].max_items"),
        ),
        (
            loop_plan(for_each="channels: {{steps.1.output}}"),
            ("invalid_for_each", "$.steps[1].for_each"),
        ),
        (loop_plan(for_each="{{item}}"), ("invalid_for_each", "$.steps[1].for_each")),
        (loop_plan(for_each="general"), ("invalid_for_each", "$.steps[1].for_each")),
        (loop_plan(for_each="{{steps.1.output.0}}"), ("for_each_not_list", "$.steps[1].for_each")),
        (loop_plan(for_each="{{steps.9.output}}"), ("unknown_step", "$.steps[1].for_each")),
        (loop_plan(channel="{{item.name}}"), ("bad_ref_path", "$.steps[1].args.channel")),
        (
            [{"step": "1", "tool": "read_channel", "args": {"channel": "{{item}}"}}],
            ("item_outside_loop", "$.steps[0].args.channel"),
        ),
        (
            [{"step": "1", "tool": "channels", "max_items": 3}],
            ("max_items_without_for_each", "$.steps[0].max_items"),
        ),
    ],
)
def test_loop_fields_are_checked(plan: list[dict[str, Any]], expected: tuple[str, str]) -> None:
    assert expected in codes(plan)


def test_an_item_has_the_type_of_the_list_items() -> None:
    plan: list[dict[str, Any]] = [
        {"step": "1", "tool": "members"},
        {
            "step": "2",
            "tool": "read_channel",
            "for_each": "{{steps.1.output}}",
            "max_items": 3,
            "args": {"channel": "{{item}}"},  # an object, not a string
        },
    ]
    assert ("type_mismatch", "$.steps[1].args.channel") in codes(plan)


def test_a_loop_over_a_trusted_input_list() -> None:
    plan = loop_plan(for_each="{{names}}")[1:]
    plan[0]["step"] = "1"
    assert codes(plan, inputs={"names": ["a", "b"]}) == []
    assert ("for_each_not_list", "$.steps[0].for_each") in codes(plan, inputs={"names": "a"})


def test_the_planner_schema_and_prompt_offer_loops_and_choices() -> None:
    reg = office([])
    schema = plan_schema(reg)
    raw = Plan.parse(loop_plan()).canonical()
    reply = {
        "steps": [
            {k: v for k, v in s.items() if k in ("id", "tool", "args", "for_each", "max_items")}
            for s in raw["steps"]
        ]
    }
    jsonschema.validate(reply, schema)
    too_many = {"steps": [{**reply["steps"][1], "max_items": MAX_ITEMS_CAP + 1}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(too_many, schema)
    choice = {
        "id": "3",
        "tool": "llm",
        "args": {
            "instruction": "Pick one.",
            "input": "{{steps.1.output}}",
            "choices": "{{steps.1.output[*].name}}",
        },
    }
    jsonschema.validate({"steps": [choice]}, schema)
    prompt = describe_tools(reg)
    assert "trusted output fields: [*].name" in prompt
    assert '"for_each"' in PLANNER_SYSTEM
    assert f"at most {MAX_ITEMS_CAP}" in PLANNER_SYSTEM
    assert '"choices"' in PLANNER_SYSTEM


# --- run time -------------------------------------------------------------------------------------


def test_the_tool_runs_once_per_item_in_order_and_returns_the_list() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    journal = memory_journal()
    result = run_sync(Plan.parse(loop_plan()), office(calls), journal=journal, run_id="r1")
    assert result.ok
    assert result.outputs["2"] == [7, 6, 10]
    assert [c[1]["channel"] for c in calls] == CHANNELS
    assert [c[1]["key"] for c in calls] == ["r1:2:0", "r1:2:1", "r1:2:2"]
    started = [
        e.data for e in journal.events() if e.kind == "step_started" and e.data["step"] == "2"
    ]
    assert [(e["item"], e["items"], e["args"]) for e in started] == [
        (i, 3, {"channel": c}) for i, c in enumerate(CHANNELS)
    ]
    finished = [
        e.data for e in journal.events() if e.kind == "step_finished" and e.data["step"] == "2"
    ]
    assert len(finished) == 1
    assert finished[0]["output"] == [7, 6, 10]


def test_a_list_longer_than_max_items_fails_before_any_call() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    result = run_sync(Plan.parse(loop_plan(max_items=2)), office(calls))
    assert result.status == "failed"
    assert result.error_kind == "too_many_items"
    assert "3 items; max_items is 2" in (result.error or "")
    assert calls == []


def test_an_empty_list_runs_nothing() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    plan = Plan.parse(loop_plan(for_each="{{names}}")[1:])
    result = run_sync(plan, office(calls), inputs={"names": []})
    assert result.ok
    assert result.outputs["2"] == []
    assert calls == []


MESSAGE_EACH = [
    {"step": "1", "tool": "channels"},
    {
        "step": "2",
        "tool": "message",
        "for_each": "{{steps.1.output}}",
        "max_items": 5,
        "args": {"to": "{{item}}", "body": "hello"},
    },
]


def test_each_iteration_is_checked_and_a_person_answers_the_loop_once() -> None:
    """Untrusted items in a sensitive parameter: every call is checked before any runs, and the
    calls that need a person are asked about in one request that shows each call (item and
    exact arguments) and is bound to all of them; one answer, one touch (issue 12)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    asked: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            return request.approve("t", "t")
        asked.append(request)
        return request.approve("t", "t")

    plan = Plan.parse(MESSAGE_EACH)
    report = assess(plan, office(calls), ALLOW_SEND)
    assert [(f.step_id, f.param, f.sources) for f in report.flows] == [("2", "to", ("step:1",))]
    journal = memory_journal()
    result = run_sync(plan, office(calls), policy=ALLOW_SEND, approver=approver, journal=journal)
    assert result.ok
    assert [a["to"] for c, a in calls if c == "message"] == CHANNELS
    (request,) = asked
    assert request.step_id == "2"
    assert request.args == {
        "calls": [{"item": i, "args": {"to": c, "body": "hello"}} for i, c in enumerate(CHANNELS)]
    }
    assert [r.key for r in request.reasons] == ["flow:to"]
    assert [o.param for o in request.endorsable] == ["to"] * 3  # each value, once
    assert request.provenance is not None
    assert request.provenance["1.to"] == ["step:1"]
    events = journal.events()
    (event,) = [
        e.data for e in events if e.kind == "approval_requested" and e.data["kind"] == "call"
    ]
    assert (event["args_hash"], event["args"]) == (request.args_hash, request.args)


def test_a_denied_loop_runs_no_item() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def approver(request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            return request.approve("t", "t")
        return request.deny("t", "t", "not these")

    result = run_sync(Plan.parse(MESSAGE_EACH), office(calls), policy=ALLOW_SEND, approver=approver)
    assert (result.status, result.error_kind) == ("failed", "denied")
    assert [c for c, _ in calls if c == "message"] == []  # no item ran: none was approved


def test_a_loop_grant_covers_exactly_the_calls_it_showed() -> None:
    """Attack: an answer given for one call of the loop (or for another list of calls) must not
    let the loop run. The grant is bound to the hash of the whole list shown."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def approver(request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            return request.approve("t", "t")
        assert request.args is not None
        first = request.args["calls"][0]["args"]  # approve only the first call's arguments
        forged = replace(request, args=first, args_hash=sha256_hex(canonical_json(first)))
        return forged.approve("t", "t")

    result = run_sync(Plan.parse(MESSAGE_EACH), office(calls), policy=ALLOW_SEND, approver=approver)
    assert (result.status, result.error_kind) == ("failed", "approval_refused")
    assert [c for c, _ in calls if c == "message"] == []


def test_a_single_call_that_needs_a_person_is_asked_about_alone() -> None:
    """Only the calls that need a person are in the request; one such call keeps the plain
    call request (with its values to endorse)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    asked: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> Decision:
        if request.kind == "call":
            asked.append(request)
        return request.approve("t", "t")

    only_external = Policy(
        effects={"send": "allow"},
        untrusted_to_sensitive="allow",
        rules=(
            Rule(
                action="require_approval",
                tool="message",
                args={"properties": {"to": {"const": "External_0"}}, "required": ["to"]},
            ),
        ),
    )
    result = run_sync(
        Plan.parse(MESSAGE_EACH), office(calls), policy=only_external, approver=approver
    )
    assert result.ok
    (request,) = asked
    assert request.args == {"to": "External_0", "body": "hello"}


def test_per_field_trust_applies_to_items() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    report = assess(SEND_ALL, office(calls), ALLOW_SEND)
    assert report.flows == ()
    assert not report.needs_person
    result = run_sync(SEND_ALL, office(calls), policy=ALLOW_SEND)
    assert result.ok
    assert result.outputs["2"] == ["sent to Alice", "sent to Bob"]
    emails = Plan.parse(
        [
            {"step": "1", "tool": "members"},
            {
                "step": "2",
                "tool": "message",
                "for_each": "{{steps.1.output}}",
                "max_items": 10,
                "args": {"to": "{{item.email}}", "body": "hi"},
            },
        ]
    )
    assert [f.param for f in assess(emails, office([]), ALLOW_SEND).flows] == ["to"]


def test_a_loop_of_llm_steps_and_refs_into_the_loop_output() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    plan = Plan.parse(
        [
            {"step": "1", "tool": "members"},
            {
                "step": "2",
                "tool": "llm",
                "for_each": "{{steps.1.output}}",
                "max_items": 5,
                "args": {"instruction": "Greet.", "input": "{{item.email}}"},
            },
            {
                "step": "3",
                "tool": "message",
                "args": {"to": "Alice", "body": "{{steps.2.output.1}}"},
            },
        ]
    )
    llm = ScriptedLLM([{"result": "hi a"}, {"result": "hi b"}])
    result = run_sync(
        plan,
        office(calls),
        policy=Policy(effects={"send": "allow"}, untrusted_to_sensitive="allow"),
        llm=llm,
    )
    assert result.ok
    assert result.outputs["2"] == ["hi a", "hi b"]
    assert calls[-1] == ("message", {"to": "Alice", "body": "hi b"})
    assert result.provenance["2"] == ["step:1", "step:2"]


def test_plans_without_loops_keep_their_hash() -> None:
    plain = Plan.parse([{"step": "1", "tool": "channels"}])
    assert "for_each" not in plain.canonical_json()
    looped = Plan.parse(loop_plan())
    other = Plan.parse(loop_plan(max_items=6))
    assert looped.hash != other.hash
    assert '"max_items":5' in looped.canonical_json()


def test_item_number_is_the_items_position_labelled_like_the_list() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    plan = Plan.parse(
        [
            {"step": "1", "tool": "members"},
            {
                "step": "2",
                "tool": "message",
                "for_each": "{{steps.1.output}}",
                "max_items": 10,
                "args": {"to": "{{item.name}}", "body": "You are number {{item_number}}."},
            },
        ]
    )
    journal = memory_journal()
    policy = Policy(effects={"send": "allow"}, untrusted_to_sensitive="allow")
    result = run_sync(plan, office(calls), policy=policy, journal=journal)
    assert result.ok
    assert [a["body"] for c, a in calls if c == "message"] == [
        "You are number 1.",
        "You are number 2.",
    ]
    started = [
        e.data for e in journal.events() if e.kind == "step_started" and e.data["step"] == "2"
    ]
    # the position is data of the list (step 1's whole output, untrusted here)
    assert all(e["provenance"]["body"] == ["plan", "step:1"] for e in started)
    assert [f.param for f in assess(plan, office([]), policy).flows] == ["body"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"channel": "{{item_number}}"}, ("invalid_arg", "$.steps[1].args.channel")),
        ({"channel": "c{{item_number}}"}, None),
    ],
)
def test_item_number_is_an_integer_for_type_checks(
    args: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    found = codes(loop_plan(**args))
    assert (expected in found) if expected else found == []


def test_item_number_outside_a_loop_or_with_a_path_is_refused() -> None:
    plan = [{"step": "1", "tool": "read_channel", "args": {"channel": "n{{item_number}}"}}]
    assert ("item_outside_loop", "$.steps[0].args.channel") in codes(plan)
    assert ("malformed_placeholder", "$.steps[1].args.channel") in codes(
        loop_plan(channel="{{item_number.x}}")
    )
