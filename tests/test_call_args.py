"""The call wrapper checks arguments once, and the same way: for a tool whose parameter types
JSON already has, from the Python values (no JSON round trip), with the verdicts of strict JSON
mode; any other tool keeps the round trip (conversions to models, tuples, dates)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError

from planlock import Plan, ToolRegistry, approve_all, run_sync
from planlock.testing import memory_journal

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
