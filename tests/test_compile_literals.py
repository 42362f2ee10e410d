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
