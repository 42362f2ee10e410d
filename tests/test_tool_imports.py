"""Tools imported from LangChain and pydantic-ai (the real packages), tools built from a JSON
Schema, the MCP tools file's checks that need no server, and the floor under ``undeclared``."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from planlock import Plan, Policy, ToolRegistry, approve_all, run_sync
from planlock.errors import ApprovalDenied, ApprovalRequired, ToolsNotFound, UsageError
from planlock.policy import evaluate
from planlock.testing import memory_journal
from planlock.tools import from_langchain, from_pydantic_ai, mcp_tools, schema_tool
from planlock.validation import validate


def plan(*steps: dict[str, Any]) -> Plan:
    return Plan.parse(json.dumps(list(steps)))


# --- LangChain ----------------------------------------------------------------------------------
# Imported in the tests that use it, as pydantic-ai below: importing langchain_core costs about
# 0.7 s of CPU, which every xdist worker would pay at collection (this file runs on one).

sent: list[dict[str, str]] = []


@functools.cache
def multiply_tool() -> Any:
    """A LangChain tool made with ``@tool``."""
    from langchain_core.tools import tool

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    return multiply


@functools.cache
def send_email_tool() -> Any:
    """A LangChain ``StructuredTool`` that records what it sends in ``sent``."""
    from langchain_core.tools import StructuredTool

    def _send_email(to: str, body: str) -> str:
        sent.append({"to": to, "body": body})
        return "sent"

    return StructuredTool.from_function(_send_email, name="send_email", description="Send mail.")


def test_langchain_tool_runs_through_validation_and_the_executor() -> None:
    t = from_langchain(multiply_tool(), effect="read", idempotent=True)
    assert t.description == "Multiply two numbers."
    assert t.params_schema["required"] == ["a", "b"]
    assert t.origin == {"kind": "langchain", "class": "StructuredTool", "name": "multiply"}
    registry = ToolRegistry([t])
    bad = validate(plan({"step": 1, "tool": "multiply", "args": {"a": "x"}}), registry)
    assert {i.code for i in bad.issues} == {"invalid_arg", "missing_param"}
    result = run_sync(
        plan({"step": 1, "tool": "multiply", "args": {"a": 6, "b": 7}}),
        registry,
        journal=memory_journal(),
    )
    assert result.ok, result.error
    assert result.outputs == {"1": 42}


def test_langchain_sink_needs_a_person_and_all_its_params_are_sensitive() -> None:
    sent.clear()
    registry = ToolRegistry([from_langchain(send_email_tool(), effect="send")])
    assert registry["send_email"].sensitive == frozenset({"to", "body"})
    mail = plan({"step": 1, "tool": "send_email", "args": {"to": "a@b.c", "body": "hi"}})
    with pytest.raises(ApprovalRequired):
        run_sync(mail, registry, journal=memory_journal())
    assert sent == []
    assert run_sync(mail, registry, journal=memory_journal(), approver=approve_all()).ok
    assert sent == [{"to": "a@b.c", "body": "hi"}]


@pytest.mark.parametrize("effect", [None, "", "readonly", "undeclared"])
def test_adapters_require_an_explicit_effect(effect: Any) -> None:
    with pytest.raises(UsageError, match="effect is required"):
        from_langchain(multiply_tool(), effect=effect)
    with pytest.raises(UsageError, match="effect is required"):
        from_pydantic_ai(pydantic_ai_tool(_lookup), effect=effect)
    with pytest.raises(TypeError):
        from_langchain(multiply_tool())  # type: ignore[call-arg]  # no default


def test_adapters_refuse_other_objects() -> None:
    with pytest.raises(UsageError, match="LangChain BaseTool"):
        from_langchain(_lookup, effect="read")
    with pytest.raises(UsageError, match=r"pydantic_ai\.Tool"):
        from_pydantic_ai(multiply_tool(), effect="read")


# --- pydantic-ai --------------------------------------------------------------------------------
# Imported in the tests that use it: importing pydantic-ai costs about 1.4 s of CPU, which every
# xdist worker would pay at collection.


def pydantic_ai_tool(function: Any, **kwargs: Any) -> Any:
    from pydantic_ai import Tool

    return Tool(function, **kwargs)


def _lookup(city: str, units: str = "metric") -> dict[str, Any]:
    """Look up the weather.

    Args:
        city: The city.
        units: metric or imperial.
    """
    return {"city": city, "units": units, "temp": 21}


def test_pydantic_ai_tool_runs_with_its_own_validation() -> None:
    t = from_pydantic_ai(pydantic_ai_tool(_lookup), effect="read", trusted_output=["temp"])
    assert t.name == "_lookup"
    assert t.params_schema["properties"]["city"]["description"] == "The city."
    assert t.trusted_paths == ("temp",)
    assert t.returns_schema["type"] == "object"
    registry = ToolRegistry([t])
    result = run_sync(
        plan({"step": 1, "tool": "_lookup", "args": {"city": "Oslo"}}),
        registry,
        journal=memory_journal(),
    )
    assert result.ok, result.error
    assert result.outputs == {"1": {"city": "Oslo", "units": "metric", "temp": 21}}
    bad = validate(plan({"step": 1, "tool": "_lookup", "args": {"town": "Oslo"}}), registry)
    assert {i.code for i in bad.issues} == {"unknown_param", "missing_param"}


def test_pydantic_ai_tool_that_needs_a_run_context_is_refused() -> None:
    from pydantic_ai import RunContext

    async def with_ctx(ctx: RunContext[int], x: int) -> int:
        return x

    # The annotations as objects: pydantic-ai resolves strings in the module, not in this test.
    with_ctx.__annotations__ = {"ctx": RunContext[int], "x": int, "return": int}

    with pytest.raises(UsageError, match="RunContext"):
        from_pydantic_ai(pydantic_ai_tool(with_ctx, takes_ctx=True), effect="read")


def test_importing_planlock_imports_no_optional_framework() -> None:
    code = (
        "import sys, planlock, planlock.cli, planlock.tools\n"
        "print([m for m in ('mcp', 'langchain_core', 'pydantic_ai') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# --- schema tools -------------------------------------------------------------------------------


def test_schema_tool_checks_arguments_against_the_schema_and_keeps_odd_names() -> None:
    got: list[dict[str, Any]] = []

    async def call(args: dict[str, Any]) -> Any:
        got.append(args)
        return "ok"

    schema = {
        "type": "object",
        "properties": {
            "from": {"type": "string", "pattern": "^[a-z]+$"},
            "user-id": {"type": "integer"},
            "json": {"type": "boolean"},
        },
        "required": ["from"],
    }
    t = schema_tool(call, name="odd", description="", input_schema=schema, effect="read")
    assert t.params_schema == schema
    registry = ToolRegistry([t])
    assert run_sync(plan({"step": 1, "tool": "odd", "args": {"from": "abc"}}), registry).ok
    assert got == [{"from": "abc"}]  # optional parameters the plan left out are left out
    result = run_sync(
        plan({"step": 1, "tool": "odd", "args": {"from": "abc", "user-id": 7, "json": True}}),
        registry,
    )
    assert result.ok
    assert got[-1] == {"from": "abc", "user-id": 7, "json": True}
    # The schema's pattern is enforced (statically on the literal, and again at the call).
    bad = validate(plan({"step": 1, "tool": "odd", "args": {"from": "ABC"}}), registry)
    assert [i.code for i in bad.issues] == ["invalid_arg"]
    with pytest.raises(Exception, match="does not match"):
        t.args_model.model_validate({"from": "ABC"})


def test_schema_tool_without_effect_is_undeclared_and_every_param_sensitive() -> None:
    async def call(args: dict[str, Any]) -> Any:
        return None

    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {}}}
    t = schema_tool(call, name="x", description="", input_schema=schema, effect=None)
    assert t.effect == "undeclared"
    assert t.sensitive == frozenset({"a", "b"})
    with pytest.raises(UsageError, match="describe an object"):
        schema_tool(call, name="y", description="", input_schema={"type": "string"}, effect=None)


# --- the floor under undeclared -----------------------------------------------------------------


def _undeclared() -> ToolRegistry:
    async def call(args: dict[str, Any]) -> Any:
        return "done"

    schema = {"type": "object", "properties": {"n": {"type": "string"}}}
    return ToolRegistry(
        [schema_tool(call, name="mystery", description="", input_schema=schema, effect=None)]
    )


def test_no_policy_lets_an_undeclared_tool_run_unasked() -> None:
    registry = _undeclared()
    tool_ = registry["mystery"]
    allow_everything = Policy.from_data(
        {
            "effects": {"read": "allow", "write": "allow", "pay": "allow", "send": "allow"},
            "untrusted_to_sensitive": "allow",
            "rules": [
                {"tool": "mystery", "action": "allow"},
                {"effect": "undeclared", "action": "allow"},
            ],
        },
        registry,
    )
    verdict = evaluate(allow_everything, tool_, {"n": "x"}, {"n": []}, lambda _: True)
    assert verdict.action == "require_approval"
    with pytest.raises(ApprovalRequired):
        run_sync(
            plan({"step": 1, "tool": "mystery", "args": {"n": "x"}}),
            registry,
            journal=memory_journal(),
            policy=allow_everything,
        )
    # At least as strict as the strictest declared effect: denying pay denies it too.
    deny_pay = Policy.from_data({"effects": {"pay": "deny"}})
    assert evaluate(deny_pay, tool_, {"n": "x"}, {"n": []}, lambda _: True).action == "deny"
    with pytest.raises(ApprovalDenied):
        run_sync(
            plan({"step": 1, "tool": "mystery", "args": {"n": "x"}}),
            registry,
            journal=memory_journal(),
            policy=deny_pay,
            approver=approve_all(),
        )


def test_a_policy_cannot_allow_undeclared_effects() -> None:
    with pytest.raises(UsageError, match="undeclared cannot be 'allow'"):
        Policy.from_data({"effects": {"undeclared": "allow"}})


# --- the MCP tools file (no server needed) ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[servers.a]\nargs = ['x']\n", "either 'command'"),
        ("[servers.a]\ncommand = 'x'\nurl = 'http://127.0.0.1/mcp'\n", "either 'command'"),
        ("[servers.a]\nurl = 'ftp://h/mcp'\n", "http:// or https://"),
        ("[servers.a]\ncommand = 'x'\n[servers.a.tools.t]\neffect = 'readonly'\n", "effect"),
        ("[servers.a]\ncommand = 'x'\n[servers.a.tools.t]\neffcet = 'read'\n", "Extra inputs"),
        ("servers = {}\n", r"no \[servers\.NAME\]"),
        ("[servers.a\n", "not valid TOML"),
    ],
)
def test_mcp_tools_file_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "tools.toml"
    path.write_text(body)
    with pytest.raises(ToolsNotFound, match=message):
        mcp_tools(path)


def test_mcp_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tools.toml"
    path.write_text("[servers.gone]\ncommand = 'planlock-no-such-command-xyz'\n")
    with pytest.raises(ToolsNotFound, match="MCP server 'gone'"):
        mcp_tools(path)


def test_mcp_tools_refuses_to_block_a_running_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "tools.toml"
    path.write_text("[servers.gone]\ncommand = 'planlock-no-such-command-xyz'\n")

    async def inside() -> None:
        mcp_tools(path)

    with pytest.raises(UsageError, match=r"^mcp_tools\(\) was called inside an event loop"):
        anyio.run(inside)
