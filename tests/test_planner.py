"""The planner with the scripted backend: schema generation, prompt (R1), repair loop, journal."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

import planlock
from planlock import (
    CannotPlan,
    LLMError,
    LLMRequest,
    Planner,
    PlanningFailed,
    ToolRegistry,
    UsageError,
    demo,
    plan_schema,
)
from planlock.planning._plan_schema import PLACEHOLDER_SCHEMA
from planlock.planning._prompt import context_shape, type_text
from planlock.planning._shortcuts import plan_sync
from planlock.testing import ScriptedLLM, capture_journal

GOOD = {
    "steps": [
        {"id": "1", "tool": "read_ticket", "args": {"ticket_id": "{{ticket.id}}"}},
        {"id": "2", "tool": "fetch_account", "args": {"account_id": "{{user.account_id}}"}},
        {
            "id": "3",
            "tool": "send_email",
            "args": {
                "to": "{{user.email}}",
                "template": "cancellation_confirmation",
                "context": {"name": "{{steps.2.output.name}}"},
            },
        },
    ]
}
UNKNOWN_TOOL = {"steps": [{"id": "1", "tool": "refund_customer", "args": {"amount": 10}}]}


def run_planner(planner: Planner, goal: str = demo.GOAL, **kwargs: Any) -> planlock.Plan:
    return plan_sync_with(planner, goal, **kwargs)


def plan_sync_with(planner: Planner, goal: str, **kwargs: Any) -> planlock.Plan:
    import anyio

    async def go() -> planlock.Plan:
        return await planner.plan(goal, kwargs.get("context", demo.INPUTS), run_id="r1")

    return anyio.run(go)


# --------------------------------------------------------------------------------------------
# The plan's JSON Schema


def branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    plan_branch = schema["anyOf"][0] if "anyOf" in schema else schema
    items: list[dict[str, Any]] = plan_branch["properties"]["steps"]["items"]["anyOf"]
    return items


def test_schema_has_one_branch_per_tool_with_the_name_fixed(registry: ToolRegistry) -> None:
    schema = plan_schema(registry)
    names = [b["properties"]["tool"]["const"] for b in branches(schema)]
    assert names == [*sorted(t.name for t in registry), "llm"]
    send = next(b for b in branches(schema) if b["properties"]["tool"]["const"] == "send_email")
    args = send["properties"]["args"]
    assert args["required"] == ["to", "template"]
    assert args["additionalProperties"] is False
    assert set(args["properties"]) == {"to", "template", "context"}


def test_schema_accepts_valid_plans_and_rejects_unknown_tools_and_params(
    registry: ToolRegistry,
) -> None:
    validator = jsonschema.Draft202012Validator(plan_schema(registry))
    assert validator.is_valid(GOOD)
    assert validator.is_valid({"steps": demo.PLAN["steps"]})
    assert validator.is_valid({"cannot_plan": "no tool books flights"})
    assert not validator.is_valid(UNKNOWN_TOOL)
    extra = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "A", "x": 1}}]}
    assert not validator.is_valid(extra)
    assert not validator.is_valid({"steps": []})  # at least one step, or cannot_plan
    assert not validator.is_valid({"steps": GOOD["steps"], "cannot_plan": "both"})
    bounded = jsonschema.Draft202012Validator(plan_schema(registry, max_steps=2))
    assert not bounded.is_valid(GOOD)  # three steps
    assert bounded.is_valid({"steps": GOOD["steps"][:2]})


def test_schema_without_the_refusal_or_the_llm_step(registry: ToolRegistry) -> None:
    schema = plan_schema(registry, llm_step=False, cannot_plan=False)
    assert "anyOf" not in schema
    assert "llm" not in [b["properties"]["tool"]["const"] for b in branches(schema)]
    assert not jsonschema.Draft202012Validator(schema).is_valid({"cannot_plan": "x"})


class Window(BaseModel):
    start: int
    end: int


def typed_registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def count(n: int, tags: list[int], window: Window | None = None) -> int:
        """Count."""
        return n

    return reg


def test_placeholders_are_allowed_where_a_non_string_value_is_expected() -> None:
    schema = plan_schema(typed_registry())
    validator = jsonschema.Draft202012Validator(schema)

    def step(args: dict[str, Any]) -> dict[str, Any]:
        return {"steps": [{"id": "1", "tool": "count", "args": args}]}

    assert validator.is_valid(step({"n": 3, "tags": [1, 2]}))
    assert validator.is_valid(step({"n": "{{steps.0.output.n}}", "tags": "{{input.tags}}"}))
    assert validator.is_valid(step({"n": 1, "tags": [1, "{{x.y}}"]}))
    assert validator.is_valid(step({"n": 1, "tags": [], "window": {"start": "{{w.s}}", "end": 2}}))
    assert not validator.is_valid(step({"n": "three", "tags": []}))  # not a placeholder
    assert not validator.is_valid(step({"n": "{{a}} and {{b}}", "tags": []}))  # not whole


def test_nested_model_definitions_are_hoisted_under_the_tool_name() -> None:
    schema = plan_schema(typed_registry())
    conditions = {"when__Compare", "when__AllOf", "when__AnyOf", "when__Not"}  # a step's when
    assert set(schema["$defs"]) == {"count__Window", *conditions}
    assert set(plan_schema(typed_registry(), conditions=False)["$defs"]) == {"count__Window"}
    text = json.dumps(schema)
    assert '"#/$defs/count__Window"' in text
    assert '"#/$defs/Window"' not in text
    assert '"title"' not in text


def test_llm_step_instruction_and_output_schema_are_fixed_by_the_plan(
    registry: ToolRegistry,
) -> None:
    validator = jsonschema.Draft202012Validator(plan_schema(registry))

    def llm_step(args: dict[str, Any]) -> dict[str, Any]:
        return {"steps": [{"id": "1", "tool": "llm", "args": args}]}

    ok = {"instruction": "Summarise.", "input": "{{steps.1.output.body}}"}
    assert validator.is_valid(llm_step(ok))
    assert validator.is_valid(llm_step({**ok, "output_schema": {"type": "string"}}))
    assert not validator.is_valid(llm_step({**ok, "instruction": "Mail {{user.email}}"}))
    assert not validator.is_valid(llm_step({**ok, "output_schema": "{{steps.1.output}}"}))


def test_string_arguments_only_hold_well_formed_placeholders(registry: ToolRegistry) -> None:
    validator = jsonschema.Draft202012Validator(plan_schema(registry))

    def email(to: str) -> dict[str, Any]:
        return {"steps": [{"id": "1", "tool": "send_email", "args": {"to": to, "template": "t"}}]}

    assert validator.is_valid(email("{{user.email}}"))
    assert validator.is_valid(email("Dana <{{steps.2.output.items.0.email}}>"))
    assert not validator.is_valid(email("{{steps.1.output[0].email}}"))
    assert not validator.is_valid(email("{user.email}"))
    assert not validator.is_valid(email("{{user.email}"))

    def context(value: Any) -> dict[str, Any]:
        args = {"to": "x", "template": "t", "context": {"k": value}}
        return {"steps": [{"id": "1", "tool": "send_email", "args": args}]}

    assert validator.is_valid(context("{{steps.1.output}}"))
    assert validator.is_valid(context(3))
    assert validator.is_valid(context({"nested": True}))
    assert not validator.is_valid(context("{{steps.1.output[0]}}"))  # Any, but text is checked


def test_placeholder_pattern() -> None:
    pattern = jsonschema.Draft202012Validator(PLACEHOLDER_SCHEMA)
    assert pattern.is_valid("{{steps.2.output.items.0.id}}")
    assert not pattern.is_valid("{{ }}")
    assert not pattern.is_valid("x {{a}}")


# --------------------------------------------------------------------------------------------
# The prompt: trusted input only (R1)


def test_prompt_holds_goal_tools_and_context_shapes_but_no_values(registry: ToolRegistry) -> None:
    llm = ScriptedLLM([GOOD])
    context = {"ticket": {"id": "T-9"}, "user": {"account_id": "ZZ-777", "email": "s@corp.example"}}
    run_planner(Planner(llm, registry), context=context)
    system, user = llm.requests[0].messages
    assert system.role == "system"
    assert "send_email(to: string, template: string" in system.content
    assert "effect: delete. Delete a customer account" in system.content
    assert "-> {account_id: string, name: string, email: string, plan: string}" in system.content
    assert demo.GOAL in user.content
    assert "{{user.email}}: string" in user.content
    assert "{{ticket.id}}: string" in user.content
    for value in ("ZZ-777", "s@corp.example", "T-9"):
        assert value not in system.content
        assert value not in user.content
    assert llm.requests[0].purpose == "plan"
    assert llm.requests[0].json_schema == plan_schema(
        registry, max_steps=20, coverage=True, context=context
    )


def test_no_tool_output_ever_reaches_a_planner_prompt(registry: ToolRegistry) -> None:
    # Plan, run the plan (its tools return the injected ticket, the account, the KB), then plan
    # again: no planner request ever holds any tool output.
    llm = ScriptedLLM([GOOD, GOOD])
    planner = Planner(llm, registry)
    plan = run_planner(planner)
    result = planlock.run_sync(
        plan, registry, inputs=demo.INPUTS, approver=planlock.approve_all("test")
    )
    assert result.ok
    outputs = json.dumps(result.outputs)
    assert demo.INJECTION in outputs
    run_planner(planner, "Send Dana the cancellation confirmation again.")
    prompts = "\n".join(llm.prompts)
    for leaked in (demo.INJECTION, "Dana Reyes", "M-1", "cancellation_confirmation to"):
        assert leaked not in prompts


def test_context_shape_names_types_never_values() -> None:
    shape = context_shape({"user": {"id": "A-1", "tags": ["a"], "age": 3}, "flag": True})
    assert shape == [
        "- {{user.id}}: string",
        "- {{user.tags}}: [string, ...]",
        "- {{user.age}}: number",
        "- {{flag}}: boolean",
    ]


def test_type_text_renders_schemas_compactly() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"$ref": "#/$defs/X"}}},
        "$defs": {"X": {"type": "object", "properties": {"id": {"type": "integer"}}}},
    }
    assert type_text(schema, schema) == "{a: [{id: integer}, ...]}"
    assert type_text({"enum": ["x", "y"]}, {}) == '"x" | "y"'


# --------------------------------------------------------------------------------------------
# Parsing, validation and the repair loop


def test_a_valid_first_reply_is_the_plan_and_is_journaled(registry: ToolRegistry) -> None:
    llm = ScriptedLLM([GOOD])
    with capture_journal() as journal:
        plan = run_planner(Planner(llm, registry, journal=journal))
    assert [s.tool for s in plan.steps] == ["read_ticket", "fetch_account", "send_email"]
    assert plan.goal == demo.GOAL
    assert planlock.validate(plan, registry, inputs=demo.INPUTS).ok
    events = journal.events()
    assert [e.kind for e in events] == ["llm_called", "plan_created"]
    call = events[0].data
    assert call["purpose"] == "plan"
    assert call["backend"] == "scripted"
    assert call["messages"][1]["content"].startswith("Goal: ")
    assert call["reply"] == json.dumps(GOOD)
    assert call["input_tokens"] > 0
    assert call["output_tokens"] > 0
    assert call["latency_s"] >= 0
    assert events[1].data["hash"] == plan.hash
    assert events[1].data["attempt"] == 1
    assert {e.run_id for e in events} == {"r1"}


def test_an_invalid_plan_is_sent_back_with_its_issues_and_repaired(registry: ToolRegistry) -> None:
    llm = ScriptedLLM([UNKNOWN_TOOL, GOOD])
    with capture_journal() as journal:
        planner = Planner(llm, registry, journal=journal)
        plan = run_planner(planner)
    assert len(plan.steps) == 3
    assert len(llm.requests) == 2
    repair = llm.requests[1].messages
    assert [m.role for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2].content == json.dumps(UNKNOWN_TOOL)
    assert "$.steps[0].tool: unknown tool 'refund_customer'" in repair[3].content
    # A repair must be a plan: the refusal branch is gone from the second request's schema.
    first_schema, second_schema = (r.json_schema for r in llm.requests)
    assert first_schema is not None
    assert second_schema is not None
    assert "cannot_plan" in json.dumps(first_schema)
    assert "cannot_plan" not in json.dumps(second_schema)
    kinds = [e.kind for e in journal.events()]
    assert kinds == ["llm_called", "plan_rejected", "llm_called", "plan_created"]
    rejected = journal.events()[1].data
    assert rejected["issues"][0]["code"] == "unknown_tool"
    assert rejected["attempt"] == 1
    assert [a.number for a in planner.attempts] == [1, 2]


def test_not_json_and_unknown_inputs_are_issues_too(registry: ToolRegistry) -> None:
    ghost = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "{{boss.id}}"}}]}
    llm = ScriptedLLM(["{not json", ghost, GOOD])
    planner = Planner(llm, registry)
    run_planner(planner)
    assert [[i.code for i in a.issues] for a in planner.attempts] == [
        ["not_json"],
        ["unknown_input"],
        [],
    ]


def test_the_attempt_limit_raises_with_every_attempts_issues(registry: ToolRegistry) -> None:
    missing = {"steps": [{"id": "1", "tool": "send_email", "args": {"to": "{{user.email}}"}}]}
    llm = ScriptedLLM([UNKNOWN_TOOL, missing, "[]", GOOD])
    with capture_journal() as journal, pytest.raises(PlanningFailed) as caught:
        run_planner(Planner(llm, registry, journal=journal, max_attempts=3))
    exc = caught.value
    assert isinstance(exc, planlock.PlanInvalid)
    assert len(llm.requests) == 3  # the fourth reply is never asked for
    assert [[i.code for i in a.issues] for a in exc.attempts] == [
        ["unknown_tool"],
        ["missing_param"],
        ["malformed"],
    ]
    assert [i.code for i in exc.issues] == ["malformed"]
    assert "attempt 1" in str(exc)
    assert "attempt 3" in str(exc)
    assert exc.backend == "scripted"
    kinds = [e.kind for e in journal.events()]
    assert kinds == ["llm_called", "plan_rejected"] * 3
    assert "plan_created" not in kinds


def test_max_attempts_must_be_positive(registry: ToolRegistry) -> None:
    with pytest.raises(UsageError):
        Planner(ScriptedLLM([]), registry, max_attempts=0)


def test_too_many_steps_is_an_issue(registry: ToolRegistry) -> None:
    many = {
        "steps": [
            {"id": str(i), "tool": "search_knowledge_base", "args": {"query": "q"}}
            for i in range(1, 5)
        ]
    }
    planner = Planner(ScriptedLLM([many]), registry, max_steps=3, max_attempts=1)
    with pytest.raises(PlanningFailed) as caught:
        run_planner(planner)
    assert [i.code for i in caught.value.issues] == ["too_many_steps"]


# --------------------------------------------------------------------------------------------
# Bad input and backend errors: nothing runs


def test_a_goal_the_tools_cannot_serve_is_a_clear_cannot_plan(registry: ToolRegistry) -> None:
    llm = ScriptedLLM([{"cannot_plan": "no tool books flights"}, GOOD])
    with capture_journal() as journal, pytest.raises(CannotPlan) as caught:
        run_planner(Planner(llm, registry, journal=journal), "Book a flight to Paris.")
    assert caught.value.reason == "no tool books flights"
    assert "cannot plan (scripted): no tool books flights" in str(caught.value)
    assert len(llm.requests) == 1  # a refusal is not retried
    assert [e.kind for e in journal.events()] == ["llm_called", "plan_rejected"]
    assert journal.events()[1].data["cannot_plan"] == "no tool books flights"


def test_a_backend_error_names_the_backend_and_is_journaled(registry: ToolRegistry) -> None:
    llm = ScriptedLLM([RuntimeError("connection refused")], name="openai:gpt-x")
    with capture_journal() as journal, pytest.raises(LLMError) as caught:
        run_planner(Planner(llm, registry, journal=journal))
    assert caught.value.backend == "openai:gpt-x"
    assert "connection refused" in str(caught.value)
    (event,) = journal.events()
    assert event.kind == "llm_called"
    assert event.data["purpose"] == "plan"
    assert "connection refused" in event.data["error"]


class Exploding:
    name = "broken"

    async def complete(self, request: LLMRequest) -> planlock.LLMReply:
        raise ValueError("bad JSON from the wire")


def test_an_unexpected_backend_exception_becomes_an_llm_error(registry: ToolRegistry) -> None:
    with capture_journal() as journal, pytest.raises(LLMError) as caught:
        run_planner(Planner(Exploding(), registry, journal=journal))
    assert str(caught.value) == "broken: ValueError: bad JSON from the wire"
    assert journal.events()[0].data["error"] == str(caught.value)


def test_plan_sync_and_plan_helpers(registry: ToolRegistry) -> None:
    plan = plan_sync(demo.GOAL, registry, ScriptedLLM([GOOD]), context=demo.INPUTS)
    assert len(plan.steps) == 3

    async def inside() -> None:
        with pytest.raises(UsageError):
            plan_sync(demo.GOAL, registry, ScriptedLLM([GOOD]))

    import anyio

    anyio.run(inside)


def test_the_plan_schema_offers_when_without_oneof_which_the_embedded_grammar_refuses() -> None:
    # llguidance (the embedded model's constrained decoding) rejects `oneOf`: with it in the
    # schema the local model could not answer at all. `when` must still be offered.
    text = json.dumps(plan_schema(demo.build_registry(demo.HelpDesk.sample())))
    assert '"when"' in text
    assert "oneOf" not in text
