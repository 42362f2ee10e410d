"""Unit tests for plan parsing (structural issues) and validation (every issue code)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from planlock import Issue, Plan, PlanInvalid, ToolRegistry, demo, validate


class Profile(BaseModel):
    name: str
    age: int


def make_registry() -> ToolRegistry:
    """Small typed tools: producers of each return shape, consumers of each parameter type."""
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def get_number() -> int:
        return 1

    @reg.tool(effect="read")
    def get_text() -> str:
        return "text"

    @reg.tool(effect="read")
    def get_profile() -> Profile:
        return Profile(name="Dana", age=40)

    @reg.tool(effect="read")
    def get_names() -> list[str]:
        return ["a", "b"]

    @reg.tool(effect="read")
    def get_pair() -> tuple[int, str]:
        return (1, "a")

    @reg.tool(effect="read")
    def get_anything() -> Any:
        return {"deep": {"path": 1}}

    def get_unannotated() -> object:
        return {"deep": {"path": 1}}

    del get_unannotated.__annotations__["return"]
    reg.tool(effect="read")(get_unannotated)

    @reg.tool(effect="read")
    def echo(text: str) -> str:
        return text

    @reg.tool(effect="read")
    def set_text(text: str) -> None:
        """Consume a string."""

    @reg.tool(effect="read")
    def set_number(n: int) -> None:
        """Consume an int."""

    @reg.tool(effect="read")
    def set_ratio(x: float) -> None:
        """Consume a float."""

    @reg.tool(effect="read")
    def set_labels(labels: dict[str, str]) -> None:
        """Consume a dict of strings."""

    @reg.tool(effect="read")
    def set_grid(grid: dict[str, dict[str, int]]) -> None:
        """Consume a nested dict of ints."""

    @reg.tool(effect="read")
    def set_profile(profile: Profile) -> None:
        """Consume a pydantic model."""

    @reg.tool(effect="write")
    def set_many(text: str, n: int, flag: bool = False) -> None:
        """Consume several parameters, one optional."""

    return reg


@pytest.fixture(scope="module")
def reg() -> ToolRegistry:
    return make_registry()


def issues_of(data: list[Any] | dict[str, Any], reg: ToolRegistry, **kwargs: Any) -> list[Issue]:
    return list(validate(Plan.parse(data), reg, **kwargs).issues)


def codes_paths(issues: list[Issue] | tuple[Issue, ...]) -> list[tuple[str, str]]:
    return [(i.code, i.path) for i in issues]


def parse_issues(data: str | bytes | list[Any] | dict[str, Any]) -> tuple[Issue, ...]:
    with pytest.raises(PlanInvalid) as info:
        Plan.parse(data)
    return info.value.issues


def one(issues: list[Issue], code: str, path: str) -> Issue:
    """The plan has exactly one issue, with this code and path."""
    assert codes_paths(issues) == [(code, path)], issues
    return issues[0]


# --- parsing: not_json and malformed -------------------------------------------------------------


def test_not_json_text() -> None:
    issues = parse_issues('[{"step": 1,')
    assert codes_paths(issues) == [("not_json", "$")]
    assert issues[0].message.startswith("plan is not valid JSON:")


def test_not_json_bytes_that_are_not_utf8() -> None:
    issues = parse_issues(b"\xff\xfe\xfa")
    assert codes_paths(issues) == [("not_json", "$")]
    assert "plan is not valid JSON" in issues[0].message


@pytest.mark.parametrize(("text", "kind"), [("3", "int"), ('"plan"', "str"), ("null", "NoneType")])
def test_malformed_top_level_value(text: str, kind: str) -> None:
    issues = parse_issues(text)
    assert codes_paths(issues) == [("malformed", "$")]
    assert issues[0].message == f"a plan is a JSON array of steps or an object, not {kind}"


def test_malformed_seed_form_paths_have_no_steps_segment() -> None:
    issues = parse_issues(
        [
            {"tool": "get_text"},
            {"step": 2},
            {"step": "bad id!", "tool": "get_text"},
            5,
            {"step": 5, "tool": "get_text", "after": [1.5], "bogus": True},
        ]
    )
    assert [(i.code, i.path, i.message) for i in issues] == [
        ("malformed", "$[0].step", "'step' is required"),
        ("malformed", "$[1].tool", "'tool' is required"),
        ("malformed", "$[2].step", "a step id is 1-64 letters, digits, '_' or '-'"),
        ("malformed", "$[3]", "Input should be a valid dictionary or instance of Step"),
        ("malformed", "$[4].after[0]", "Input should be a valid string"),
        ("malformed", "$[4].bogus", "unknown field 'bogus'"),
    ]


def test_malformed_canonical_form_paths() -> None:
    issues = parse_issues(
        {
            "version": 2,
            "steps": [{"id": "1", "tool": "", "args": [], "checkpoint": "maybe", "extra": 1}],
            "other": 1,
        }
    )
    assert codes_paths(issues) == [
        ("malformed", "$.version"),
        ("malformed", "$.steps[0].tool"),
        ("malformed", "$.steps[0].args"),
        ("malformed", "$.steps[0].checkpoint"),
        ("malformed", "$.steps[0].extra"),
        ("malformed", "$.other"),
    ]
    messages = {i.path: i.message for i in issues}
    assert messages["$.steps[0].extra"] == "unknown field 'extra'"
    assert messages["$.other"] == "unknown field 'other'"
    assert "at least 1 character" in messages["$.steps[0].tool"]
    assert "valid dictionary" in messages["$.steps[0].args"]


def test_malformed_missing_steps_and_non_list_steps() -> None:
    assert [(i.code, i.path, i.message) for i in parse_issues({})] == [
        ("malformed", "$.steps", "'steps' is required")
    ]
    assert codes_paths(parse_issues({"steps": "abc"})) == [("malformed", "$.steps")]


@pytest.mark.parametrize("bad_id", [True, 1.5, "x" * 65, "", "a.b", None])
def test_malformed_step_ids(bad_id: object) -> None:
    issues = parse_issues([{"step": bad_id, "tool": "get_text"}])
    assert codes_paths(issues) == [("malformed", "$[0].step")]


def test_plan_invalid_message_lists_every_issue_path() -> None:
    with pytest.raises(PlanInvalid) as info:
        Plan.parse([{"tool": "a"}, {"step": 2}])
    text = str(info.value)
    assert "2 issue(s)" in text
    assert "$[0].step" in text
    assert "$[1].tool" in text


def test_seed_form_parses_with_integer_ids_as_strings() -> None:
    plan = Plan.parse([*demo.SEED_PLAN, {"step": 4, "tool": "get_text", "after": [1, "3"]}])
    assert [s.id for s in plan.steps] == ["1", "2", "3", "4"]
    assert all(isinstance(s.id, str) for s in plan.steps)
    assert plan.steps[3].after == ("1", "3")
    assert plan.steps[2].args == {"template": "cancellation_confirmation", "to": "{{user.email}}"}
    assert plan.version == 1
    assert plan.goal is None


def test_seed_form_and_canonical_form_hash_the_same() -> None:
    seed = Plan.parse(
        [{"step": 1, "tool": "get_text"}, {"step": 2, "tool": "set_text", "after": [1]}]
    )
    canonical = Plan.parse(
        {
            "steps": [
                {"id": "1", "tool": "get_text"},
                {"id": "2", "tool": "set_text", "after": ["1"]},
            ]
        }
    )
    assert seed == canonical
    assert seed.hash == canonical.hash
    assert Plan.parse(seed.canonical_json()).hash == seed.hash


# --- plan-level issues -------------------------------------------------------------------------


def test_empty_plan(reg: ToolRegistry) -> None:
    issue = one(issues_of([], reg), "empty_plan", "$.steps")
    assert issue.message == "the plan has no steps"


def test_too_many_steps(reg: ToolRegistry) -> None:
    plan = [{"step": i, "tool": "get_text"} for i in range(1, 4)]
    assert issues_of(plan, reg, max_steps=3) == []
    issue = one(issues_of(plan, reg, max_steps=2), "too_many_steps", "$.steps")
    assert issue.message == "the plan has 3 steps; the limit is 2"


def test_duplicate_step_including_int_and_str_spellings(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_text"},
        {"step": "1", "tool": "get_text"},
        {"step": 2, "tool": "get_text"},
        {"step": 2, "tool": "get_text"},
    ]
    issues = issues_of(plan, reg)
    assert codes_paths(issues) == [
        ("duplicate_step", "$.steps[1].id"),
        ("duplicate_step", "$.steps[3].id"),
    ]
    assert issues[0].message == "duplicate step id '1' (first used by $.steps[0])"
    assert issues[1].message == "duplicate step id '2' (first used by $.steps[2])"


# --- tools and parameters ----------------------------------------------------------------------


def test_unknown_tool(reg: ToolRegistry) -> None:
    issue = one(
        issues_of([{"step": 1, "tool": "delete_everything"}], reg),
        "unknown_tool",
        "$.steps[0].tool",
    )
    assert issue.message.startswith(
        "unknown tool 'delete_everything' (registered: echo, get_anything, "
    )
    assert "set_text" in issue.message


def test_unknown_tool_with_empty_registry() -> None:
    issue = one(
        issues_of([{"step": 1, "tool": "x"}], ToolRegistry()), "unknown_tool", "$.steps[0].tool"
    )
    assert issue.message == "unknown tool 'x' (registered: none)"


def test_forbidden_tool(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "get_text"}, {"step": 2, "tool": "set_text", "args": {"text": "x"}}]
    assert issues_of(plan, reg) == []
    issue = one(
        issues_of(plan, reg, forbidden_tools={"set_text"}), "forbidden_tool", "$.steps[1].tool"
    )
    assert issue.message == "tool 'set_text' is forbidden"


def test_forbidden_and_unknown_tool_are_both_reported(reg: ToolRegistry) -> None:
    issues = issues_of([{"step": 1, "tool": "nope"}], reg, forbidden_tools=frozenset({"nope"}))
    assert codes_paths(issues) == [
        ("forbidden_tool", "$.steps[0].tool"),
        ("unknown_tool", "$.steps[0].tool"),
    ]


def test_unknown_param(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "x", "colour": "red"}}]
    issue = one(issues_of(plan, reg), "unknown_param", "$.steps[0].args.colour")
    assert issue.message == "unknown parameter 'colour' for tool 'set_text' (parameters: text)"


def test_unknown_param_on_tool_without_parameters(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "get_text", "args": {"q": 1}}]
    issue = one(issues_of(plan, reg), "unknown_param", "$.steps[0].args.q")
    assert issue.message == "unknown parameter 'q' for tool 'get_text' (parameters: none)"


def test_missing_param(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_many", "args": {"text": "x"}}]
    issue = one(issues_of(plan, reg), "missing_param", "$.steps[0].args")
    assert issue.message == "missing required parameter 'n' for tool 'set_many'"


def test_optional_param_may_be_omitted(reg: ToolRegistry) -> None:
    assert issues_of([{"step": 1, "tool": "set_many", "args": {"text": "x", "n": 1}}], reg) == []


def test_invalid_arg_ill_typed_literal(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_number", "args": {"n": "12"}}]
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[0].args.n")
    assert "valid integer" in issue.message


def test_invalid_arg_is_strict_like_the_executor(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_many", "args": {"text": 5, "n": 1, "flag": "yes"}}]
    issues = issues_of(plan, reg)
    assert codes_paths(issues) == [
        ("invalid_arg", "$.steps[0].args.flag"),
        ("invalid_arg", "$.steps[0].args.text"),
    ]
    assert "valid boolean" in issues[0].message
    assert "valid string" in issues[1].message


def test_invalid_arg_nested_literal_in_dict_param(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_labels", "args": {"labels": {"a": 1, "b": "ok"}}}]
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[0].args.labels.a")
    assert issue.message == "Input should be a valid string"


def test_invalid_arg_nested_literal_in_model_param(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_profile", "args": {"profile": {"name": "Dana", "age": "40"}}}]
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[0].args.profile.age")
    assert "valid integer" in issue.message


def test_invalid_arg_literal_beside_a_placeholder_uses_json_schema(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_text"},
        {"step": 2, "tool": "set_labels", "args": {"labels": {"a": "{{steps.1.output}}", "b": 1}}},
    ]
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[1].args.labels.b")
    assert issue.message == "1 is not of type 'string'"


def test_invalid_arg_list_given_for_dict_with_placeholders(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_text"},
        {"step": 2, "tool": "set_labels", "args": {"labels": ["{{steps.1.output}}"]}},
    ]
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[1].args.labels")
    assert issue.message == "a list is not valid here"


def test_invalid_arg_unknown_key_in_model_with_placeholders(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_text"},
        {
            "step": 2,
            "tool": "set_profile",
            "args": {"profile": {"name": "{{steps.1.output}}", "age": 3, "zzz": 1}},
        },
    ]
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[1].args.profile.zzz")
    assert issue.message == "unknown key 'zzz'"


# --- placeholders: types --------------------------------------------------------------------------


def test_type_mismatch_whole_placeholder_int_into_str(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_number"},
        {"step": 2, "tool": "set_text", "args": {"text": "{{steps.1.output}}"}},
    ]
    issue = one(issues_of(plan, reg), "type_mismatch", "$.steps[1].args.text")
    assert issue.message == "'{{steps.1.output}}' has type integer; expected string"


def test_type_mismatch_interpolated_string_into_int(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_number"},
        {"step": 2, "tool": "set_number", "args": {"n": "n = {{steps.1.output}}"}},
    ]
    issue = one(issues_of(plan, reg), "type_mismatch", "$.steps[1].args.n")
    assert "renders to a string" in issue.message


def test_type_mismatch_input_value_into_int(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_number", "args": {"n": "{{user.email}}"}}]
    issue = one(
        issues_of(plan, reg, inputs={"user": {"email": "a@b.c"}}),
        "type_mismatch",
        "$.steps[0].args.n",
    )
    assert issue.message == "'{{user.email}}' has type string; expected integer"


def test_type_mismatch_inside_model_param(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_profile"},
        {
            "step": 2,
            "tool": "set_profile",
            "args": {"profile": {"name": "{{steps.1.output.age}}", "age": 1}},
        },
    ]
    issue = one(issues_of(plan, reg), "type_mismatch", "$.steps[1].args.profile.name")
    assert issue.message == "'{{steps.1.output.age}}' has type integer; expected string"


def test_int_refs_are_accepted_by_float_params(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_number"},
        {"step": 2, "tool": "get_profile"},
        {"step": 3, "tool": "set_ratio", "args": {"x": "{{steps.1.output}}"}},
        {"step": 4, "tool": "set_ratio", "args": {"x": "{{steps.2.output.age}}"}},
        {"step": 5, "tool": "set_ratio", "args": {"x": "{{n}}"}},
    ]
    assert issues_of(plan, reg, inputs={"n": 3}) == []


def test_whole_placeholders_to_any_and_unannotated_returns_are_accepted(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_anything"},
        {"step": 2, "tool": "get_unannotated"},
        {"step": 3, "tool": "set_number", "args": {"n": "{{steps.1.output}}"}},
        {"step": 4, "tool": "set_text", "args": {"text": "{{steps.1.output.deep.path}}"}},
        {"step": 5, "tool": "set_number", "args": {"n": "{{steps.2.output.deep.path}}"}},
        {"step": 6, "tool": "set_profile", "args": {"profile": "{{steps.2.output}}"}},
    ]
    assert issues_of(plan, reg) == []


def test_whole_placeholder_of_matching_type_is_accepted(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_profile"},
        {"step": 2, "tool": "get_names"},
        {"step": 3, "tool": "set_profile", "args": {"profile": "{{steps.1.output}}"}},
        {"step": 4, "tool": "set_text", "args": {"text": "{{steps.2.output.0}}"}},
        {"step": 5, "tool": "set_text", "args": {"text": "{{ steps.1.output.name }}"}},
        {"step": 6, "tool": "set_number", "args": {"n": "{{steps.1.output.age}}"}},
    ]
    assert issues_of(plan, reg) == []


# --- placeholders: references ------------------------------------------------------------------


def test_unknown_step_in_placeholder(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{{steps.9.output}}"}}]
    issue = one(issues_of(plan, reg), "unknown_step", "$.steps[0].args.text")
    assert issue.message == "'{{steps.9.output}}' refers to unknown step '9'"


def test_unknown_step_in_after(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "get_text"}, {"step": 2, "tool": "get_text", "after": [1, "zz"]}]
    issue = one(issues_of(plan, reg), "unknown_step", "$.steps[1].after[1]")
    assert issue.message == "'after' names unknown step 'zz'"


def test_unknown_step_nested_is_reported_at_the_parameter(reg: ToolRegistry) -> None:
    # Reference issues name the parameter, not the nested key (unlike invalid_arg / type_mismatch).
    plan = [{"step": 1, "tool": "set_labels", "args": {"labels": {"a": "{{steps.9.output}}"}}}]
    one(issues_of(plan, reg), "unknown_step", "$.steps[0].args.labels")


def test_unknown_input_only_when_inputs_are_given(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{{nobody}}"}}]
    assert issues_of(plan, reg) == []
    issue = one(
        issues_of(plan, reg, inputs={"user": {}, "x": 1}), "unknown_input", "$.steps[0].args.text"
    )
    assert issue.message == "'{{nobody}}' refers to unknown input 'nobody' (given: user, x)"
    issue = one(issues_of(plan, reg, inputs={}), "unknown_input", "$.steps[0].args.text")
    assert issue.message.endswith("(given: none)")


def test_unknown_input_with_explicit_input_prefix(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "hi {{input.who}}"}}]
    issue = one(issues_of(plan, reg, inputs={"user": 1}), "unknown_input", "$.steps[0].args.text")
    assert "unknown input 'who'" in issue.message
    assert issues_of(plan, reg, inputs={"who": "Dana"}) == []


def test_bad_ref_path_on_model_return(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_profile"},
        {"step": 2, "tool": "set_text", "args": {"text": "{{steps.1.output.email}}"}},
    ]
    issue = one(issues_of(plan, reg), "bad_ref_path", "$.steps[1].args.text")
    assert (
        issue.message == "'{{steps.1.output.email}}': no such path on the return type of step '1'"
    )


@pytest.mark.parametrize(
    ("tool", "ref"),
    [
        ("get_names", "steps.1.output.name"),  # a key into a list
        ("get_names", "steps.1.output.0.x"),  # a key into a list item (a string)
        ("get_pair", "steps.1.output.2"),  # past the end of a tuple
        ("get_number", "steps.1.output.0"),  # into a scalar
        ("get_text", "steps.1.output.len"),
    ],
)
def test_bad_ref_path_on_list_and_scalar_returns(reg: ToolRegistry, tool: str, ref: str) -> None:
    plan = [
        {"step": 1, "tool": tool},
        {"step": 2, "tool": "set_text", "args": {"text": f"value: {{{{{ref}}}}}"}},
    ]
    issue = one(issues_of(plan, reg), "bad_ref_path", "$.steps[1].args.text")
    assert issue.message == f"'{{{{{ref}}}}}': no such path on the return type of step '1'"


def test_good_ref_paths_on_list_and_tuple_returns(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_names"},
        {"step": 2, "tool": "get_pair"},
        {"step": 3, "tool": "set_text", "args": {"text": "{{steps.1.output.5}}"}},
        {"step": 4, "tool": "set_text", "args": {"text": "{{steps.2.output.1}}"}},
        {"step": 5, "tool": "set_number", "args": {"n": "{{steps.2.output.0}}"}},
    ]
    assert issues_of(plan, reg) == []


def test_bad_ref_path_on_input_value(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{{user.name}}"}}]
    inputs = {"user": {"email": "a@b.c", "tags": ["x"]}}
    issue = one(issues_of(plan, reg, inputs=inputs), "bad_ref_path", "$.steps[0].args.text")
    assert issue.message == "'{{user.name}}': 'user.name' does not exist on the value"
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{{user.tags.1}}"}}]
    issue = one(issues_of(plan, reg, inputs=inputs), "bad_ref_path", "$.steps[0].args.text")
    assert "'user.tags.1' does not exist" in issue.message
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{{user.tags.0}}"}}]
    assert issues_of(plan, reg, inputs=inputs) == []


def test_malformed_placeholder_bad_segment(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "hi {{ user.e-mail! }}"}}]
    issue = one(issues_of(plan, reg), "malformed_placeholder", "$.steps[0].args.text")
    assert issue.message == (
        "malformed placeholder '{{user.e-mail!}}': segments are letters, digits, '_' or '-'"
    )


@pytest.mark.parametrize("body", ["steps.1", "steps.1.result", "steps"])
def test_malformed_placeholder_step_without_output(reg: ToolRegistry, body: str) -> None:
    plan = [
        {"step": 1, "tool": "get_text"},
        {"step": 2, "tool": "set_text", "args": {"text": f"{{{{{body}}}}}"}},
    ]
    issue = one(issues_of(plan, reg), "malformed_placeholder", "$.steps[1].args.text")
    assert issue.message == (
        f"malformed placeholder '{{{{{body}}}}}': expected steps.<id>.output[.<path>]"
    )


def test_malformed_placeholder_input_without_name(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{{input}}"}}]
    issue = one(issues_of(plan, reg), "malformed_placeholder", "$.steps[0].args.text")
    assert "expected input.<name>[.<path>]" in issue.message


@pytest.mark.parametrize("text", ["{{user.x", "{{user.x}} and {{"])
def test_malformed_placeholder_unbalanced_braces(reg: ToolRegistry, text: str) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": text}}]
    issue = one(issues_of(plan, reg), "malformed_placeholder", "$.steps[0].args.text")
    assert issue.message == (
        "unbalanced '{{' in a string argument (write a literal '{{' as '\\{{')"
    )


@pytest.mark.parametrize("text", ["user.x}}", "a }} b", '{"a": {"b": 1}}', "\\{{ name }}"])
def test_closing_braces_and_escaped_openings_are_plain_text(reg: ToolRegistry, text: str) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": text}}]
    assert issues_of(plan, reg) == []


def test_malformed_placeholder_nested_path(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_labels", "args": {"labels": {"a": "x", "b": "{{bad key}}"}}}]
    issue = one(issues_of(plan, reg), "malformed_placeholder", "$.steps[0].args.labels.b")
    assert "malformed placeholder '{{bad key}}'" in issue.message


def test_single_braces_are_plain_text(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "set_text", "args": {"text": "{a} and { {b} } {"}}]
    assert issues_of(plan, reg) == []


def test_self_reference_in_placeholder(reg: ToolRegistry) -> None:
    plan = [{"step": "a", "tool": "echo", "args": {"text": "{{steps.a.output}}"}}]
    issue = one(issues_of(plan, reg), "self_reference", "$.steps[0].args.text")
    assert issue.message == "step 'a' refers to its own output"


def test_self_reference_in_after(reg: ToolRegistry) -> None:
    plan = [{"step": 1, "tool": "get_text"}, {"step": 2, "tool": "get_text", "after": [1, 2]}]
    issue = one(issues_of(plan, reg), "self_reference", "$.steps[1].after[1]")
    assert issue.message == "a step cannot come after itself"


# --- cycles ------------------------------------------------------------------------------------


def test_cycle_of_two_through_placeholders(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "set_text", "args": {"text": "{{steps.2.output.name}}"}},
        {"step": 2, "tool": "get_profile", "after": [1]},
    ]
    issue = one(issues_of(plan, reg), "cycle", "$.steps[0]")
    assert (
        issue.message == "steps depend on each other in a cycle: 1 -> 2 -> 1 (each needs the next)"
    )


def test_cycle_of_three_through_after(reg: ToolRegistry) -> None:
    plan = [
        {"step": "a", "tool": "get_text", "after": ["c"]},
        {"step": "b", "tool": "get_text", "after": ["a"]},
        {"step": "c", "tool": "get_text", "after": ["b"]},
    ]
    issue = one(issues_of(plan, reg), "cycle", "$.steps[0]")
    assert (
        issue.message
        == "steps depend on each other in a cycle: a -> c -> b -> a (each needs the next)"
    )


def test_cycle_is_reported_once_at_its_first_step(reg: ToolRegistry) -> None:
    plan = [
        {"step": "start", "tool": "get_text"},
        {"step": "x", "tool": "get_text", "after": ["start", "z"]},
        {"step": "y", "tool": "get_text", "after": ["x"]},
        {"step": "z", "tool": "get_text", "after": ["y"]},
        {"step": "downstream", "tool": "get_text", "after": ["y", "z"]},
    ]
    issue = one(issues_of(plan, reg), "cycle", "$.steps[1]")
    assert issue.message.startswith("steps depend on each other in a cycle: x -> z -> y -> x")


def test_two_disjoint_cycles_are_both_reported(reg: ToolRegistry) -> None:
    plan = [
        {"step": "a", "tool": "get_text", "after": ["b"]},
        {"step": "b", "tool": "get_text", "after": ["a"]},
        {"step": "c", "tool": "get_text", "after": ["d"]},
        {"step": "d", "tool": "get_text", "after": ["c"]},
    ]
    issues = issues_of(plan, reg)
    assert codes_paths(issues) == [("cycle", "$.steps[0]"), ("cycle", "$.steps[2]")]
    assert "a -> b -> a" in issues[0].message
    assert "c -> d -> c" in issues[1].message


def test_cycle_leading_into_another_cycle_is_reported(reg: ToolRegistry) -> None:
    plan = [
        {"step": "p", "tool": "get_text", "after": ["q", "c"]},
        {"step": "q", "tool": "get_text", "after": ["p"]},
        {"step": "c", "tool": "get_text", "after": ["d"]},
        {"step": "d", "tool": "get_text", "after": ["c"]},
    ]
    issues = issues_of(plan, reg)
    assert codes_paths(issues) == [("cycle", "$.steps[0]"), ("cycle", "$.steps[2]")]
    assert "p -> q -> p" in issues[0].message
    assert "c -> d -> c" in issues[1].message


# --- the built-in llm step ---------------------------------------------------------------------


def test_llm_step_placeholder_in_instruction_and_output_schema(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_text"},
        {
            "step": 2,
            "tool": "llm",
            "args": {
                "instruction": "summarise {{steps.1.output}}",
                "input": "{{steps.1.output}}",
                "output_schema": "{{steps.1.output}}",
            },
        },
    ]
    issues = issues_of(plan, reg)
    assert ("llm_step_placeholder", "$.steps[1].args.instruction") in codes_paths(issues)
    assert ("llm_step_placeholder", "$.steps[1].args.output_schema") in codes_paths(issues)
    assert not any(i.path == "$.steps[1].args.input" for i in issues)
    msg = next(i.message for i in issues if i.path == "$.steps[1].args.instruction")
    assert msg == "'instruction' of an llm step is fixed by the plan: placeholders are not allowed"


def test_invalid_output_schema(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "llm", "args": {"instruction": "x", "output_schema": {"type": "nope"}}}
    ]
    issue = one(issues_of(plan, reg), "invalid_output_schema", "$.steps[0].args.output_schema")
    assert "'nope' is not valid" in issue.message


def test_llm_step_missing_instruction(reg: ToolRegistry) -> None:
    issue = one(issues_of([{"step": 1, "tool": "llm"}], reg), "missing_param", "$.steps[0].args")
    assert issue.message == "missing required parameter 'instruction' for tool 'llm'"


def test_ref_through_llm_output_schema_is_path_checked(reg: ToolRegistry) -> None:
    schema = {
        "type": "object",
        "properties": {"iban": {"type": "string"}, "amount": {"type": "integer"}},
        "required": ["iban", "amount"],
    }
    plan = [
        {"step": 1, "tool": "get_text"},
        {
            "step": 2,
            "tool": "llm",
            "args": {
                "instruction": "extract",
                "input": "{{steps.1.output}}",
                "output_schema": schema,
            },
        },
        {"step": 3, "tool": "set_text", "args": {"text": "{{steps.2.output.iban}}"}},
        {"step": 4, "tool": "set_text", "args": {"text": "{{steps.2.output.bic}}"}},
        {"step": 5, "tool": "set_text", "args": {"text": "{{steps.2.output.amount}}"}},
        {"step": 6, "tool": "set_number", "args": {"n": "{{steps.2.output.amount}}"}},
    ]
    issues = issues_of(plan, reg)
    assert codes_paths(issues) == [
        ("bad_ref_path", "$.steps[3].args.text"),
        ("type_mismatch", "$.steps[4].args.text"),
    ]
    assert (
        issues[0].message == "'{{steps.2.output.bic}}': no such path on the return type of step '2'"
    )
    assert issues[1].message == "'{{steps.2.output.amount}}' has type integer; expected string"


def test_llm_default_output_is_a_string(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "llm", "args": {"instruction": "extract the IBAN"}},
        {"step": 2, "tool": "set_text", "args": {"text": "{{steps.1.output.iban}}"}},
    ]
    one(issues_of(plan, reg), "bad_ref_path", "$.steps[1].args.text")


# --- whole-plan behaviour ----------------------------------------------------------------------


def test_demo_plan_is_valid(registry: ToolRegistry) -> None:
    report = validate(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS)
    assert report.ok
    assert report.issues == ()
    assert report.plan_hash == Plan.parse(demo.PLAN).hash


def test_demo_seed_plan_is_valid(registry: ToolRegistry) -> None:
    assert validate(Plan.parse(demo.SEED_PLAN), registry, inputs=demo.INPUTS).ok


def test_all_issues_are_reported_at_once(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "no_such_tool"},
        {"step": 2, "tool": "set_text", "args": {"text": "x", "extra": 1}},
        {"step": 3, "tool": "set_many", "args": {"text": "x"}},
        {"step": 4, "tool": "set_number", "args": {"n": "not a number"}},
        {"step": 5, "tool": "set_text", "args": {"text": "{{steps.99.output}}"}},
    ]
    report = validate(Plan.parse(plan), reg)
    assert not report.ok
    assert codes_paths(report.issues) == [
        ("unknown_tool", "$.steps[0].tool"),
        ("unknown_param", "$.steps[1].args.extra"),
        ("missing_param", "$.steps[2].args"),
        ("invalid_arg", "$.steps[3].args.n"),
        ("unknown_step", "$.steps[4].args.text"),
    ]


def test_issues_are_ordered_by_step_position(reg: ToolRegistry) -> None:
    plan: list[dict[str, Any]] = [{"step": i, "tool": "get_text"} for i in range(12)]
    plan[11] = {"step": 11, "tool": "set_text", "args": {}}
    plan[10] = {"step": 10, "tool": "nope"}
    plan[2] = {"step": 2, "tool": "set_number", "args": {"n": 3, "q": 1}}
    plan[0] = {"step": 0, "tool": "get_text", "after": ["missing"]}
    issues = issues_of(plan, reg, max_steps=5)
    assert codes_paths(issues) == [
        ("too_many_steps", "$.steps"),
        ("unknown_step", "$.steps[0].after[0]"),
        ("unknown_param", "$.steps[2].args.q"),
        ("unknown_tool", "$.steps[10].tool"),
        ("missing_param", "$.steps[11].args"),
    ]


def test_validation_does_not_depend_on_step_order(reg: ToolRegistry) -> None:
    plan = [
        {"step": 2, "tool": "set_text", "args": {"text": "{{steps.1.output.name}}"}},
        {"step": 1, "tool": "get_profile"},
    ]
    assert issues_of(plan, reg) == []


def test_issue_to_json() -> None:
    issue = Issue("unknown_tool", "$.steps[0].tool", "unknown tool 'x'")
    assert issue.to_json() == {
        "code": "unknown_tool",
        "path": "$.steps[0].tool",
        "message": "unknown tool 'x'",
    }


# --- bugs found while testing --------------------------------------------------------------------


def parse_then_validate(text: str, reg: ToolRegistry) -> tuple[Issue, ...]:
    """Every issue of a plan, from parsing or validation: the two ways a plan is rejected."""
    try:
        plan = Plan.parse(text)
    except PlanInvalid as exc:
        return exc.issues
    return validate(plan, reg).issues


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_rejected(reg: ToolRegistry, constant: str) -> None:
    text = f'[{{"step": 1, "tool": "set_ratio", "args": {{"x": {constant}}}}}]'
    assert parse_then_validate(text, reg)


def test_lone_surrogate_is_rejected(reg: ToolRegistry) -> None:
    text = '[{"step": 1, "tool": "set_text", "args": {"text": "\\ud800"}}]'
    assert parse_then_validate(text, reg)


def test_deeply_nested_json_is_rejected_as_not_json() -> None:
    issues = parse_issues("[" * 100_000 + "]" * 100_000)
    assert codes_paths(issues) == [("not_json", "$")]


def test_nested_literal_under_key_named_args_is_checked_against_its_own_schema(
    reg: ToolRegistry,
) -> None:
    plan = [
        {"step": 1, "tool": "get_number"},
        {
            "step": 2,
            "tool": "set_grid",
            "args": {"grid": {"args": {"grid": 1, "other": "{{steps.1.output}}"}}},
        },
    ]
    assert issues_of(plan, reg) == []


def test_nested_literal_under_other_key_is_accepted(reg: ToolRegistry) -> None:
    plan = [
        {"step": 1, "tool": "get_number"},
        {
            "step": 2,
            "tool": "set_grid",
            "args": {"grid": {"row": {"grid": 1, "other": "{{steps.1.output}}"}}},
        },
    ]
    assert issues_of(plan, reg) == []
    plan[1]["args"] = {"grid": {"row": {"grid": "1", "other": "{{steps.1.output}}"}}}
    issue = one(issues_of(plan, reg), "invalid_arg", "$.steps[1].args.grid.row.grid")
    assert issue.message == "'1' is not of type 'integer'"
