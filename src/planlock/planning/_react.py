"""A ReAct baseline: think, act, observe, with the same backends and the same tool registry.

This is what planlock is compared against, not something to deploy: the model picks every next
tool *after* reading the previous tool's output, so text inside an output (an email, a ticket,
a web page) can steer it. Each turn the model answers one JSON object, either a tool call
``{"thought": ..., "tool": ..., "args": {...}}`` or ``{"thought": ..., "final_answer": ...}``;
the reply is constrained by a JSON Schema generated from the registry (tool names as ``const``,
each tool's own argument schema), the same way for every backend. Tool calls run with no
approval gate, as in a typical ReAct agent; tool results are fed back verbatim.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio.to_thread
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from planlock.errors import LLMError
from planlock.journal import Journal, llm_called
from planlock.llm import LLM, LLMReply, LLMRequest, Message, call_model
from planlock.planning._plan_schema import plan_schema
from planlock.planning._prompt import describe_tools
from planlock.tools import StepContext, Tool, ToolRegistry

__all__ = ["ReactCall", "ReactResult", "action_reply", "offered_tools", "react", "react_schema"]

THOUGHT_MAX = 240

_SYSTEM = """\
You are an agent that reaches a goal by calling tools, one call per turn. After each call you \
see its result; then you choose the next call, or finish.
Answer each turn with JSON only, one of:
{"thought": "<short reasoning>", "tool": "<tool>", "args": {...}} to call a tool;
{"thought": "<short reasoning>", "final_answer": "<answer for the user>"} when you are done.

Tools:
"""


def react_schema(registry: ToolRegistry) -> dict[str, Any]:
    """One turn's reply: a call of a registered tool (name as ``const``), or a final answer."""

    # Reuse the planner's per-tool argument schemas (placeholders make no sense here, but they
    # are plain strings, which every string parameter accepts anyway).
    steps = plan_schema(registry, llm_step=False, cannot_plan=False)
    branches: list[dict[str, Any]] = []
    thought = {"type": "string", "maxLength": THOUGHT_MAX}
    for step in steps["properties"]["steps"]["items"]["anyOf"]:
        props = step["properties"]
        branches.append(
            {
                "type": "object",
                "properties": {"thought": thought, "tool": props["tool"], "args": props["args"]},
                "required": ["thought", "tool", "args"],
                "additionalProperties": False,
            }
        )
    branches.append(
        {
            "type": "object",
            "properties": {"thought": thought, "final_answer": {"type": "string"}},
            "required": ["thought", "final_answer"],
            "additionalProperties": False,
        }
    )
    schema: dict[str, Any] = {"type": "object", "anyOf": branches}
    if "$defs" in steps:
        schema["$defs"] = steps["$defs"]
    return schema


def offered_tools(schema: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The tools a ReAct turn schema lets the model call, with their argument schemas."""
    out: dict[str, dict[str, Any]] = {}
    for branch in (schema or {}).get("anyOf", []):
        props = branch.get("properties", {}) if isinstance(branch, dict) else {}
        tool = props.get("tool", {})
        if "final_answer" not in props and isinstance(tool, dict) and "const" in tool:
            out[str(tool["const"])] = props.get("args", {})
    return out


def action_reply(tool: str, args: Mapping[str, Any], thought: str = "") -> str:
    """A ReAct turn that calls ``tool`` (for scripted and worst-case test models)."""
    return json.dumps({"thought": thought, "tool": tool, "args": dict(args)})


@dataclass(frozen=True)
class ReactCall:
    """One tool call the ReAct agent made."""

    turn: int
    tool: str
    args: dict[str, Any]
    ok: bool
    output: Any = None
    error: str | None = None


@dataclass
class ReactResult:
    """What a ReAct run did."""

    goal: str
    status: Literal["answered", "max_turns", "llm_error", "invalid_reply"] = "max_turns"
    calls: list[ReactCall] = field(default_factory=list)
    final_answer: str | None = None
    error: str | None = None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    llm_seconds: float = 0.0
    messages: list[Message] = field(default_factory=list)
    """The whole conversation, tool results included."""

    @property
    def tools_called(self) -> list[str]:
        return [c.tool for c in self.calls]


async def react(
    goal: str,
    registry: ToolRegistry,
    llm: LLM,
    *,
    context: Mapping[str, Any] | None = None,
    max_turns: int = 8,
    journal: Journal | None = None,
    run_id: str = "react",
    max_tokens: int = 384,
) -> ReactResult:
    """Run the ReAct loop until a final answer, an error, or ``max_turns`` model calls."""
    schema = react_schema(registry)
    ctx = json.dumps(dict(context or {}), ensure_ascii=False)
    messages = [
        Message("system", _SYSTEM + describe_tools(registry, llm_step=False)),
        Message("user", f"Goal: {goal}\n\nContext (trusted): {ctx}"),
    ]
    result = ReactResult(goal=goal, messages=messages)

    def record(kind: str, data: dict[str, Any]) -> None:
        if journal is not None:
            journal.record(run_id, kind, data)

    for turn in range(1, max_turns + 1):
        request = LLMRequest(tuple(messages), "react", schema, max_tokens)
        try:
            reply = await _complete(llm, request)
        except LLMError as exc:
            result.status, result.error = "llm_error", str(exc)
            record("llm_called", llm_called("react", llm, request, error=exc, turn=turn))
            return result
        result.llm_calls += 1
        result.input_tokens += reply.input_tokens
        result.output_tokens += reply.output_tokens
        result.llm_seconds += reply.latency_s
        record("llm_called", llm_called("react", llm, request, reply, turn=turn))
        messages.append(Message("assistant", reply.text))
        try:
            turn_data = json.loads(reply.text)
        except json.JSONDecodeError:
            turn_data = None
        if not isinstance(turn_data, dict):
            result.status, result.error = "invalid_reply", "the reply is not a JSON object"
            return result
        if "final_answer" in turn_data:
            result.status, result.final_answer = "answered", str(turn_data["final_answer"])
            return result
        name, args = turn_data.get("tool"), turn_data.get("args")
        tool = registry.get(name) if isinstance(name, str) else None
        if tool is None or not isinstance(args, dict):
            observation = f"Error: there is no tool {name!r}."
            result.calls.append(ReactCall(turn, str(name), {}, ok=False, error=observation))
        else:
            record("step_started", {"step": str(turn), "tool": tool.name, "args": args})
            call = await _invoke(tool, args, run_id, turn)
            result.calls.append(call)
            if call.ok:
                record("step_finished", {"step": str(turn), "output": call.output})
                observation = f"Result of {tool.name}: " + json.dumps(
                    call.output, ensure_ascii=False
                )
            else:
                record("step_failed", {"step": str(turn), "error": call.error})
                observation = f"Error from {tool.name}: {call.error}"
        messages.append(Message("user", observation))
    return result


async def _complete(llm: LLM, request: LLMRequest) -> LLMReply:
    started = time.perf_counter()
    try:
        reply = await call_model(llm, request)
    except LLMError:
        raise
    except Exception as exc:
        raise LLMError(llm.name, f"{type(exc).__name__}: {exc}") from exc
    if reply.latency_s == 0.0:
        return LLMReply(
            reply.text,
            reply.model,
            reply.input_tokens,
            reply.output_tokens,
            time.perf_counter() - started,
            reply.finish_reason,
            reply.extra,
        )
    return reply


async def _invoke(tool: Tool, args: dict[str, Any], run_id: str, turn: int) -> ReactCall:
    try:
        validated = tool.args_model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return ReactCall(turn, tool.name, args, ok=False, error=f"invalid arguments: {problems}")
    kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
    if tool.context_param:
        kwargs[tool.context_param] = StepContext(run_id, str(turn), 1)
    try:
        if tool.is_async:
            output = await tool.fn(**kwargs)
        else:
            output = await anyio.to_thread.run_sync(lambda: tool.fn(**kwargs))
        return ReactCall(turn, tool.name, args, ok=True, output=to_jsonable_python(output))
    except Exception as exc:
        return ReactCall(turn, tool.name, args, ok=False, error=f"{type(exc).__name__}: {exc}")
