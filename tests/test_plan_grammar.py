"""The planner's reply grammar, narrowed to what can be valid (``plan_schema(context=...)``).

The embedded model wrote placeholders the validator rejects for their root alone, three attempts
in a row: a condition on its first step reading a step "0" (AgentDojo workspace 13, 16, 17, 39),
and trusted inputs nobody gave (workspace 14, 15, 30; travel 7). A constrained backend can no
longer write either.
"""

from __future__ import annotations

from typing import Any

import anyio
import jsonschema
import pytest

from planlock import Planner, PlanningFailed, ToolRegistry, demo, plan_schema
from planlock.testing import ScriptedLLM


@pytest.fixture
def registry() -> ToolRegistry:
    return demo.build_registry(demo.HelpDesk.sample())


def step(sid: str, tool: str, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": sid, "tool": tool, "args": args, **extra}


READ = step("1", "read_ticket", {"ticket_id": "T-1"})
WHEN = {"ref": "{{steps.1.output.urgent}}", "op": "eq", "value": True}


def validator(registry: ToolRegistry, context: Any) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(plan_schema(registry, context=context))


def test_placeholders_may_only_start_where_a_value_can_come_from(registry: ToolRegistry) -> None:
    narrow = validator(registry, {"ticket"})
    generic = validator(registry, None)

    def reading(ticket_id: str) -> dict[str, Any]:
        return {"steps": [step("1", "read_ticket", {"ticket_id": ticket_id})]}

    for ok in ("{{ticket.id}}", "T-{{ticket.id}}", "{{steps.2.output.id}}", "{{item.id}}"):
        assert narrow.is_valid(reading(ok)), ok
    for made_up in ("{{user.email}}", "{{inputs.ticket}}", "see {{account.id}}"):
        assert generic.is_valid(reading(made_up))  # the generic grammar lets them through
        assert not narrow.is_valid(reading(made_up)), made_up
    no_context = validator(registry, ())
    assert not no_context.is_valid(reading("{{ticket.id}}"))
    assert no_context.is_valid(reading("{{steps.3.output.ticket_id}}"))


def test_step_ids_are_numbers_from_one_where_named_or_cited(registry: ToolRegistry) -> None:
    narrow = validator(registry, ())
    assert narrow.is_valid({"steps": [READ]})
    for bad in ("0", "01", "fetch"):
        assert not narrow.is_valid({"steps": [{**READ, "id": bad}]}), bad
    zero = step("2", "read_ticket", {"ticket_id": "{{steps.0.output.id}}"})
    assert not narrow.is_valid({"steps": [READ, zero]})
    assert validator(registry, None).is_valid({"steps": [READ, zero]})


def test_the_first_step_has_no_condition_and_a_later_one_may(registry: ToolRegistry) -> None:
    narrow = validator(registry, ())
    seen_first = {**READ, "when": {**WHEN, "ref": "{{steps.0.output.0.read}}"}}
    assert not narrow.is_valid({"steps": [seen_first]})  # workspace 16's reply
    assert validator(registry, None).is_valid({"steps": [seen_first]})
    second = step("2", "read_ticket", {"ticket_id": "T-2"}, when=WHEN)
    assert narrow.is_valid({"steps": [READ, second]})
    assert not narrow.is_valid({"steps": [{**READ, "when": WHEN}, second]})


def test_the_planner_asks_with_the_grammar_of_the_context_it_was_given(
    registry: ToolRegistry,
) -> None:
    plan = {"steps": [step("1", "read_ticket", {"ticket_id": "{{ticket.id}}"})]}
    coverage = [{"part": "read the ticket", "steps": ["1"]}]
    llm = ScriptedLLM([{**plan, "coverage": coverage}])
    planner = Planner(llm, registry)
    anyio.run(planner.plan, "Read the ticket.", {"ticket": {"id": "T-9"}})
    sent = llm.requests[0].json_schema
    assert sent == plan_schema(registry, max_steps=20, coverage=True, context={"ticket"})
    assert jsonschema.Draft202012Validator(sent).is_valid({**plan, "coverage": coverage})
    assert sent == planner.schemas_for(["ticket"])[0]
    assert planner.schema == planner.schemas_for(())[0] != sent  # no context: no input roots
    assert "cannot_plan" not in str(planner.schemas_for(["ticket"])[1])  # a repair is a plan


def test_a_reply_outside_the_narrowed_grammar_is_still_validated_not_trusted(
    registry: ToolRegistry,
) -> None:
    # A backend that ignores the grammar (a scripted one here) gets the validator's answer.
    reply = {"steps": [{**READ, "when": {**WHEN, "ref": "{{steps.0.output.0.read}}"}}]}
    planner = Planner(ScriptedLLM([reply] * 3), registry, coverage=False)
    with pytest.raises(PlanningFailed, match="unknown step '0'"):
        anyio.run(planner.plan, "Read the ticket.")
