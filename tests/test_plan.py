from __future__ import annotations

import json

import pytest

from planlock import Plan, PlanInvalid, canonical_json
from planlock.core._refs import Ref, find_placeholders, parse_ref


def test_seed_form_parses_with_integer_ids_as_strings() -> None:
    plan = Plan.parse(
        '[{"step": 1, "tool": "a", "args": {"x": "{{user.email}}"}}, {"step": 2, "tool": "b"}]'
    )
    assert [s.id for s in plan.steps] == ["1", "2"]
    assert plan.steps[1].args == {}
    assert plan.goal is None


def test_canonical_form_round_trips_and_hash_is_stable() -> None:
    data = {
        "version": 1,
        "goal": "g",
        "steps": [
            {"id": "a", "tool": "t", "args": {"k": 1}, "checkpoint": True},
            {"id": "b", "tool": "t", "after": ["a"]},
        ],
    }
    plan = Plan.parse(data)
    again = Plan.parse(plan.canonical_json())
    assert again == plan
    assert again.hash == plan.hash
    assert plan.steps[0].checkpoint is True
    assert plan.steps[1].after == ("a",)


def test_hash_changes_with_any_edit() -> None:
    base = Plan.parse([{"step": 1, "tool": "t", "args": {"to": "a@x.com"}}])
    edited = Plan.parse([{"step": 1, "tool": "t", "args": {"to": "b@x.com"}}])
    assert base.hash != edited.hash
    assert len(base.hash) == 64


def test_seed_and_canonical_forms_of_the_same_plan_hash_alike() -> None:
    seed = Plan.parse([{"step": 1, "tool": "t", "args": {}}])
    canon = Plan.parse({"steps": [{"id": "1", "tool": "t", "args": {}}]})
    assert seed.hash == canon.hash


def test_canonical_json_sorts_keys_and_has_no_spaces() -> None:
    assert (
        canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'
    )


def test_not_json_is_an_invalid_plan() -> None:
    with pytest.raises(PlanInvalid) as exc:
        Plan.parse("this is { not json")
    (issue,) = exc.value.issues
    assert issue.code == "not_json"
    assert "not valid JSON" in issue.message


def test_structural_problems_are_all_reported_with_paths() -> None:
    with pytest.raises(PlanInvalid) as exc:
        Plan.parse(
            {
                "steps": [
                    {"id": "1", "args": {}},
                    {"id": "bad id!", "tool": "t"},
                    {"id": "3", "tool": "t", "colour": "red"},
                ]
            }
        )
    got = {(i.path, i.message) for i in exc.value.issues}
    assert ("$.steps[0].tool", "'tool' is required") in got
    assert ("$.steps[1].id", "a step id is 1-64 letters, digits, '_' or '-'") in got
    assert ("$.steps[2].colour", "unknown field 'colour'") in got


def test_seed_form_paths_point_into_the_array() -> None:
    with pytest.raises(PlanInvalid) as exc:
        Plan.parse([{"step": 1}])
    assert exc.value.issues[0].path == "$[0].tool"


def test_a_plan_must_be_an_array_or_object() -> None:
    with pytest.raises(PlanInvalid) as exc:
        Plan.parse(json.dumps("just a string"))
    assert exc.value.issues[0].code == "malformed"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("user.email", Ref("input", "user", ("email",), "user.email")),
        ("input.user.email", Ref("input", "user", ("email",), "input.user.email")),
        ("steps.2.output", Ref("step", "2", (), "steps.2.output")),
        (
            "steps.2.output.items.0.id",
            Ref("step", "2", ("items", "0", "id"), "steps.2.output.items.0.id"),
        ),
    ],
)
def test_placeholder_forms(body: str, expected: Ref) -> None:
    assert parse_ref(body) == expected


@pytest.mark.parametrize("body", ["steps.2", "steps.2.result", "user..email", "a b", "input"])
def test_malformed_placeholders_are_explained(body: str) -> None:
    result = parse_ref(body)
    assert isinstance(result, str)
    assert "malformed placeholder" in result


def test_unbalanced_and_garbled_braces_are_found() -> None:
    unbalanced = find_placeholders("hello {{user.name and more")
    assert any(isinstance(f, str) and "unbalanced" in f for f in unbalanced)
    garbled = find_placeholders("hello {{user.name} and }}")
    assert any(isinstance(f, str) and "malformed placeholder" in f for f in garbled)


def test_literal_braces_need_no_escape_except_an_opening_pair() -> None:
    from planlock.core._template import Interp, Lit, Obj, compile_value

    problems: list[tuple[str, str]] = []
    assert compile_value('{"a":{"b":1}}', "$", problems) == Lit('{"a":{"b":1}}')
    escaped = compile_value(
        {"t": "Dear \\{{ name }}, {{user.name}}", "k": ["\\{{x}}"]}, "$", problems
    )
    assert problems == []
    assert isinstance(escaped, Obj)
    assert escaped.items[1][1] == Lit(["{{x}}"])
    interp = escaped.items[0][1]
    assert isinstance(interp, Interp)
    assert interp.parts[0] == "Dear {{ name }}, "


@pytest.mark.parametrize(
    "text",
    [
        "{{steps.a.output}}",
        "{{ steps.a.output }}",
        "{{}}",
        "{{a}}}",
        "{{a}}b}}",
        "{{a\n}}",
        "{{a{{b}}",
        "\\{{a}}",
        "{{\tx\t}}",
        "{{x}}{{y}}",
        "{{a}",
        "x {{steps.a.output.b}} y",
    ],
)
def test_one_pass_placeholder_scan_agrees_with_the_pattern(text: str) -> None:
    """``scan_and_split`` (with its fast path for a whole placeholder) finds what the pattern
    finds, says "whole" exactly when the pattern spans the text, and splits like
    ``split_interpolation``."""
    from planlock.core._refs import _PLACEHOLDER, parse_ref, scan_and_split, split_interpolation

    found, whole, parts = scan_and_split(text)
    matches = list(_PLACEHOLDER.finditer(text))
    assert found[: len(matches)] == [parse_ref(m.group(1)) for m in matches]
    assert whole == (len(matches) == 1 and matches[0].span() == (0, len(text)))
    assert parts == (split_interpolation(text) if matches else None)
