"""The call wrapper checks arguments once, and the same way: for a tool whose parameter types
JSON already has, from the Python values (no JSON round trip), with the verdicts of strict JSON
mode; any other tool keeps the round trip (conversions to models, tuples, dates)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Annotated, Any, Literal

import anyio
import pytest
from pydantic import BaseModel, Field, ValidationError

from planlock import Plan, ToolRegistry, approve_all, run_sync
from planlock.execution import InProcessEngine, StepCall
from planlock.testing import memory_journal
from planlock.validation import analysis_of

registry = ToolRegistry()


@registry.tool(effect="read")
def plain(
    n: int,
    x: float,
    s: str,
    flag: bool,
    tags: list[str],
    m: dict[str, list[int]],
    mode: Literal["a", "b"] = "a",
    maybe: int | None = None,
) -> int:
    return n


class Point(BaseModel):
    x: int


@registry.tool(effect="read")
def rich(p: Point, when: dt.date, pair: tuple[int, int]) -> str:
    assert isinstance(p, Point)
    assert isinstance(when, dt.date)
    assert isinstance(pair, tuple)
    return "ok"


@registry.tool(effect="read")
def loose(anything: Any) -> Any:
    anything["mutated"] = True  # must not reach the step it came from
    return anything


GOOD = {"n": 1, "x": 2, "s": "s", "flag": True, "tags": ["a"], "m": {"k": [1]}}
BAD = [
    {**GOOD, "n": "1"},
    {**GOOD, "n": True},
    {**GOOD, "n": 1.5},
    {**GOOD, "tags": ["a", 1]},
    {**GOOD, "m": {"k": [True]}},
    {**GOOD, "mode": "c"},
    {**GOOD, "extra": 1},
    {k: v for k, v in GOOD.items() if k != "s"},
]


def test_which_tools_skip_the_round_trip() -> None:
    assert registry["plain"].plain_args
    assert not registry["rich"].plain_args
    assert not registry["loose"].plain_args


@pytest.mark.parametrize("args", [GOOD, *BAD])
def test_python_checks_agree_with_json_checks(args: dict[str, Any]) -> None:
    model = registry["plain"].args_model

    def verdict(check: Any) -> bool:
        try:
            check()
        except ValidationError:
            return False
        return True

    by_json = verdict(lambda: model.model_validate_json(json.dumps(args), strict=True))
    by_python = verdict(lambda: model.model_validate(args, strict=True))
    assert by_python == by_json == (args is GOOD)


def test_a_wrong_argument_still_fails_the_step_at_call_time() -> None:
    """Attack: a value of the wrong type reaching a plain tool through an earlier output."""
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def source() -> Any:
        return "not a number"

    @reg.tool(effect="read")
    def sink(n: int) -> int:
        return n

    plan = Plan.parse(
        [
            {"step": "a", "tool": "source"},
            {"step": "b", "tool": "sink", "args": {"n": "{{steps.a.output}}"}},
        ]
    )
    result = run_sync(plan, reg, journal=memory_journal(), approver=approve_all())
    assert result.failed_step == "b"
    assert result.error_kind == "invalid_arguments"


PAIR = {"pair": [1, 2]}


def test_other_tools_still_get_converted_and_isolated_values() -> None:
    plan = Plan.parse(
        [
            {
                "step": "r",
                "tool": "rich",
                "args": {"p": {"x": 1}, "when": "2026-12-05", "pair": [1, 2]},
            },
            {"step": "l1", "tool": "loose", "args": {"anything": {"k": 1}}},
            {"step": "l2", "tool": "loose", "args": {"anything": "{{steps.l1.output}}"}},
        ]
    )
    result = run_sync(plan, registry, journal=memory_journal(), approver=approve_all())
    assert result.ok, result.error
    assert result.outputs["r"] == "ok"
    assert result.outputs["l1"] == {"k": 1, "mutated": True}


class Counting:
    """A parameter's adapter that counts the values it checks at call time."""

    def __init__(self, adapter: Any) -> None:
        self.adapter, self.checked = adapter, 0

    def validate_python(self, value: Any, **kw: Any) -> Any:
        self.checked += 1
        return self.adapter.validate_python(value, **kw)

    def validate_json(self, text: str, **kw: Any) -> Any:  # the plan's check of a literal
        return self.adapter.validate_json(text, **kw)


def counted_registry() -> tuple[ToolRegistry, list[dict[str, Any]], dict[str, Counting]]:
    reg = ToolRegistry()
    seen: list[dict[str, Any]] = []

    @reg.tool(effect="read")
    def seven() -> int:
        return 7

    @reg.tool(effect="read")
    def take(n: int, label: str, limit: Annotated[int, Field(gt=0)] = 5, note: str = "none") -> int:
        seen.append({"n": n, "label": label, "limit": limit, "note": note})
        return n

    adapters = reg["take"].param_adapters
    counts = {name: Counting(adapter) for name, adapter in adapters.items()}
    adapters.update(counts)  # type: ignore[arg-type]
    return reg, seen, counts


TAKE = [
    {"step": "a", "tool": "seven"},
    {"step": "b", "tool": "take", "args": {"n": "{{steps.a.output}}", "label": "x", "limit": 3}},
]


def test_a_literal_is_checked_once_with_the_plan_a_reference_at_every_call() -> None:
    """Item 5 of issue 16: a literal was checked when the plan was validated; a call does not
    check it again. A placeholder's value exists only at call time and is checked then, and a
    parameter with a constraint of its own (``gt=0``) is checked at every call as before."""
    reg, seen, counts = counted_registry()
    plan = Plan.parse(TAKE)
    for _ in range(3):  # the same plan: its analysis (and what it found checked) is reused
        assert run_sync(plan, reg, journal=memory_journal(), approver=approve_all()).ok
    assert seen == [{"n": 7, "label": "x", "limit": 3, "note": "none"}] * 3  # as before
    assert counts["label"].checked == 1  # once, for the whole analysis, on first use
    assert counts["n"].checked == 3
    assert counts["limit"].checked == 3
    assert counts["note"].checked == 0  # a default is not checked, as by the model


def test_a_call_whose_value_is_not_the_checked_literal_is_checked() -> None:
    """Attack: an engine (or a restored call) hands the tool a value other than the literal
    the plan was validated with: it is checked like any other, and a wrong one fails."""
    reg, seen, _ = counted_registry()
    analysis = analysis_of(Plan.parse(TAKE), reg)
    step = analysis.steps["b"]
    assert set(step.prechecked) == {"label"}
    engine = InProcessEngine()
    call = StepCall("r", step, {"n": 1, "label": 5, "limit": 3}, {})
    outcome = anyio.run(engine.run_step, call)
    assert outcome.error_kind == "invalid_arguments"
    assert outcome.error == "label: Input should be a valid string"
    bad = anyio.run(engine.run_step, StepCall("r", step, {"n": 1, "label": "x", "limit": 0}, {}))
    assert bad.error == "limit: Input should be greater than 0"
    extra = anyio.run(engine.run_step, StepCall("r", step, {"n": 1, "label": "x", "z": 1}, {}))
    assert extra.error == "z: Extra inputs are not permitted"
    assert seen == []


def test_a_tool_without_a_check_per_parameter_is_checked_whole() -> None:
    """A tool whose parameters have no adapters of their own (as one built from an MCP schema
    may) has nothing prechecked: every call goes through the whole model, as before."""
    reg, _, _ = counted_registry()
    step = analysis_of(Plan.parse(TAKE), reg).steps["b"]
    bare = dataclasses.replace(step, tool=dataclasses.replace(step.tool, param_adapters={}))
    assert step.prechecked == {"label": "x"}
    assert bare.prechecked == {}
