"""The planner's deterministic repairs of references to a step's output (``planning._fix``):
the first item of a list named by its items' field, a field by a near name; kept only when the
rewritten plan is valid, journaled with the plan, and offered as a hint otherwise."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import planlock
from planlock import Planner, PlanningFailed, ToolRegistry
from planlock.planning._fix import did_you_mean, suggest_path
from planlock.testing import ScriptedLLM, capture_journal


class Event(BaseModel):
    id_: str
    title: str
    participants: list[str]


def registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def search_events(query: str) -> list[Event]:
        """Events whose title holds the query."""
        return [Event(id_="7", title=query, participants=["a@x.org"])]

    @reg.tool(effect="write")
    def reschedule(event_id: str, start: str) -> Event:
        """Move an event."""
        return Event(id_=event_id, title="moved", participants=[])

    @reg.tool(effect="send")
    def invite(event_id: str, email: str) -> str:
        """Invite someone to an event."""
        return "ok"

    return reg


def plan_with(*reply_paths: str, goal: str = "Move my dentist appointment to 10:00.") -> Any:
    return [
        {
            "steps": [
                {"id": "1", "tool": "search_events", "args": {"query": "dentist"}},
                {"id": "2", "tool": "reschedule", "args": {"event_id": p, "start": "10:00"}},
            ]
        }
        for p in reply_paths
    ]


def run(planner: Planner, goal: str = "Move my dentist appointment to 10:00.") -> planlock.Plan:
    async def go() -> planlock.Plan:
        return await planner.plan(goal, {}, run_id="r1")

    return anyio.run(go)


SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id_": {"type": "string"},
            "title": {"type": "string"},
            "recipients": {"type": "array", "items": {"type": "string"}},
        },
    },
}


@pytest.mark.parametrize(
    ("path", "fixed"),
    [
        (("id_",), ("0", "id_")),  # a list named by its items' field: the first item
        (("0", "id"), ("0", "id_")),  # a near name
        (("id",), ("0", "id_")),  # both
        (("recipient", "0"), ("0", "recipients", "0")),
        (("0", "title"), ("0", "title")),  # a path that exists is itself
        (("owner",), None),  # nothing near
        (("0", "title", "name"), ("0", "title")),  # a field of a string: the string
        (("0", "title", "x", "y"), None),  # below a string, twice
        (("id", "x", "y"), None),  # three edits away
    ],
)
def test_suggest_path(path: tuple[str, ...], fixed: tuple[str, ...] | None) -> None:
    assert suggest_path(SCHEMA, path) == fixed


def test_a_field_of_a_lists_items_is_read_from_the_first_item_without_asking_again() -> None:
    llm = ScriptedLLM(plan_with("{{steps.1.output.id}}"))
    with capture_journal() as journal:
        planner = Planner(llm, registry(), journal=journal)
        plan = run(planner)
    assert len(llm.requests) == 1  # no second call: the rewrite made the reply valid
    assert plan.steps[1].args["event_id"] == "{{steps.1.output.0.id_}}"
    assert planlock.validate(plan, registry()).ok
    note = "$.steps[1].args.event_id: '{{steps.1.output.id}}' -> '{{steps.1.output.0.id_}}'"
    assert planner.attempts[0].repaired == (note,)
    assert planner.repaired == (note,)
    assert planner.attempts[0].issues == ()
    assert planner.attempts[0].to_json()["repaired"] == [note]
    created = [e for e in journal.events() if e.kind == "plan_created"]
    assert created[0].data["repaired"] == [note]
    assert created[0].data["hash"] == plan.hash


def test_a_valid_reply_is_not_rewritten() -> None:
    llm = ScriptedLLM(plan_with("{{steps.1.output.0.id_}}"))
    with capture_journal() as journal:
        planner = Planner(llm, registry(), journal=journal)
        run(planner)
    assert planner.attempts[0].repaired == ()
    assert planner.repaired == ()
    assert "repaired" not in journal.events()[-1].data


def test_a_rewrite_that_leaves_other_issues_is_a_hint_for_the_model_not_the_plan() -> None:
    bad = plan_with("{{steps.1.output.id}}")[0]
    bad["steps"][1]["args"]["colour"] = "red"  # not fixable: an unknown parameter
    llm = ScriptedLLM([bad, *plan_with("{{steps.1.output.0.id_}}")])
    planner = Planner(llm, registry())
    plan = run(planner)
    assert len(llm.requests) == 2
    assert planner.attempts[0].repaired == ()
    assert {i.code for i in planner.attempts[0].issues} == {"bad_ref_path", "unknown_param"}
    repair = llm.requests[1].messages[-1].content
    assert "write '{{steps.1.output.0.id_}}' for '{{steps.1.output.id}}'" in repair
    assert llm.requests[1].messages[-2].content == json.dumps(bad)  # the model's own reply
    assert plan.steps[1].args["event_id"] == "{{steps.1.output.0.id_}}"


def test_a_rewrite_that_does_not_type_check_is_not_kept() -> None:
    """``participants`` is near ``participant`` but is a list: ``event_id`` takes a string, so the
    rewritten plan is still invalid, and nothing is kept."""
    llm = ScriptedLLM(plan_with(*["{{steps.1.output.0.participant}}"] * 3))
    with pytest.raises(PlanningFailed) as caught:
        run(Planner(llm, registry(), max_attempts=3))
    assert all(a.repaired == () for a in caught.value.attempts)
    assert len(llm.requests) == 3


def test_did_you_mean_ignores_other_issues_and_unknown_steps() -> None:
    plan = planlock.Plan.parse(
        {
            "steps": [
                {"id": "1", "tool": "search_events", "args": {"query": "x"}},
                {"id": "2", "tool": "invite", "args": {"event_id": "{{steps.9.output.id}}"}},
            ]
        }
    )
    report = planlock.validate(plan, registry())
    assert {i.code for i in report.issues} >= {"unknown_step", "missing_param"}
    assert did_you_mean(plan, report.issues, registry()) == {}


def _covered(*cited: str) -> dict[str, Any]:
    reply: dict[str, Any] = plan_with("{{steps.1.output.0.id_}}")[0]
    reply["coverage"] = [{"part": "move my dentist appointment", "steps": list(cited)}]
    return reply


def test_a_coverage_citation_of_a_step_that_does_not_exist_is_dropped() -> None:
    llm = ScriptedLLM([_covered("2", "14")])
    planner = Planner(llm, registry())
    plan = run(planner)
    assert len(llm.requests) == 1
    assert [c.steps for c in plan.coverage] == [("2",)] or [
        list(c.steps) for c in plan.coverage
    ] == [["2"]]
    assert planner.repaired == ("$.coverage[0].steps: dropped '14' (no such step)",)


def test_a_part_left_with_no_step_is_a_coverage_warning_the_model_repairs() -> None:
    llm = ScriptedLLM([_covered("14"), _covered("2")])
    planner = Planner(llm, registry())
    plan = run(planner)
    assert len(llm.requests) == 2  # the part was uncovered once its citation was dropped
    assert [w.code for w in planner.attempts[0].warnings] == ["uncovered_part"]
    assert "no step serves 'move my dentist appointment'" in llm.requests[1].messages[-1].content
    assert planner.repaired == ()
    assert [list(c.steps) for c in plan.coverage] == [["2"]]


def test_fields_that_say_nothing_are_dropped_and_journaled() -> None:
    """Workspace 16's reply under the narrowed grammar: ``max_items`` on steps with no loop and
    ``"choices": {}`` on the llm step, three attempts in a row. Both are dropped: the one bounds
    no loop, the other constrains no field."""
    reply = plan_with("{{steps.1.output.0.id_}}")[0]
    reply["steps"][0]["max_items"] = 100
    reply["steps"].append(
        {
            "id": "3",
            "tool": "llm",
            "args": {"instruction": "Say when.", "input": "{{steps.2.output}}", "choices": {}},
        }
    )
    llm = ScriptedLLM([reply])
    with capture_journal() as journal:
        planner = Planner(llm, registry(), journal=journal)
        plan = run(planner)
    assert len(llm.requests) == 1
    assert plan.steps[0].max_items is None
    assert "choices" not in plan.steps[2].args
    assert planner.repaired == (
        "$.steps[0].max_items: dropped 100 (no for_each)",
        "$.steps[2].args.choices: dropped {} (no field to constrain)",
    )
    created = next(e for e in journal.events() if e.kind == "plan_created")
    assert created.data["repaired"] == list(planner.repaired)


def test_a_choices_that_says_something_wrong_is_left_to_the_model() -> None:
    """A non-empty ``choices`` of fixed values is an issue for the model (it would constrain the
    answer, so dropping it would change the plan's meaning)."""
    reply = plan_with("{{steps.1.output.0.id_}}")[0]
    llm_step = {"instruction": "Pick.", "input": "{{steps.2.output}}", "choices": ["a", "b"]}
    reply["steps"].append({"id": "3", "tool": "llm", "args": llm_step})
    planner = Planner(ScriptedLLM([reply] * 3), registry())
    with pytest.raises(PlanningFailed, match="choices"):
        run(planner)
    assert planner.attempts[0].repaired == ()


def _names_registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def list_hotels(city: str) -> list[str]:
        """The hotels of a city."""
        return [f"{city} Inn"]

    @reg.tool(effect="read")
    def prices(hotel_names: list[str]) -> dict[str, str]:
        """Price ranges of hotels."""
        return dict.fromkeys(hotel_names, "100-200")

    @reg.tool(effect="read")
    def address(hotel_name: str) -> str:
        """A hotel's address."""
        return "1 Main St"

    return reg


def _hotels(**args: Any) -> dict[str, Any]:
    ((tool, value),) = args.items()
    param = "hotel_names" if tool == "prices" else "hotel_name"
    return {
        "steps": [
            {"id": "1", "tool": "list_hotels", "args": {"city": "Paris"}},
            {"id": "2", "tool": tool, "args": {param: value}},
        ]
    }


@pytest.mark.parametrize(
    ("tool", "value", "fixed", "how"),
    [
        # Travel 19: a list parameter given a list of the list step 1 returns.
        ("prices", ["{{steps.1.output}}"], "{{steps.1.output}}", "the list itself"),
        # Travel 10: a list where one value is wanted.
        ("address", "{{steps.1.output}}", "{{steps.1.output.0}}", "the first item"),
    ],
)
def test_a_list_of_the_wrong_shape_is_rewritten_without_asking_again(
    tool: str, value: Any, fixed: str, how: str
) -> None:
    llm = ScriptedLLM([_hotels(**{tool: value})])
    planner = Planner(llm, _names_registry())
    plan = run(planner, "Hotels in Paris.")
    assert len(llm.requests) == 1
    param = "hotel_names" if tool == "prices" else "hotel_name"
    assert plan.steps[1].args[param] == fixed
    was = f"['{value[0]}']" if isinstance(value, list) else f"'{value}'"
    assert planner.repaired == (f"$.steps[1].args.{param}: {was} -> '{fixed}' ({how})",)


@pytest.mark.parametrize(
    "value",
    [
        ["{{steps.1.output}}", "Ritz"],  # one of several items: nothing to guess
        "{{steps.1.output[*]}}",  # every item, said on purpose
    ],
)
def test_lists_that_are_not_unwrapped_are_left_to_the_model(value: Any) -> None:
    tool = "prices" if isinstance(value, list) else "address"
    planner = Planner(ScriptedLLM([_hotels(**{tool: value})] * 3), _names_registry())
    with pytest.raises(PlanningFailed):
        run(planner, "Hotels in Paris.")
    assert all(a.repaired == () for a in planner.attempts)


def test_one_value_where_a_list_is_wanted_is_a_list_of_it_after_its_path_is_fixed() -> None:
    """Travel 3's reply: ``.0.name`` on a list of names, for a list parameter and for a string
    one. The path's rewrite reads the item (``.0``); for the list parameter, a second rewrite of
    what the first left makes a list of that item (what was written: one hotel's name)."""
    reply = _hotels(prices=["x"])
    reply["steps"][1]["args"]["hotel_names"] = "{{steps.1.output.0.name}}"
    reply["steps"].append(
        {"id": "3", "tool": "address", "args": {"hotel_name": "{{steps.1.output.0.name}}"}}
    )
    llm = ScriptedLLM([reply])
    planner = Planner(llm, _names_registry())
    plan = run(planner, "Prices and address of the hotels in Paris.")
    assert len(llm.requests) == 1
    assert plan.steps[1].args["hotel_names"] == ["{{steps.1.output.0}}"]
    assert plan.steps[2].args["hotel_name"] == "{{steps.1.output.0}}"
    assert planner.repaired == (
        "$.steps[1].args.hotel_names: '{{steps.1.output.0.name}}' -> '{{steps.1.output.0}}'",
        "$.steps[2].args.hotel_name: '{{steps.1.output.0.name}}' -> '{{steps.1.output.0}}'",
        (
            "$.steps[1].args.hotel_names: '{{steps.1.output.0}}' -> ['{{steps.1.output.0}}'] "
            "(a list of it)"
        ),
    )


def test_a_context_value_where_a_list_is_wanted_is_a_list_of_it() -> None:
    reply = _hotels(prices="{{hotel}}")
    llm = ScriptedLLM([reply])
    planner = Planner(llm, _names_registry())

    async def go() -> planlock.Plan:
        return await planner.plan("Prices of my hotel.", {"hotel": "Ritz"}, run_id="r1")

    plan = anyio.run(go)
    assert len(llm.requests) == 1
    assert plan.steps[1].args["hotel_names"] == ["{{hotel}}"]
    assert planner.repaired == (
        "$.steps[1].args.hotel_names: '{{hotel}}' -> ['{{hotel}}'] (a list of it)",
    )
