"""Property tests: whatever JSON a planner emits, planlock either rejects it before any tool runs,
or runs only registered tools, each with arguments valid against the tool's parameter schema."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from conftest import examples
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

import planlock
from planlock import Issue, LLMRequest, Plan, PlanInvalid, RunResult, ToolRegistry, validate
from planlock.testing import ScriptedLLM, capture_journal

PROPERTY_SETTINGS = settings(
    max_examples=examples(200),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Item(BaseModel):
    name: str
    qty: int


Call = tuple[str, dict[str, Any]]
CALLS: list[Call] = []
"""Every tool call of the current example: (tool name, the keyword arguments it received)."""


def build_registry() -> ToolRegistry:
    """Async tools with varied parameter types that record what they were called with."""
    reg = ToolRegistry()

    @reg.tool(effect="read")
    async def echo(text: str) -> str:
        CALLS.append(("echo", {"text": text}))
        return text

    @reg.tool(effect="read")
    async def count(n: int, tags: list[str] | None = None) -> int:
        CALLS.append(("count", {"n": n, "tags": tags}))
        return len(tags or ())

    @reg.tool(effect="read")
    async def join(parts: list[str], sep: str = ",") -> list[str]:
        CALLS.append(("join", {"parts": parts, "sep": sep}))
        return [sep.join(parts), *parts]

    @reg.tool(effect="write")
    async def store(item: Item, note: str | None = None) -> Item:
        CALLS.append(("store", {"item": item, "note": note}))
        return item

    @reg.tool(effect="send")
    async def rate(x: float, label: Literal["a", "b"] = "a") -> dict[str, float]:
        CALLS.append(("rate", {"x": x, "label": label}))
        return {label: x}

    return reg


REGISTRY = build_registry()
TOOL_NAMES = sorted(t.name for t in REGISTRY)
TOOLS = [*TOOL_NAMES, "llm"]
INPUTS: dict[str, Any] = {
    "user": {
        "email": "dana@example.com",
        "id": 7,
        "tags": ["a", "b"],
        "item": {"name": "x", "qty": 2},
    },
    "x": "hello",
    "n": 3,
    "ratio": 0.5,
}
STEP_IDS = ["1", "2", "3", "4", "a", "b"]
ITEM_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}},
    "required": ["name", "qty"],
}


def llm_reply(request: LLMRequest) -> dict[str, Any]:
    """A reply that matches the step's output schema: an Item, or a string by default."""
    assert request.json_schema is not None
    wanted = request.json_schema["properties"]["result"]
    return {"result": {"name": "from-llm", "qty": 1} if wanted == ITEM_SCHEMA else "from-llm"}


# --- strategies ----------------------------------------------------------------------------------

json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )


OUTPUT_TYPES: dict[str, dict[str, str]] = {
    # tool: {path into its output: the JSON type found there}
    "echo": {"": "string"},
    "count": {"": "integer"},
    "join": {"": "array", ".0": "string", ".1": "string"},
    "store": {"": "object", ".name": "string", ".qty": "integer"},
    "rate": {"": "object", ".a": "number", ".b": "number"},
    "llm": {"": "object", ".name": "string", ".qty": "integer"},
}
INPUT_TYPES: dict[str, str] = {
    "user.email": "string",
    "user.id": "integer",
    "user.tags": "array",
    "user.tags.0": "string",
    "user.item": "object",
    "input.user.item.qty": "integer",
    "x": "string",
    "n": "integer",
    "ratio": "number",
}
BAD_REFS = ["nobody", "user.nope", "user.tags.5", "steps.9.output", "steps.a.output.zz"]
BAD_PLACEHOLDERS = ["{{steps.1}}", "{{ bad! }}", "{{user.email", "a}}", "{{input}}", "{{}}"]


@dataclass(frozen=True)
class Ctx:
    """What a step's arguments are drawn with."""

    earlier: tuple[tuple[str, str], ...] = ()
    """The (id, tool) of the steps before this one."""
    noisy: bool = True
    """Whether to inject mistakes (bad references, ill-typed values, stray keys, ...)."""


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws; False in the simplest (shrunk) example."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


def mistake(draw: st.DrawFn, ctx: Ctx, one_in: int) -> bool:
    """Whether to make a mistake here: about once in ``one_in`` draws, in a noisy plan."""
    return ctx.noisy and rarely(draw, one_in)


def fits(have: str, want: str | None) -> bool:
    return want is None or have == want or (want == "number" and have == "integer")


@st.composite
def placeholders(draw: st.DrawFn, ctx: Ctx, want: str | None = None) -> str:
    """A placeholder whose value has the wanted JSON type, mostly to an earlier step's output;
    in a noisy plan sometimes any reference at all, or a broken placeholder."""
    if mistake(draw, ctx, 12):
        return draw(st.sampled_from(BAD_PLACEHOLDERS))
    step_refs = [
        f"steps.{sid}.output{path}"
        for sid, tool in ctx.earlier
        for path, have in OUTPUT_TYPES.get(tool, {}).items()
        if fits(have, want)
    ]
    input_refs = [ref for ref, have in INPUT_TYPES.items() if fits(have, want)]
    if mistake(draw, ctx, 5):
        refs = [*BAD_REFS, *INPUT_TYPES, *(f"steps.{sid}.output.qty" for sid, _ in ctx.earlier)]
    elif step_refs and not rarely(draw, 3):
        refs = step_refs
    else:
        refs = input_refs
    return "{{" + draw(st.sampled_from(refs)) + "}}"


@st.composite
def template_strings(draw: st.DrawFn, ctx: Ctx, want: str | None = None) -> str:
    """A whole placeholder (keeps its type) or, for strings, one inside a longer string
    (which renders any value into the string)."""
    if (want in (None, "string") and draw(st.booleans())) or mistake(draw, ctx, 10):
        ph = draw(placeholders(ctx))
        return draw(st.text(max_size=4)) + ph + draw(st.text(max_size=4))
    return draw(placeholders(ctx, want))


any_json = json_values(json_scalars | template_strings(Ctx()))
Typed = Callable[[Ctx], st.SearchStrategy[Any]]
"""Values for one parameter, given the step's context."""


def typed(literal: st.SearchStrategy[Any], want: str, placeholder_one_in: int = 2) -> Typed:
    """A literal of the parameter's type, or a placeholder (to a value of that type)."""

    @st.composite
    def values(draw: st.DrawFn, ctx: Ctx) -> Any:
        if rarely(draw, placeholder_one_in):
            return draw(template_strings(ctx, want))
        return draw(literal)

    return values


def str_values(ctx: Ctx) -> st.SearchStrategy[Any]:
    return typed(st.text(max_size=8), "string")(ctx)


def int_values(ctx: Ctx) -> st.SearchStrategy[Any]:
    return typed(st.integers(-5, 5) | st.integers(), "integer")(ctx)


def items(ctx: Ctx) -> st.SearchStrategy[Any]:
    fields = st.fixed_dictionaries({"name": str_values(ctx), "qty": int_values(ctx)})
    return typed(fields, "object")(ctx)


def str_lists(ctx: Ctx) -> st.SearchStrategy[Any]:
    return typed(st.lists(str_values(ctx), max_size=3), "array")(ctx)


def nullable(values: Typed) -> Typed:
    return lambda ctx: st.none() | values(ctx)


float_values = typed(st.floats(allow_nan=False, allow_infinity=False) | st.integers(), "number")
labels = typed(st.sampled_from(["a", "b"]), "string", placeholder_one_in=6)
# The instruction and output schema of an llm step are fixed by the plan: rarely a placeholder.
plain_text = typed(
    st.text(max_size=8).filter(lambda t: "{" not in t and "}" not in t), "string", 20
)
output_schemas = typed(st.just(ITEM_SCHEMA), "object", 20)

PARAMS: dict[str, tuple[dict[str, Typed], dict[str, Typed]]] = {
    # tool: (required parameters, optional parameters)
    "echo": ({"text": str_values}, {}),
    "count": ({"n": int_values}, {"tags": nullable(str_lists)}),
    "join": ({"parts": str_lists}, {"sep": str_values}),
    "store": ({"item": items}, {"note": nullable(str_values)}),
    "rate": ({"x": float_values}, {"label": labels}),
    "llm": ({"instruction": plain_text}, {"input": str_values, "output_schema": output_schemas}),
}


@st.composite
def step_args(draw: st.DrawFn, tool: str, ctx: Ctx) -> dict[str, Any]:
    """Arguments for a step: shaped for the tool, with mistakes in a noisy plan."""
    if tool not in PARAMS:
        return draw(st.dictionaries(st.text(max_size=5), any_json, max_size=3))
    required, optional = PARAMS[tool]
    args: dict[str, Any] = {}
    for name, values in required.items():
        if not mistake(draw, ctx, 20):
            args[name] = draw(any_json if mistake(draw, ctx, 20) else values(ctx))
    for name, values in optional.items():
        if draw(st.booleans()):
            args[name] = draw(any_json if mistake(draw, ctx, 20) else values(ctx))
    if mistake(draw, ctx, 20):
        args[draw(st.text(max_size=5))] = draw(any_json)
    return args


@st.composite
def seed_plans(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A plan in the seed's form: a list of {"step", "tool", "args"}, sometimes more."""
    noisy = draw(st.booleans())
    n = draw(st.integers(0, 5))
    steps: list[dict[str, Any]] = []
    earlier: list[tuple[str, str]] = []
    ctx = Ctx(noisy=noisy)
    ids = st.sampled_from(STEP_IDS) | st.integers(1, 4)
    sequential = not mistake(draw, ctx, 5)
    for i in range(n):
        sid: Any = i + 1 if sequential else draw(ids)
        tool = draw(st.text(max_size=6)) if mistake(draw, ctx, 20) else draw(st.sampled_from(TOOLS))
        ctx = Ctx(tuple(earlier), noisy)
        step: dict[str, Any] = {"step": sid, "tool": tool}
        args = draw(step_args(tool, ctx))
        keep_empty_args: bool = draw(st.booleans())
        if args or keep_empty_args:
            step["args"] = args
        if earlier and rarely(draw, 8):
            step["after"] = draw(st.lists(st.sampled_from([e for e, _ in earlier]), max_size=2))
        if mistake(draw, ctx, 8):
            step["after"] = draw(st.lists(ids, max_size=2))
        if rarely(draw, 10):
            step["checkpoint"] = draw(st.booleans())
        if mistake(draw, ctx, 30):
            step[draw(st.text(max_size=4))] = draw(any_json)
        steps.append(step)
        earlier.append((str(sid), tool))
    return steps


def to_canonical(steps: list[dict[str, Any]], goal: str | None) -> dict[str, Any]:
    """The same steps in the canonical object form ("id" instead of "step")."""
    out = [{("id" if k == "step" else k): v for k, v in s.items()} for s in steps]
    return {"version": 1, "goal": goal, "steps": out}


plan_shaped: st.SearchStrategy[Any] = seed_plans() | st.builds(
    to_canonical, seed_plans(), st.none() | st.text(max_size=10)
)
plan_shaped_text: st.SearchStrategy[Any] = plan_shaped.map(json.dumps)
step_like = st.dictionaries(
    st.sampled_from(["step", "id", "tool", "args", "after", "checkpoint"]) | st.text(max_size=4),
    st.sampled_from(TOOL_NAMES) | any_json,
    max_size=5,
)
random_json: st.SearchStrategy[Any] = (
    any_json
    | st.lists(step_like, max_size=4)
    | st.fixed_dictionaries({"steps": st.lists(step_like, max_size=4)})
)
random_input: st.SearchStrategy[Any] = (
    random_json | random_json.map(json.dumps) | st.text(max_size=30) | st.binary(max_size=30)
)


# --- the property --------------------------------------------------------------------------------


def run_plan(plan: Plan) -> RunResult:
    with capture_journal() as journal:
        return planlock.run_sync(
            plan,
            REGISTRY,
            inputs=INPUTS,
            approver=planlock.approve_all(),
            llm=ScriptedLLM(llm_reply),
            journal=journal,
            retries=0,
        )


def parse(data: Any) -> Plan | tuple[Issue, ...]:
    """The plan, or the issues that rejected it."""
    try:
        return Plan.parse(data)
    except PlanInvalid as exc:
        return exc.issues


def check_plan(data: Any) -> RunResult | None:
    """Reject before any call, or call only registered tools with schema-valid arguments.

    Returns the run's result when the plan ran, None when it was rejected.
    """
    CALLS.clear()
    plan = parse(data)
    if not isinstance(plan, Plan):
        assert plan, "a rejection names its issues"
        assert {i.code for i in plan} <= {"not_json", "malformed"}
        assert CALLS == []
        return None
    again = Plan.parse(plan.canonical_json())
    assert again == plan
    assert again.hash == plan.hash

    report = validate(plan, REGISTRY, inputs=INPUTS)
    if not report.ok:
        with pytest.raises(PlanInvalid) as info:
            run_plan(plan)
        assert info.value.issues == report.issues
        assert CALLS == []
        return None

    result = run_plan(plan)
    planned = {s.id: s.tool for s in plan.steps}
    assert set(result.statuses) == set(planned)
    assert set(result.statuses.values()) <= {"finished", "failed", "skipped"}
    for name, kwargs in CALLS:
        assert name in REGISTRY
        received = to_jsonable_python(kwargs)
        errors = [
            e.message
            for e in Draft202012Validator(REGISTRY[name].params_schema).iter_errors(received)
        ]
        assert errors == [], (name, received, errors)
    finished = [planned[s] for s, status in result.statuses.items() if status == "finished"]
    assert sorted(name for name, _ in CALLS) == sorted(t for t in finished if t != "llm")
    return result


@PROPERTY_SETTINGS
@given(random_input)
def test_random_json_is_rejected_or_runs_safely(data: Any) -> None:
    check_plan(data)


@PROPERTY_SETTINGS
@given(plan_shaped | plan_shaped_text)
def test_plan_shaped_json_is_rejected_or_runs_safely(data: Any) -> None:
    check_plan(data)


def reachability(deps: list[set[int]]) -> list[set[int]]:
    """For each step, every step it depends on, directly or not (a reference implementation)."""
    reach = [set(d) for d in deps]
    changed = True
    while changed:
        changed = False
        for i, found in enumerate(reach):
            more = set().union(*(reach[j] for j in found)) - found
            if more:
                reach[i] = found | more
                changed = True
    return reach


afters = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n)
)


@PROPERTY_SETTINGS
@given(afters)
def test_cycles_are_reported_exactly_when_the_after_graph_has_one(after: list[list[int]]) -> None:
    ids = [f"s{i}" for i in range(len(after))]
    deps = [set(a) - {i} for i, a in enumerate(after)]
    steps = [
        {"id": ids[i], "tool": "echo", "args": {"text": ids[i]}, "after": [ids[j] for j in d]}
        for i, d in enumerate(deps)
    ]
    plan = Plan.parse({"steps": steps})
    reach = reachability(deps)
    on_cycle = {i for i in range(len(ids)) if i in reach[i]}

    issues = validate(plan, REGISTRY).issues
    assert {i.code for i in issues} <= {"cycle"}
    assert bool(issues) == bool(on_cycle)
    reported: list[int] = []
    for issue in issues:
        text = issue.message.removeprefix("steps depend on each other in a cycle: ")
        ring = [ids.index(s) for s in text.removesuffix(" (each needs the next)").split(" -> ")]
        assert ring[0] == ring[-1]
        assert len(set(ring)) == len(ring) - 1
        assert all(b in deps[a] for a, b in itertools.pairwise(ring)), "each needs the next"
        assert ring[0] == min(ring), "the ring starts at its first step"
        assert issue.path == f"$.steps[{ring[0]}]"
        reported += ring[1:]
    assert len(set(reported)) == len(reported), "no step is in two reported cycles"

    if not on_cycle:
        CALLS.clear()
        result = run_plan(plan)
        assert result.ok
        order = [kwargs["text"] for _, kwargs in CALLS]
        assert sorted(order) == sorted(ids)
        for i, d in enumerate(deps):
            assert all(order.index(ids[j]) < order.index(ids[i]) for j in d)


def test_plan_shaped_strategy_reaches_execution_with_placeholders() -> None:
    """The property is not vacuous: generated plans do run, with values flowing between steps."""

    def runs_with_flow(data: Any) -> bool:
        result = check_plan(data)
        if result is None or len(CALLS) < 2:
            return False
        plan = Plan.parse(data)
        return any("{{steps." in json.dumps(s.args) for s in plan.steps) and result.ok

    # Any such plan will do: no shrinking (it took 2-25 s of CPU, varying with the seed).
    once = settings(max_examples=2000, database=None, phases=[Phase.generate])
    found = find(plan_shaped, runs_with_flow, settings=once)
    assert runs_with_flow(found)


def test_known_valid_plan_runs_every_tool_with_resolved_arguments() -> None:
    plan = [
        {
            "step": 1,
            "tool": "store",
            "args": {"item": "{{user.item}}", "note": "for {{user.email}}"},
        },
        {"step": 2, "tool": "join", "args": {"parts": ["{{steps.1.output.name}}", "{{x}}"]}},
        {
            "step": 3,
            "tool": "count",
            "args": {"n": "{{steps.1.output.qty}}", "tags": "{{user.tags}}"},
        },
        {"step": 4, "tool": "rate", "args": {"x": "{{steps.3.output}}", "label": "b"}},
        {"step": 5, "tool": "echo", "args": {"text": "{{steps.2.output.0}}"}},
    ]
    result = check_plan(plan)
    assert result is not None
    assert result.ok
    assert result.outputs["4"] == {"b": 2.0}
    assert result.outputs["5"] == "x,hello"
    assert to_jsonable_python(sorted(CALLS, key=lambda c: c[0])) == [
        ["count", {"n": 2, "tags": ["a", "b"]}],
        ["echo", {"text": "x,hello"}],
        ["join", {"parts": ["x", "hello"], "sep": ","}],
        ["rate", {"x": 2.0, "label": "b"}],
        ["store", {"item": {"name": "x", "qty": 2}, "note": "for dana@example.com"}],
    ]


def test_invalid_plan_calls_nothing() -> None:
    plan = [
        {"step": 1, "tool": "echo", "args": {"text": "hi"}},
        {"step": 2, "tool": "count", "args": {"n": "{{steps.1.output}}"}},
    ]
    assert check_plan(plan) is None
    with pytest.raises(PlanInvalid) as info:
        run_plan(Plan.parse(plan))
    assert [i.code for i in info.value.issues] == ["type_mismatch"]
    assert CALLS == []


def test_llm_output_flows_into_a_tool() -> None:
    plan = [
        {
            "step": 1,
            "tool": "llm",
            "args": {"instruction": "make an item", "output_schema": ITEM_SCHEMA},
        },
        {"step": 2, "tool": "store", "args": {"item": "{{steps.1.output}}"}},
    ]
    result = check_plan(plan)
    assert result is not None
    assert result.ok
    assert to_jsonable_python(CALLS) == [
        ["store", {"item": {"name": "from-llm", "qty": 1}, "note": None}]
    ]


def test_the_check_profile_runs_a_quarter_of_each_propertys_examples() -> None:
    """`make check` passes ``--hypothesis-profile=check``; `make test` runs the full counts."""
    loaded = settings.get_current_profile_name()
    try:
        settings.load_profile("default")
        assert examples(200) == 200
        settings.load_profile("check")
        assert examples(200) == 50
        assert examples(4) == 5
    finally:
        settings.load_profile(loaded)
