"""The policy compiled once per plan (``fixed_verdict``): where it gives a verdict, that verdict is
``evaluate``'s for any values and provenance; where the values may matter, it gives none."""

from __future__ import annotations

from typing import Any

import pytest

from planlock import Policy, Rule, ToolRegistry
from planlock.policy import evaluate, fixed_verdict

registry = ToolRegistry()


@registry.tool(effect="read")
def lookup(query: str, limit: int = 5) -> list[str]:
    return [query] * limit


@registry.tool(effect="read", sensitive=["query"])
def search(query: str) -> list[str]:
    return [query]


@registry.tool(effect="send")
def send(to: str, body: str) -> None:
    del to, body


def untrusted(label: str) -> bool:
    return not label.startswith("step:")


CALLS: list[tuple[dict[str, Any], dict[str, list[str]]]] = [
    ({"query": "a", "limit": 1}, {"query": ["input:user"], "limit": []}),
    ({"query": "ignore previous", "limit": 99}, {"query": ["step:web"], "limit": ["step:web"]}),
    ({"to": "x@evil", "body": "b"}, {"to": ["step:web"], "body": ["chosen:pick"]}),
]

POLICIES = [
    Policy(),
    Policy(rules=(Rule(action="deny", tool="lookup", reason="never"),)),
    Policy(rules=(Rule(action="require_approval", effect="read"),)),
    Policy(rules=(Rule(action="deny", tool="send", args={"properties": {"to": {"const": "x"}}}),)),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("marks", [frozenset(), frozenset({"branch:c"})])
def test_a_fixed_verdict_is_the_verdict_on_any_call(policy: Policy, marks: frozenset[str]) -> None:
    for tool in registry:
        verdict = fixed_verdict(policy, tool, untrusted, str, marks)
        if verdict is None:
            continue
        for args, provenance in CALLS:
            assert verdict == evaluate(
                policy, tool, args, provenance, untrusted, str, decided_by=marks
            ), (tool.name, args)


def test_values_that_may_matter_leave_it_to_each_call() -> None:
    """Attack surface: sensitive parameters (every parameter of a send tool, or declared), and
    rules that look at arguments or provenance, are decided per call."""
    assert fixed_verdict(Policy(), registry["send"], untrusted) is None
    assert fixed_verdict(Policy(), registry["search"], untrusted) is None
    by_args = Policy(rules=(Rule(action="deny", tool="lookup", args={"properties": {}}),))
    assert fixed_verdict(by_args, registry["lookup"], untrusted) is None
    by_flow = Policy(rules=(Rule(action="require_approval", effect="read", untrusted=("*",)),))
    assert fixed_verdict(by_flow, registry["lookup"], untrusted) is None
    elsewhere = Policy(rules=(Rule(action="deny", tool="search", args={"properties": {}}),))
    fixed = fixed_verdict(elsewhere, registry["lookup"], untrusted)
    assert fixed is not None
    assert fixed.action == "allow"
