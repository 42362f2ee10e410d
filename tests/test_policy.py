"""The policy (R5, R6): per-effect defaults, rules per tool and per effect, conditions on the
arguments (JSON Schema) and on provenance, loading from TOML and YAML, and ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from planlock import Policy, Reason, Rule, Tool, ToolRegistry, UsageError, Verdict
from planlock.policy._policy import evaluate
from planlock.tools._llmstep import LLM_STEP_TOOL

EFFECT_DEFAULTS = {
    "read": "allow",
    "write": "require_approval",
    "delete": "require_approval",
    "send": "require_approval",
    "pay": "require_approval",
    "undeclared": "require_approval",
}


def build_registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def read_bill() -> str:
        return "bill"

    @reg.tool(effect="read", sensitive=["url"])
    def fetch(url: str, size: int = 10) -> str:
        return url

    @reg.tool(effect="write", sensitive=["path"])
    def save(path: str, content: str) -> str:
        return path

    @reg.tool(effect="delete", sensitive=["path"])
    def remove(path: str) -> bool:
        return True

    @reg.tool(effect="send", sensitive=["to"])
    def email(to: str, body: str) -> str:
        return to

    @reg.tool(effect="pay", sensitive=["recipient"])
    def send_money(recipient: str, amount: float) -> str:
        return recipient

    @reg.tool
    def mystery(x: str) -> str:
        return x

    return reg


REG = build_registry()
SEND_MONEY = REG["send_money"]
FETCH = REG["fetch"]
ALL_TRUSTED: dict[str, list[str]] = {}


def is_trusted(label: str) -> bool:
    return label == "plan" or label.startswith("input:")


def describe(label: str) -> str:
    return f"<{label}>"


def decide(
    policy: Policy,
    tool: Tool,
    args: Mapping[str, Any],
    provenance: Mapping[str, list[str]] | None = None,
    known: Callable[[str], bool] = lambda _: True,
) -> Verdict:
    prov = provenance if provenance is not None else {k: ["plan"] for k in args}
    return evaluate(policy, tool, args, prov, is_trusted, describe, known=known)


def keys(verdict: Verdict) -> list[str]:
    return [r.key for r in verdict.reasons]


def reason(verdict: Verdict, key: str) -> Reason:
    (found,) = [r for r in verdict.reasons if r.key == key]
    return found


PAYMENT = {"recipient": "DE89 3704 0044 0532 0130 00", "amount": 50}
UNTRUSTED_RECIPIENT = {"recipient": ["step:2"], "amount": ["plan"]}


# --- defaults ------------------------------------------------------------------------------------


def test_the_default_policy_allows_reads_and_asks_for_everything_else() -> None:
    policy = Policy()
    assert policy.effects == EFFECT_DEFAULTS
    assert policy.untrusted_to_sensitive == "require_approval"
    assert policy.rules == ()


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read_bill", {}),
        ("save", {"path": "/tmp/x", "content": "c"}),
        ("remove", {"path": "/tmp/x"}),
        ("email", {"to": "a@b.c", "body": "hi"}),
        ("send_money", PAYMENT),
        ("mystery", {"x": "?"}),
    ],
)
def test_each_effect_gets_its_default_action(tool: str, args: dict[str, Any]) -> None:
    t = REG[tool]
    verdict = decide(Policy(), t, args)
    assert verdict.action == EFFECT_DEFAULTS[t.effect]
    (only,) = verdict.reasons
    assert only.key == f"effect:{t.effect}"
    assert (only.at_call, only.certain) == (False, True)
    if t.effect == "read":
        assert verdict.concerns == ()
    else:
        assert verdict.concerns == verdict.reasons


def test_an_undeclared_effect_is_named_as_such() -> None:
    verdict = decide(Policy(), REG["mystery"], {"x": "?"})
    assert REG["mystery"].effect == "undeclared"
    assert reason(verdict, "effect:undeclared").message == "declares no effect"


def test_untrusted_data_in_a_sensitive_parameter_needs_approval_on_the_call() -> None:
    verdict = decide(Policy(), FETCH, {"url": "http://x", "size": 1}, {"url": ["step:1"]})
    assert verdict.action == "require_approval"
    flow = reason(verdict, "flow:url")
    assert flow.action == "require_approval"
    assert (flow.at_call, flow.certain, flow.params) == (True, True, ("url",))
    assert "fetch.url" in flow.message
    assert "<step:1>" in flow.message  # the sources, as ``describe`` names them
    assert reason(verdict, "effect:read").action == "allow"


def test_untrusted_data_in_a_parameter_that_is_not_sensitive_is_no_flow() -> None:
    verdict = decide(Policy(), FETCH, {"url": "http://x", "size": 1}, {"size": ["step:1"]})
    assert verdict.action == "allow"
    assert keys(verdict) == ["effect:read"]


def test_trusted_sources_in_a_sensitive_parameter_are_no_flow() -> None:
    prov = {"recipient": ["input:user", "plan"], "amount": ["plan"]}
    verdict = decide(Policy(), SEND_MONEY, PAYMENT, prov)
    assert keys(verdict) == ["effect:pay"]


def test_every_untrusted_source_is_named_in_the_flow() -> None:
    prov = {"recipient": ["plan", "step:1", "step:2", "input:user"]}
    verdict = decide(Policy(), SEND_MONEY, PAYMENT, prov)
    message = reason(verdict, "flow:recipient").message
    assert "<step:1>" in message
    assert "<step:2>" in message
    assert "input:user" not in message


@pytest.mark.parametrize("action", ["allow", "require_approval", "deny"])
def test_untrusted_to_sensitive_sets_the_flow_action(action: str) -> None:
    policy = Policy.model_validate({"untrusted_to_sensitive": action, "effects": {"read": "allow"}})
    verdict = decide(policy, FETCH, {"url": "u"}, {"url": ["step:1"]})
    assert reason(verdict, "flow:url").action == action
    assert verdict.action == action
    assert ("flow:url" in [r.key for r in verdict.concerns]) == (action != "allow")


def test_effect_defaults_can_be_overridden_and_the_rest_keep_theirs() -> None:
    policy = Policy.model_validate({"effects": {"pay": "allow", "read": "require_approval"}})
    assert policy.effects == {**EFFECT_DEFAULTS, "pay": "allow", "read": "require_approval"}
    assert decide(policy, SEND_MONEY, PAYMENT).action == "allow"
    assert decide(policy, REG["read_bill"], {}).action == "require_approval"
    assert decide(policy, REG["email"], {"to": "a", "body": "b"}).action == "require_approval"


def test_an_effect_can_be_denied_outright() -> None:
    policy = Policy.model_validate({"effects": {"delete": "deny"}})
    verdict = decide(policy, REG["remove"], {"path": "/"})
    assert verdict.action == "deny"
    assert reason(verdict, "effect:delete").action == "deny"


def test_overriding_an_effect_default_does_not_waive_the_flow_check() -> None:
    policy = Policy.model_validate({"effects": {"pay": "allow"}})
    verdict = decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT)
    assert verdict.action == "require_approval"
    assert [r.key for r in verdict.concerns] == ["flow:recipient"]


# --- rules ---------------------------------------------------------------------------------------


def test_an_explicit_tool_rule_overrides_the_effect_default() -> None:
    policy = Policy(rules=(Rule(tool="save", action="allow", reason="scratch files are fine"),))
    verdict = decide(policy, REG["save"], {"path": "/tmp/x", "content": "c"})
    assert verdict.action == "allow"
    assert keys(verdict) == ["rule:0"]
    assert reason(verdict, "rule:0").message == "scratch files are fine"
    # other write tools keep the default
    assert decide(policy, REG["email"], {"to": "a", "body": "b"}).action == "require_approval"


def test_an_effect_rule_overrides_the_effect_default() -> None:
    policy = Policy(rules=(Rule(effect="read", action="require_approval"),))
    verdict = decide(policy, REG["read_bill"], {})
    assert verdict.action == "require_approval"
    assert keys(verdict) == ["rule:0"]
    assert reason(verdict, "rule:0").message == "policy rule 0"
    assert decide(policy, SEND_MONEY, PAYMENT).action == "require_approval"


def test_rules_for_other_tools_or_effects_do_not_apply() -> None:
    policy = Policy(
        rules=(
            Rule(tool="email", action="deny"),
            Rule(effect="delete", action="deny"),
            Rule(tool="send_money", effect="read", action="deny"),  # never both
        )
    )
    verdict = decide(policy, SEND_MONEY, PAYMENT)
    assert verdict.action == "require_approval"
    assert keys(verdict) == ["effect:pay"]


@pytest.mark.parametrize(
    "rules",
    [
        (Rule(tool="save", action="allow"), Rule(tool="save", action="deny")),
        (Rule(tool="save", action="deny"), Rule(tool="save", action="allow")),
        (Rule(effect="write", action="deny"), Rule(tool="save", action="allow")),
        (Rule(tool="save", action="allow"), Rule(effect="write", action="deny")),
        (Rule(tool="save", action="require_approval"), Rule(tool="save", action="deny")),
    ],
)
def test_deny_always_wins(rules: tuple[Rule, ...]) -> None:
    verdict = decide(Policy(rules=rules), REG["save"], {"path": "p", "content": "c"})
    assert verdict.action == "deny"
    assert sorted(keys(verdict)) == ["rule:0", "rule:1"]


def test_require_approval_wins_over_allow() -> None:
    rules = (Rule(tool="save", action="allow"), Rule(effect="write", action="require_approval"))
    verdict = decide(Policy(rules=rules), REG["save"], {"path": "p", "content": "c"})
    assert verdict.action == "require_approval"
    assert [r.key for r in verdict.concerns] == ["rule:1"]


def test_a_deny_rule_wins_over_an_allowed_flow() -> None:
    policy = Policy(untrusted_to_sensitive="allow", rules=(Rule(tool="send_money", action="deny"),))
    verdict = decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT)
    assert verdict.action == "deny"


def test_an_allow_rule_for_the_tool_does_not_waive_the_flow_check() -> None:
    policy = Policy(rules=(Rule(tool="send_money", action="allow"),))
    assert decide(policy, SEND_MONEY, PAYMENT).action == "allow"
    verdict = decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT)
    assert verdict.action == "require_approval"
    assert [r.key for r in verdict.concerns] == ["flow:recipient"]


SMALL = {"type": "object", "properties": {"amount": {"type": "number", "maximum": 100}}}


def test_a_conditional_allow_on_literal_values_decides_statically() -> None:
    policy = Policy(rules=(Rule(tool="send_money", args=SMALL, action="allow"),))
    small = decide(policy, SEND_MONEY, {**PAYMENT, "amount": 99.5})
    assert small.action == "allow"
    assert keys(small) == ["rule:0"]
    assert (reason(small, "rule:0").certain, reason(small, "rule:0").at_call) == (True, False)
    big = decide(policy, SEND_MONEY, {**PAYMENT, "amount": 100.5})
    assert big.action == "require_approval"
    assert keys(big) == ["effect:pay"]  # the rule does not apply: the default stands


def test_a_conditional_allow_on_unknown_values_keeps_the_default_and_is_flagged() -> None:
    policy = Policy(rules=(Rule(tool="send_money", args=SMALL, action="allow"),))
    verdict = decide(
        policy,
        SEND_MONEY,
        {"recipient": "DE00", "amount": None},
        known=lambda p: p == "recipient",
    )
    assert verdict.action == "require_approval"
    rule = reason(verdict, "rule:0")
    assert (rule.action, rule.certain, rule.at_call) == ("allow", False, True)
    assert "run time" in rule.message
    effect = reason(verdict, "effect:pay")
    assert (effect.action, effect.certain, effect.at_call) == ("require_approval", True, False)


def test_a_conditional_deny_on_unknown_values_does_not_deny_in_advance() -> None:
    huge = {"properties": {"amount": {"minimum": 10_000}}}
    policy = Policy(rules=(Rule(tool="send_money", args=huge, action="deny"),))
    unknown = decide(policy, SEND_MONEY, {**PAYMENT, "amount": None}, known=lambda _: False)
    assert unknown.action == "require_approval"
    assert (reason(unknown, "rule:0").action, reason(unknown, "rule:0").certain) == ("deny", False)
    assert decide(policy, SEND_MONEY, {**PAYMENT, "amount": 20_000}).action == "deny"
    assert decide(policy, SEND_MONEY, {**PAYMENT, "amount": 20}).action == "require_approval"


NOT_ABROAD = {"not": {"properties": {"recipient": {"pattern": "^XX"}}, "required": ["recipient"]}}
TO_XX = {"anyOf": [{"properties": {"recipient": {"pattern": "^XX"}}, "required": ["recipient"]}]}
LARGE = {"properties": {"amount": {"minimum": 1000}}, "required": ["amount"]}
SMALL_AMOUNT = {"properties": {"amount": {"maximum": 100}}, "required": ["amount"]}


@pytest.mark.parametrize(
    ("action", "condition", "call", "expected"),
    [
        pytest.param(
            "allow",
            {**SMALL_AMOUNT, **NOT_ABROAD},
            {"recipient": "XX00 ATTACKER", "amount": 50},
            "require_approval",
            id="allow-small-but-not-abroad",
        ),
        pytest.param(
            "deny",
            {**LARGE, **TO_XX},
            {"recipient": "XX00 ATTACKER", "amount": 5000},
            "deny",
            id="deny-large-abroad-anyOf",
        ),
        pytest.param(
            "deny",
            {**LARGE, "not": {"properties": {"recipient": {"pattern": "^DE"}}}},
            {"recipient": "XX00 ATTACKER", "amount": 5000},
            "deny",
            id="deny-large-not-domestic",
        ),
    ],
)
def test_an_args_condition_sees_every_parameter_it_mentions(
    action: str, condition: dict[str, Any], call: dict[str, Any], expected: str
) -> None:
    policy = Policy.model_validate(
        {"rules": [{"tool": "send_money", "args": condition, "action": action}]}
    )
    # as JSON Schema reads it, the deny conditions match this call and the allow one does not
    assert jsonschema.Draft202012Validator(condition).is_valid(call) == (action == "deny")
    assert decide(policy, SEND_MONEY, call).action == expected


def test_an_args_condition_can_match_string_patterns() -> None:
    own = {"properties": {"recipient": {"pattern": "^DE89"}}, "required": ["recipient"]}
    policy = Policy(rules=(Rule(tool="send_money", args=own, action="allow"),))
    assert decide(policy, SEND_MONEY, PAYMENT).action == "allow"
    assert decide(policy, SEND_MONEY, {**PAYMENT, "recipient": "FR76"}).action == (
        "require_approval"
    )


def test_a_rule_with_an_untrusted_condition_decides_the_flow_instead_of_the_default() -> None:
    policy = Policy(
        effects={"pay": "allow"},
        rules=(Rule(tool="send_money", untrusted=("recipient",), action="allow", reason="ok"),),
    )
    verdict = decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT)
    assert verdict.action == "allow"
    assert "flow:recipient" not in keys(verdict)
    rule = reason(verdict, "rule:0")
    assert (rule.at_call, rule.certain, rule.params) == (True, True, ("recipient",))
    assert "untrusted data in recipient" in rule.message
    assert "<step:2>" in rule.message


def test_a_deny_rule_on_untrusted_data_beats_a_lenient_default() -> None:
    policy = Policy(
        untrusted_to_sensitive="allow",
        rules=(Rule(tool="send_money", untrusted=("recipient",), action="deny"),),
    )
    assert decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT).action == "deny"
    # with a trusted recipient the rule does not apply
    verdict = decide(policy, SEND_MONEY, PAYMENT)
    assert verdict.action == "require_approval"
    assert keys(verdict) == ["effect:pay"]


def test_an_untrusted_rule_leaves_the_flows_of_other_parameters_to_the_default() -> None:
    policy = Policy(
        effects={"send": "allow"},
        untrusted_to_sensitive="deny",
        rules=(Rule(tool="email", untrusted=("body",), action="allow"),),
    )
    both = {"to": ["step:1"], "body": ["step:1"]}
    verdict = decide(policy, REG["email"], {"to": "a", "body": "b"}, both)
    assert verdict.action == "deny"
    assert reason(verdict, "flow:to").action == "deny"
    assert reason(verdict, "rule:0").params == ("body",)


def test_untrusted_star_applies_to_any_parameter() -> None:
    policy = Policy(rules=(Rule(effect="pay", untrusted=("*",), action="deny"),))
    verdict = decide(policy, SEND_MONEY, PAYMENT, {"amount": ["step:7"]})
    assert verdict.action == "deny"
    assert reason(verdict, "rule:0").params == ("amount",)
    assert decide(policy, SEND_MONEY, PAYMENT).action == "require_approval"


def test_concerns_leave_out_plain_allows() -> None:
    policy = Policy(rules=(Rule(tool="send_money", untrusted=("recipient",), action="allow"),))
    verdict = decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT)
    assert set(keys(verdict)) == {"rule:0", "effect:pay"}
    assert [r.key for r in verdict.concerns] == ["effect:pay"]


def test_reasons_serialize_to_json() -> None:
    verdict = decide(Policy(), FETCH, {"url": "u"}, {"url": ["step:1"]})
    assert reason(verdict, "flow:url").to_json() == {
        "key": "flow:url",
        "action": "require_approval",
        "message": reason(verdict, "flow:url").message,
        "at_call": True,
        "certain": True,
        "params": ["url"],
    }


def test_a_conditional_untrusted_allow_on_unknown_values_keeps_the_flow_default() -> None:
    # Regression: an undecided rule with `untrusted` used to replace the flow's default, so the
    # static report called the flow allowed and nobody was asked before the run started.
    small = {"properties": {"size": {"maximum": 10}}}
    policy = Policy(rules=(Rule(tool="fetch", args=small, untrusted=("url",), action="allow"),))
    untrusted_url = {"url": ["step:1"], "size": ["input:n"]}
    verdict = decide(
        policy, FETCH, {"url": None, "size": None}, untrusted_url, known=lambda p: p == "url"
    )
    # Like a conditional allow without `untrusted`: it cannot waive approval in advance.
    assert verdict.action == "require_approval"
    flow = reason(verdict, "flow:url")
    assert (flow.action, flow.certain, flow.at_call) == ("require_approval", True, True)
    rule = reason(verdict, "rule:0")
    assert (rule.action, rule.certain, rule.params) == ("allow", False, ("url",))
    # on the concrete values the rule decides the flow
    small_call = decide(policy, FETCH, {"url": "u", "size": 5}, untrusted_url)
    assert small_call.action == "allow"
    assert "flow:url" not in keys(small_call)
    big_call = decide(policy, FETCH, {"url": "u", "size": 50}, untrusted_url)
    assert big_call.action == "require_approval"
    assert keys(big_call) == ["effect:read", "flow:url"]


def test_an_args_condition_needs_only_the_values_it_names() -> None:
    small = {"properties": {"amount": {"maximum": 100}}, "required": ["amount"]}
    policy = Policy(rules=(Rule(tool="send_money", args=small, action="allow"),))
    # the recipient is a reference (unknown statically), the amount a literal: decided now
    verdict = decide(
        policy, SEND_MONEY, {"recipient": None, "amount": 5}, known=lambda p: p == "amount"
    )
    assert verdict.action == "allow"
    assert reason(verdict, "rule:0").certain
    big = decide(
        policy, SEND_MONEY, {"recipient": None, "amount": 500}, known=lambda p: p == "amount"
    )
    assert big.action == "require_approval"
    assert keys(big) == ["effect:pay"]


# --- construction and checks against a registry --------------------------------------------------


def test_a_rule_with_an_invalid_json_schema_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        Rule(tool="save", action="allow", args={"type": "objekt"})


def test_a_policy_without_a_registry_is_not_checked_until_asked() -> None:
    policy = Policy.from_data({"rules": [{"tool": "nope", "action": "allow"}]})
    assert policy.rules[0].tool == "nope"
    with pytest.raises(UsageError, match="unknown tool 'nope'"):
        policy.check(REG)


def test_a_rule_for_the_llm_step_is_accepted_without_the_registry_knowing_it() -> None:
    policy = Policy.from_data({"rules": [{"tool": "llm", "action": "require_approval"}]}, REG)
    assert policy.rules[0].tool == "llm"
    verdict = decide(policy, LLM_STEP_TOOL, {"instruction": "x"})
    assert verdict.action == "require_approval"
    assert keys(verdict) == ["rule:0"]


def test_check_collects_every_problem() -> None:
    data = {
        "rules": [
            {"tool": "sendmoney", "action": "allow"},
            {"tool": "send_money", "untrusted": ["payee"], "action": "deny"},
            {"tool": "email", "effect": "pay", "action": "deny"},
            {"effect": "pay", "untrusted": ["recipient"], "action": "deny"},
        ]
    }
    with pytest.raises(UsageError) as info:
        Policy.from_data(data, REG, source="mine")
    text = str(info.value)
    assert text.startswith("mine: ")
    assert "rules[0]: unknown tool 'sendmoney'" in text
    assert "rules[1]: tool 'send_money' has no parameter 'payee'" in text
    assert "rules[2]: tool 'email' has effect 'send', not 'pay'" in text
    assert "rules[3]: 'untrusted' names parameters, so the rule needs a 'tool'" in text


def test_an_untrusted_condition_on_the_llm_step_is_checked_against_its_parameters() -> None:
    # Regression: the built-in llm step's parameters were unknown to the check, so this rule
    # was refused as if it had no tool.
    data = {"rules": [{"tool": "llm", "untrusted": ["input"], "action": "require_approval"}]}
    policy = Policy.from_data(data, REG)
    assert policy.rules[0].untrusted == ("input",)
    over_bill = decide(
        policy, LLM_STEP_TOOL, {"instruction": "x", "input": "t"}, {"input": ["step:1"]}
    )
    assert over_bill.action == "require_approval"
    assert reason(over_bill, "rule:0").params == ("input",)
    over_user = decide(
        policy, LLM_STEP_TOOL, {"instruction": "x", "input": "t"}, {"input": ["input:u"]}
    )
    assert over_user.action == "allow"


@pytest.mark.parametrize(
    "rule",
    [
        {"tool": "llm", "args": {"properties": {"inptu": {}}}, "action": "deny"},
        {"tool": "llm", "untrusted": ["inptu"], "action": "deny"},
    ],
)
def test_a_typo_in_an_llm_rule_is_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="tool 'llm' has no parameter 'inptu'"):
        Policy.from_data({"rules": [rule]}, REG)


# --- loading from files --------------------------------------------------------------------------

TOML_POLICY = """
untrusted_to_sensitive = "deny"

[effects]
write = "allow"
delete = "deny"

[[rules]]
tool = "send_money"
action = "allow"
reason = "small payments"
args = { type = "object", properties = { amount = { type = "number", maximum = 100 } } }

[[rules]]
tool = "fetch"
untrusted = ["url"]
action = "require_approval"
reason = "look at the url first"

[[rules]]
effect = "send"
action = "deny"
"""

YAML_POLICY = """
effects:
  pay: allow
rules:
  - tool: send_money
    untrusted: [recipient]
    action: deny
    reason: never pay an address read from a document
  - effect: read
    action: require_approval
  - tool: save
    args:
      properties:
        path: {pattern: "^/tmp/"}
    action: allow
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_policy_loads_from_toml(tmp_path: Path) -> None:
    policy = Policy.load(write(tmp_path, "policy.toml", TOML_POLICY), REG)
    assert policy.untrusted_to_sensitive == "deny"
    assert policy.effects == {**EFFECT_DEFAULTS, "write": "allow", "delete": "deny"}
    assert [(r.tool, r.effect, r.action) for r in policy.rules] == [
        ("send_money", None, "allow"),
        ("fetch", None, "require_approval"),
        (None, "send", "deny"),
    ]
    assert policy.rules[1].untrusted == ("url",)
    # the loaded rules behave as written
    small = decide(policy, SEND_MONEY, {**PAYMENT, "amount": 10})
    assert (small.action, reason(small, "rule:0").message) == ("allow", "small payments")
    assert decide(policy, SEND_MONEY, {**PAYMENT, "amount": 1000}).action == "require_approval"
    assert decide(policy, REG["save"], {"path": "p", "content": "c"}).action == "allow"
    assert decide(policy, REG["remove"], {"path": "p"}).action == "deny"
    assert decide(policy, REG["email"], {"to": "a", "body": "b"}).action == "deny"
    fetched = decide(policy, FETCH, {"url": "u"}, {"url": ["step:1"]})
    assert fetched.action == "require_approval"  # the rule, not untrusted_to_sensitive=deny
    assert "flow:url" not in keys(fetched)
    assert decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT).action == "deny"


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_policy_loads_from_yaml(tmp_path: Path, suffix: str) -> None:
    policy = Policy.load(write(tmp_path, "policy" + suffix, YAML_POLICY), REG)
    assert policy.effects == {**EFFECT_DEFAULTS, "pay": "allow"}
    assert len(policy.rules) == 3
    assert decide(policy, SEND_MONEY, PAYMENT).action == "allow"
    denied = decide(policy, SEND_MONEY, PAYMENT, UNTRUSTED_RECIPIENT)
    assert denied.action == "deny"
    assert "never pay an address" in reason(denied, "rule:0").message
    assert decide(policy, REG["read_bill"], {}).action == "require_approval"
    assert decide(policy, REG["save"], {"path": "/tmp/a", "content": "c"}).action == "allow"
    assert decide(policy, REG["save"], {"path": "/etc/a", "content": "c"}).action == (
        "require_approval"
    )


def test_toml_and_yaml_load_to_equal_policies(tmp_path: Path) -> None:
    toml = 'untrusted_to_sensitive = "deny"\n[[rules]]\ntool = "email"\naction = "allow"\n'
    yaml = "untrusted_to_sensitive: deny\nrules:\n  - {tool: email, action: allow}\n"
    a = Policy.load(write(tmp_path, "a.toml", toml), REG)
    b = Policy.load(write(tmp_path, "b.yaml", yaml), REG)
    assert a == b


@pytest.mark.parametrize("name", ["empty.toml", "empty.yaml"])
def test_an_empty_file_is_the_default_policy(tmp_path: Path, name: str) -> None:
    assert Policy.load(write(tmp_path, name, ""), REG) == Policy()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param(
            "p.toml",
            '[[rules]]\ntool = "send_mony"\naction = "allow"\n',
            r"rules\[0\]: unknown tool 'send_mony'",
            id="unknown-tool",
        ),
        pytest.param(
            "p.yaml",
            "rules:\n  - {tool: send_money, untrusted: [payee], action: deny}\n",
            r"rules\[0\]: tool 'send_money' has no parameter 'payee'",
            id="unknown-param-in-untrusted",
        ),
        pytest.param(
            "p.toml",
            '[[rules]]\ntool = "send_money"\naction = "allow"\n'
            "args = { properties = { amt = { maximum = 1 } } }\n",
            r"rules\[0\]: tool 'send_money' has no parameter 'amt'",
            id="unknown-param-in-args",
        ),
        pytest.param(
            "p.toml",
            '[effects]\ntransfer = "allow"\n',
            "effects.transfer",
            id="unknown-effect-key",
        ),
        pytest.param(
            "p.yaml",
            "rules:\n  - {effect: transfer, action: allow}\n",
            "rules.0.effect",
            id="unknown-effect-in-rule",
        ),
        pytest.param(
            "p.yaml",
            "effects: {pay: maybe}\n",
            "effects.pay",
            id="unknown-action",
        ),
        pytest.param(
            "p.toml",
            '[[rules]]\ntool = "send_money"\naction = "allow"\nargs = { type = "objekt" }\n',
            "not a valid JSON Schema",
            id="invalid-json-schema",
        ),
        pytest.param(
            "p.yaml",
            "rules:\n  - {tool: send_money, action: allow, args: {minimum: nope}}\n",
            "not a valid JSON Schema",
            id="invalid-json-schema-keyword",
        ),
        pytest.param("p.toml", "rules = [\n", "is not valid TOML", id="malformed-toml"),
        pytest.param("p.yaml", "rules: [\n", "is not valid YAML", id="malformed-yaml"),
        pytest.param("p.yml", "effects: {read: allow\n", "is not valid YML", id="malformed-yml"),
        pytest.param("p.yaml", "- a\n- b\n", "valid dictionary", id="not-a-mapping"),
        pytest.param("p.toml", "unknown_key = 1\n", "unknown_key", id="unknown-key"),
    ],
)
def test_mistakes_are_refused_at_load_time(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(UsageError, match=message) as info:
        Policy.load(path, REG)
    assert str(path) in str(info.value)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(UsageError, match="cannot read policy") as info:
        Policy.load(path, REG)
    assert str(path) in str(info.value)
