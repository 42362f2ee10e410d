"""Grounding (``Policy.ungrounded_literal``): a literal in a sensitive parameter of a side-effecting
step that the goal does not give goes to a person on the plan. Found by the embedded planner on
AgentDojo: it paid 100 to an IBAN it made up, with a policy that lets payments run unasked."""

from __future__ import annotations

from typing import Any

import pytest

from planlock import Plan, Policy, ToolRegistry, assess, run_sync
from planlock.errors import ApprovalRequired
from planlock.policy import ungrounded
from planlock.validation import analyse

RELAXED = {"effects": {"pay": "allow", "send": "allow", "write": "allow"}}
"""A policy that lets the plan's own writes run: where a made-up literal would run unseen."""


def registry(paid: list[tuple[str, float]] | None = None) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="pay")
    def send_money(recipient: str, amount: float, subject: str = "") -> str:
        """Pay (every parameter sensitive: the sink default)."""
        if paid is not None:
            paid.append((recipient, amount))
        return "ok"

    @reg.tool(effect="send", free=["body"])
    def email(to: list[str], body: str) -> str:
        """Send an email."""
        return "sent"

    @reg.tool(effect="read")
    def lookup(name: str) -> str:
        """A read: its literals are never asked about."""
        return name

    return reg


def pay_plan(goal: str, recipient: str, amount: float) -> Plan:
    args = {"recipient": recipient, "amount": amount, "subject": "rent"}
    return Plan.parse(
        {"version": 1, "goal": goal, "steps": [{"id": "p", "tool": "send_money", "args": args}]}
    )


GOAL = "Pay my rent of 1,100.50 to DE89370400440532013000, subject rent"


def reasons(plan: Plan, policy: Policy) -> list[tuple[str, str]]:
    report = assess(plan, registry(), policy)
    return [(r.key, r.action) for s in report.needs_plan_approval for r in s.reasons]


def test_literals_the_goal_gives_run_without_a_person() -> None:
    policy = Policy.model_validate({**RELAXED, "ungrounded_literal": "require_approval"})
    plan = pay_plan(GOAL, "de89370400440532013000", 1100.5)  # case aside; 1,100.50 is 1100.5
    assert reasons(plan, policy) == []
    paid: list[tuple[str, float]] = []
    assert run_sync(plan, registry(paid), policy=policy).status == "succeeded"
    assert paid == [("de89370400440532013000", 1100.5)]


@pytest.mark.parametrize(
    ("recipient", "amount", "param"),
    [
        ("GB29NWBK60161331926819", 1100.5, "recipient"),  # the IBAN the planner made up
        ("DE89370400440532013000", 100, "amount"),  # an amount the user never said
        ("DE8937040044", 1100.5, None),  # part of the goal's IBAN: in its words, so grounded
    ],
)
def test_a_literal_the_goal_does_not_give_needs_a_person_on_the_plan(
    recipient: str, amount: float, param: str | None
) -> None:
    policy = Policy.model_validate({**RELAXED, "ungrounded_literal": "require_approval"})
    plan = pay_plan(GOAL, recipient, amount)
    if param is None:
        assert reasons(plan, policy) == []
        return
    assert reasons(plan, policy) == [(f"literal:{param}", "require_approval")]
    paid: list[tuple[str, float]] = []
    with pytest.raises(ApprovalRequired, match="the goal does not give it"):
        run_sync(plan, registry(paid), policy=policy)
    assert paid == []  # nothing ran
    # The default keeps a hand-written plan's literals its author's.
    assert reasons(plan, Policy.model_validate(RELAXED)) == []
    # And deny refuses the plan outright.
    denied = assess(
        plan, registry(), Policy.model_validate({**RELAXED, "ungrounded_literal": "deny"})
    )
    assert [s.step_id for s in denied.denied] == ["p"]


def test_lists_free_parameters_reads_and_placeholders() -> None:
    plan: dict[str, Any] = {
        "version": 1,
        "goal": "Email alice@example.com and look up Bob",
        "steps": [
            {"id": "l", "tool": "lookup", "args": {"name": "Carol"}},  # a read: not asked
            {
                "id": "e",
                "tool": "email",
                "args": {
                    "to": ["alice@example.com", "mallory@example.com", "{{steps.l.output}}"],
                    "body": "made-up words are fine in a free parameter",
                },
            },
        ],
    }
    step = analyse(Plan.parse(plan), registry()).steps
    assert ungrounded(step["e"], plan["goal"]) == [("to", "mallory@example.com")]
    assert ungrounded(step["l"], plan["goal"]) == []  # not sensitive
    plan["steps"][1]["args"]["to"] = ["ALICE@example.com", "{{steps.l.output}}"]
    step = analyse(Plan.parse(plan), registry()).steps
    assert ungrounded(step["e"], plan["goal"]) == []
    assert ungrounded(step["e"], None) == [("to", "ALICE@example.com")]  # no goal gives nothing


def test_the_policy_file_takes_the_setting() -> None:
    policy = Policy.from_data({"ungrounded_literal": "require_approval"})
    assert policy.ungrounded_literal == "require_approval"
    assert Policy().ungrounded_literal == "allow"
