from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from planlock import StepContext, ToolRegistry, UsageError


class Invoice(BaseModel):
    iban: str
    amount: float


def test_schemas_come_from_hints_and_docstrings() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="pay", free=["note"])
    def send_money(iban: str, amount: float, note: str = "") -> Invoice:
        """Send money.

        Args:
            iban: Account to pay into.
            amount: How much, in euros.
            note: Shown to the payee.
        """
        return Invoice(iban=iban, amount=amount)

    tool = reg["send_money"]
    props = tool.params_schema["properties"]
    assert props["iban"] == {
        "type": "string",
        "title": "Iban",
        "description": "Account to pay into.",
    }
    assert props["amount"]["type"] == "number"
    assert tool.params_schema["required"] == ["iban", "amount"]
    assert tool.params_schema["additionalProperties"] is False
    assert tool.returns_schema["properties"]["iban"]["type"] == "string"
    assert tool.description == "Send money."
    assert tool.effect == "pay"
    assert tool.sensitive == frozenset({"iban", "amount"})
    assert tool.trusted_output is False


def test_bare_decorator_leaves_the_effect_undeclared_never_read() -> None:
    reg = ToolRegistry()

    @reg.tool
    def mystery(x: int) -> int:
        return x

    assert reg["mystery"].effect == "undeclared"
    assert not reg["mystery"].read_only
    assert mystery(2) == 2  # the decorator returns the function unchanged


def test_unannotated_return_is_an_open_schema() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def anything(x: int):  # type: ignore[no-untyped-def]  # noqa: ANN202
        return x

    assert reg["anything"].returns_schema == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"effect": "explode"}, "effect must be one of"),
        ({"sensitive": ["nope"]}, "unknown parameters ['nope']"),
        ({"effect": "send", "free": ["nope"]}, "free names unknown parameters ['nope']"),
        ({"effect": "send", "free": ["x"], "sensitive": ["x"]}, "both sensitive and free"),
        ({"effect": "read", "free": ["x"]}, "'free' is for side-effecting tools only"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_bad_registrations_are_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    reg = ToolRegistry()

    def f(x: int) -> int:
        return x

    register: Any = reg.tool
    with pytest.raises(UsageError, match=re.escape(message)):
        register(**kwargs)(f)


def test_missing_hint_reserved_name_and_duplicates_are_refused() -> None:
    reg = ToolRegistry()

    def untyped(x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        return x

    with pytest.raises(UsageError, match="needs a type hint"):
        reg.tool(untyped)

    def llm(x: int) -> int:
        return x

    with pytest.raises(UsageError, match="reserved"):
        reg.tool(llm)

    def twice(x: int) -> int:
        return x

    reg.tool(twice)
    with pytest.raises(UsageError, match="already registered"):
        reg.tool(twice)


def test_step_context_is_injected_not_exposed() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="write")
    def save(value: str, ctx: StepContext) -> str:
        return ctx.idempotency_key + value

    assert list(reg["save"].params_schema["properties"]) == ["value"]
    assert reg["save"].context_param == "ctx"


def test_catalogue_lists_every_tool_sorted() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def b() -> int:
        return 1

    @reg.tool(effect="write", idempotent=True)
    def a() -> int:
        return 1

    names = [t["name"] for t in reg.catalogue()]
    assert names == ["a", "b"]
    assert reg.catalogue()[0]["idempotent"] is True
    assert len(reg) == 2
    assert "a" in reg
