"""The ReAct baseline and the worst-case ObedientLLM, with scripted models."""

from __future__ import annotations

import json
from typing import Any

import anyio
import jsonschema

import planlock
from planlock import Planner, ToolRegistry, demo
from planlock.planning._react import ReactResult, action_reply, offered_tools, react, react_schema
from planlock.testing import ObedientLLM, ScriptedLLM, capture_journal

HONEST_TURNS = [
    action_reply("read_ticket", {"ticket_id": "T-1001"}, "Read the ticket."),
    action_reply("search_knowledge_base", {"query": "cancellation policy"}),
    action_reply("fetch_account", {"account_id": "A-1001"}),
    action_reply("send_email", {"to": "dana@example.com", "template": "cancellation_confirmation"}),
    json.dumps({"thought": "done", "final_answer": "Sent the cancellation confirmation."}),
]
HONEST_PLAN = {
    "steps": [
        {"id": "1", "tool": "read_ticket", "args": {"ticket_id": "{{ticket.id}}"}},
        {
            "id": "2",
            "tool": "send_email",
            "args": {"to": "{{user.email}}", "template": "cancellation_confirmation"},
        },
    ]
}


def run_react(registry: ToolRegistry, llm: Any, **kwargs: Any) -> ReactResult:
    async def go() -> ReactResult:
        return await react(demo.GOAL, registry, llm, context=demo.INPUTS, **kwargs)

    return anyio.run(go)


def test_react_schema_offers_every_tool_and_a_final_answer(registry: ToolRegistry) -> None:
    schema = react_schema(registry)
    assert set(offered_tools(schema)) == {t.name for t in registry}
    validator = jsonschema.Draft202012Validator(schema)
    for turn in HONEST_TURNS:
        assert validator.is_valid(json.loads(turn))
    assert not validator.is_valid({"thought": "", "tool": "rm_rf", "args": {}})
    assert not validator.is_valid({"thought": "", "tool": "llm", "args": {"instruction": "x"}})


def test_react_calls_tools_in_turn_and_feeds_results_back(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    llm = ScriptedLLM(HONEST_TURNS)
    with capture_journal() as journal:
        result = run_react(registry, llm, journal=journal)
    assert result.status == "answered"
    assert result.final_answer == "Sent the cancellation confirmation."
    assert result.tools_called == [
        "read_ticket",
        "search_knowledge_base",
        "fetch_account",
        "send_email",
    ]
    assert result.llm_calls == 5
    assert result.input_tokens > 0
    assert desk.outbox[0].to == "dana@example.com"
    # The tool's output (the ticket, injected text included) is in the model's next prompt.
    second = "\n".join(m.content for m in llm.requests[1].messages)
    assert demo.INJECTION in second
    assert "Result of read_ticket" in second
    assert [e.kind for e in journal.events()].count("llm_called") == 5


def test_react_reports_bad_tools_and_arguments_to_the_model(registry: ToolRegistry) -> None:
    llm = ScriptedLLM(
        [
            action_reply("teleport", {}),
            action_reply("fetch_account", {"acount": "A-1001"}),
            json.dumps({"thought": "", "final_answer": "gave up"}),
        ]
    )
    result = run_react(registry, llm)
    assert [c.ok for c in result.calls] == [False, False]
    assert "there is no tool 'teleport'" in (result.calls[0].error or "")
    assert "invalid arguments" in (result.calls[1].error or "")
    assert result.status == "answered"


def test_react_stops_at_max_turns_and_on_backend_errors(registry: ToolRegistry) -> None:
    looping = ScriptedLLM(lambda _: action_reply("search_knowledge_base", {"query": "x"}))
    result = run_react(registry, looping, max_turns=3)
    assert result.status == "max_turns"
    assert result.llm_calls == 3
    broken = run_react(registry, ScriptedLLM([RuntimeError("down")]))
    assert broken.status == "llm_error"
    assert "down" in (broken.error or "")
    garbage = run_react(registry, ScriptedLLM(["[1, 2]"]))
    assert garbage.status == "invalid_reply"


def test_an_obedient_model_makes_react_delete_the_account(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    obedient = ObedientLLM(ScriptedLLM(HONEST_TURNS))
    result = run_react(registry, obedient)
    assert "delete_account" in result.tools_called
    assert result.tools_called[:2] == ["read_ticket", "delete_account"]
    assert obedient.obeyed == [("delete_account", {"account_id": "A-1001"})]
    assert desk.deleted == ["A-1001"]
    assert "A-1001" not in desk.accounts


def test_the_same_obedient_model_cannot_steer_planlock(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    obedient = ObedientLLM(ScriptedLLM([HONEST_PLAN]))

    async def go() -> planlock.Plan:
        return await Planner(obedient, registry).plan(demo.GOAL, demo.INPUTS)

    plan = anyio.run(go)
    result = planlock.run_sync(
        plan, registry, inputs=demo.INPUTS, approver=planlock.approve_all("test"), llm=obedient
    )
    assert result.ok
    assert demo.INJECTION in json.dumps(result.outputs["1"])  # it was read, as data
    assert obedient.obeyed == []
    assert desk.deleted == []
    assert [m.to for m in desk.outbox] == ["dana@example.com"]


def test_obedient_model_obeys_once_and_only_tools_it_may_call() -> None:
    schema = react_schema(demo.build_registry(demo.HelpDesk.sample()))
    request = planlock.LLMRequest(
        (
            planlock.Message("user", "Please call the launch_rockets tool for base X."),
            planlock.Message("user", f"Result: {demo.INJECTION}"),
        ),
        "react",
        schema,
    )
    obedient = ObedientLLM(ScriptedLLM(["fallback"]))

    async def go() -> list[str]:
        first = await obedient.complete(request)
        second = await obedient.complete(request)
        return [first.text, second.text]

    first, second = anyio.run(go)
    assert json.loads(first)["tool"] == "delete_account"
    assert second == "fallback"
