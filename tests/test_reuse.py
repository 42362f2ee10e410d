"""Validate and assess once: ``run`` reuses the analysis ``validate`` built for the same plan hash,
registry (same object, unchanged) and options, and the risk report for an equal policy; anything
that could change the answer is a new analysis."""

from __future__ import annotations

import anyio
import pytest

from planlock import Plan, Policy, ToolRegistry, approve_all, assess, run_sync, validate
from planlock.agent import Prepared, prepare
from planlock.journal import Journal
from planlock.validation import analysis_of, clear_analyses


def make_registry(effect: str = "read") -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(effect=effect)
    def fetch(x: int = 0) -> int:
        return x + 1

    return registry


PLAN = Plan.parse(
    {
        "goal": "g",
        "steps": [
            {"id": "a", "tool": "fetch", "args": {}},
            {"id": "b", "tool": "fetch", "args": {"x": "{{steps.a.output}}"}},
        ],
    }
)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    clear_analyses()


def test_run_reuses_the_analysis_validate_built() -> None:
    registry = make_registry()
    first = analysis_of(PLAN, registry)
    assert validate(PLAN, registry).ok
    same = Plan.parse(PLAN.canonical())  # another object, the same plan (hash)
    prepared = anyio_run_prepare(same, registry)
    assert prepared.analysis is first
    assert prepared.plan_hash == PLAN.hash
    assert run_sync(same, registry, approver=approve_all()).outputs == {"a": 1, "b": 2}


def anyio_run_prepare(plan: Plan, registry: ToolRegistry) -> Prepared:
    async def go() -> Prepared:
        return await prepare(plan, registry, Journal())

    return anyio.run(go)


def test_a_tool_added_since_is_a_new_analysis() -> None:
    """Attack: a plan found invalid must not stay invalid (or valid) from a stale analysis."""
    registry = ToolRegistry()
    assert not validate(PLAN, registry).ok  # unknown tool

    @registry.tool(effect="read")
    def fetch(x: int = 0) -> int:
        return x

    assert validate(PLAN, registry).ok


def test_another_registry_with_the_same_names_is_not_reused() -> None:
    """Attack: same tool names, another effect. The risk must come from the registry given."""
    read, send = make_registry("read"), make_registry("send")
    assert analysis_of(PLAN, read) is not analysis_of(PLAN, send)
    assert assess(analysis_of(PLAN, send)).needs_plan_approval
    assert not assess(analysis_of(PLAN, read)).needs_plan_approval


def test_options_are_part_of_the_key() -> None:
    registry = make_registry()
    base = analysis_of(PLAN, registry)
    assert analysis_of(PLAN, registry, max_steps=5) is base  # a limit that changes nothing
    limited = analysis_of(PLAN, registry, max_steps=1)
    assert limited is not base
    assert [i.code for i in limited.issues] == ["too_many_steps"]
    assert analysis_of(PLAN, registry, inputs={"k": 1}) is base  # it reads no input
    assert analysis_of(PLAN, registry, forbidden_tools={"fetch"}).issues


def test_the_risk_report_is_kept_per_policy() -> None:
    registry = make_registry()
    analysis = analysis_of(PLAN, registry)
    report = assess(analysis, policy=Policy())
    assert assess(analysis, policy=Policy()) is report  # an equal policy: the same report
    strict = Policy(effects={"read": "require_approval"})
    assert assess(analysis, policy=strict) is not report
    assert assess(analysis, policy=strict).needs_plan_approval


def test_inputs_count_for_a_plan_that_reads_them() -> None:
    """Attack: validated without inputs (references to inputs unchecked), then run with inputs
    that lack the one it reads: the run must see the problem, not the earlier analysis."""
    registry = make_registry()
    plan = Plan.parse(
        {"goal": "g", "steps": [{"id": "a", "tool": "fetch", "args": {"x": "{{user.n}}"}}]}
    )
    assert validate(plan, registry).ok
    assert [i.code for i in validate(plan, registry, inputs={"other": 1}).issues]
    assert validate(plan, registry, inputs={"user": {"n": 1}}).ok
    assert analysis_of(plan, registry, inputs={"user": {"n": 1}}) is not analysis_of(
        plan, registry, inputs={"user": {"n": 2}}
    )
