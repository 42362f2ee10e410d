"""Compiling a plan's values: a list or dict without placeholders is one literal (a copy, made in
one pass), and one with a placeholder anywhere, or a malformed one, is compiled item by item."""

from __future__ import annotations

from planlock.core import Lit, compile_value
from planlock.core._template import Arr, Obj, Whole


def test_a_plain_list_or_dict_is_one_literal_and_a_copy() -> None:
    value = {"tags": ["a", "b"], "n": 1, "deep": [{"x": None}]}
    problems: list[tuple[str, str]] = []
    t = compile_value(value, "$.a", problems)
    assert isinstance(t, Lit)
    assert t.value == value
    assert t.value is not value
    assert t.value["tags"] is not value["tags"]
    assert problems == []


def test_a_placeholder_deep_inside_is_still_found() -> None:
    problems: list[tuple[str, str]] = []
    t = compile_value([1, {"k": ["{{steps.s.output}}"]}], "$.a", problems)
    assert isinstance(t, Arr)
    inner = t.items[1]
    assert isinstance(inner, Obj)
    assert isinstance(inner.items[0][1], Arr)
    assert isinstance(inner.items[0][1].items[0], Whole)
    bad: list[tuple[str, str]] = []
    compile_value({"k": ["{{ not a ref! }}"]}, "$.a", bad)
    assert [p for p, _ in bad] == ["$.a.k[0]"]


def test_type_checks_decided_once_per_plan_still_tell_steps_apart() -> None:
    """The memo of check_args is keyed by the output schema, the path and the parameter: a
    string output into an int parameter is refused every time, an int output never."""
    from planlock import Plan, ToolRegistry, validate

    reg = ToolRegistry()

    @reg.tool(effect="read")
    def text() -> str:
        return "a"

    @reg.tool(effect="read")
    def number() -> int:
        return 1

    @reg.tool(effect="read")
    def use(n: int) -> int:
        return n

    steps: list[dict[str, object]] = [{"id": "t", "tool": "text"}, {"id": "n", "tool": "number"}]
    for i in range(3):
        steps.append({"id": f"bad{i}", "tool": "use", "args": {"n": "{{steps.t.output}}"}})
        steps.append({"id": f"ok{i}", "tool": "use", "args": {"n": "{{steps.n.output}}"}})
    issues = validate(Plan.parse({"goal": "g", "steps": steps}), reg).issues
    assert [(i.code, i.path) for i in issues] == [
        ("type_mismatch", f"$.steps[{2 + 2 * i}].args.n") for i in range(3)
    ]
    assert all(
        "'{{steps.t.output}}' has type string; expected integer" in i.message for i in issues
    )
