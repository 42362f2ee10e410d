"""The planner (R1, R2): an LLM that sees only trusted input writes a complete plan.

The prompt holds the goal, the registry's tools (name, description, parameter and return types,
effect), the *names and shapes* of trusted context values, the plan format with its placeholder
rules, and one generic example. Never a tool's output: the planner runs before any tool does, and
nothing here accepts one.

The reply is constrained by a JSON Schema generated from the registry (``plan_schema``): each
step's ``tool`` is a ``const`` and its ``args`` follow that tool's own argument schema, with
``{{...}}`` placeholders allowed wherever a value is expected, so a constrained backend cannot
name an unknown tool. The schema also allows ``{"cannot_plan": "<why>"}`` for a goal the tools
cannot serve. The parsed plan is validated against the registry; an invalid plan is sent back
with every issue and regenerated, at most ``max_attempts`` times. Every call is journaled.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from planlock.core import MAX_ITEMS_CAP, STEP_ID_PATTERN, Plan, canonical_json, sha256_hex, types_of
from planlock.errors import CannotPlan, LLMError, PlanInvalid, PlanningFailed, UsageError
from planlock.journal import Journal
from planlock.llm import LLM, LLMReply, LLMRequest, Message
from planlock.tools import LLM_STEP_TOOL, LLM_TOOL, Tool, ToolRegistry
from planlock.validation import Issue, validate

__all__ = [
    "PLACEHOLDER_SCHEMA",
    "PlanAttempt",
    "Planner",
    "context_shape",
    "plan",
    "plan_schema",
    "plan_sync",
]

PLACEHOLDER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\{\{[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\}\}$",
}
"""A whole-value placeholder, allowed wherever a non-string value is expected."""

LIST_PLACEHOLDER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\{\{[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+|\.\*|\[\*\])*\}\}$",
}
"""A whole placeholder naming a list, where ``[*]`` may project every item's field
(``{{steps.1.output[*].iban}}``): for ``for_each`` and ``choices``."""

TEXT_PATTERN = r"^(?:[^{}]|\{\{[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\}\})*$"
"""A string argument: braces only as well-formed ``{{a.b.0.c}}`` placeholders."""

_DROP = frozenset({"title", "examples"})
_SHAPED = frozenset(
    {"type", "anyOf", "oneOf", "allOf", "$ref", "const", "enum", "properties", "items", "not"}
)
_OTHER_JSON: tuple[dict[str, Any], ...] = tuple(
    {"type": t} for t in ("number", "boolean", "null", "array", "object")
)
_REF_STEP = re.compile(r"\{\{steps\.([A-Za-z0-9_-]+)\.output")


# --------------------------------------------------------------------------------------------
# The plan's JSON Schema, generated from the registry


def plan_schema(
    registry: ToolRegistry,
    *,
    llm_step: bool = True,
    cannot_plan: bool = True,
    max_steps: int | None = None,
    loops: bool = True,
) -> dict[str, Any]:
    """The JSON Schema a planner's reply must follow, generated from ``registry``.

    One ``anyOf`` branch per tool: ``tool`` is a ``const``, ``args`` is the tool's own argument
    schema (``$defs`` hoisted to the root under ``<tool>__<name>``), where a value that is not a
    string may also be a whole ``{{...}}`` placeholder. ``llm_step`` adds the built-in quarantined
    ``llm`` step; ``cannot_plan`` allows ``{"cannot_plan": "<why>"}`` as the whole reply;
    ``max_steps`` bounds the number of steps (and so a runaway generation); ``loops`` offers
    ``for_each``/``max_items`` (small models tend to fill in every optional field they see).
    """
    defs: dict[str, Any] = {}
    tools = sorted(registry, key=lambda t: t.name)
    if llm_step:
        tools.append(LLM_STEP_TOOL)
    branches = [_step_schema(t, defs, loops=loops) for t in tools]
    steps: dict[str, Any] = {
        "type": "object",
        "properties": {"steps": {"type": "array", "minItems": 1, "items": {"anyOf": branches}}},
        "required": ["steps"],
        "additionalProperties": False,
    }
    if max_steps is not None:
        steps["properties"]["steps"]["maxItems"] = max_steps
    root: dict[str, Any]
    if cannot_plan:
        refusal = {
            "type": "object",
            "properties": {"cannot_plan": {"type": "string", "minLength": 1, "maxLength": 300}},
            "required": ["cannot_plan"],
            "additionalProperties": False,
        }
        root = {"type": "object", "anyOf": [steps, refusal]}
    else:
        root = steps
    if defs:
        root["$defs"] = defs
    return root


def _step_schema(tool: Tool, defs: dict[str, Any], *, loops: bool = True) -> dict[str, Any]:
    params = copy.deepcopy(tool.params_schema)
    prefix = f"{tool.name}__"
    local_defs = params.pop("$defs", {})
    renamed = {f"{prefix}{k}": _clean(v, prefix) for k, v in local_defs.items()}
    root = {"$defs": {**defs, **renamed}}
    for name, sub in renamed.items():
        defs[name] = _with_placeholders(sub, root)
    args = _with_placeholders(_clean(params, prefix), root)
    if tool is LLM_STEP_TOOL:
        # The instruction and output schema of a quarantined step are fixed by the plan (R4).
        props = args["properties"]
        props["instruction"] = {**props["instruction"], "pattern": "^[^{}]*$", "minLength": 1}
        props["output_schema"] = _clean(params["properties"]["output_schema"], prefix)
        props["choices"] = {
            "description": props["choices"].get("description", ""),
            "anyOf": [
                LIST_PLACEHOLDER_SCHEMA,
                {"type": "object", "additionalProperties": LIST_PLACEHOLDER_SCHEMA},
            ],
        }
    args.setdefault("type", "object")
    args.setdefault("properties", {})
    args["additionalProperties"] = False
    fields: dict[str, Any] = {
        "id": {"type": "string", "pattern": STEP_ID_PATTERN},
        "tool": {"const": tool.name},
        "args": args,
    }
    if loops:
        fields["for_each"] = LIST_PLACEHOLDER_SCHEMA
        fields["max_items"] = {"type": "integer", "minimum": 1, "maximum": MAX_ITEMS_CAP}
    return {
        "type": "object",
        "properties": fields,
        "required": ["id", "tool", "args"],
        "additionalProperties": False,
    }


def _clean(schema: Any, prefix: str) -> Any:
    """Drop titles; point ``$ref``s at the hoisted, prefixed ``$defs``."""
    if isinstance(schema, list):
        return [_clean(s, prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP and not isinstance(value, dict):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = "#/$defs/" + prefix + value.removeprefix("#/$defs/")
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _clean(v, prefix) for k, v in value.items()}
        else:
            out[key] = _clean(value, prefix)
    return out


def _with_placeholders(schema: Any, root: dict[str, Any]) -> Any:
    """Allow a whole ``{{...}}`` placeholder wherever the schema does not accept a string."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(out):
        out["pattern"] = TEXT_PATTERN
    if not _SHAPED & set(out):  # any JSON value: strings in it still hold only placeholders
        out["anyOf"] = [{"type": "string", "pattern": TEXT_PATTERN}, *_OTHER_JSON]
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _wrap(v, root) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _wrap(out["items"], root)
    if out.get("additionalProperties") is True and out.get("type") == "object":
        out["additionalProperties"] = {}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _wrap(out["additionalProperties"], root)
    for key in ("anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_with_placeholders(b, root) for b in out[key]]
    return out


def _wrap(schema: Any, root: dict[str, Any]) -> Any:
    inner = _with_placeholders(schema, root)
    types = types_of(inner, root)
    if types is None or "string" in types:
        return inner
    return {"anyOf": [inner, PLACEHOLDER_SCHEMA]}


# --------------------------------------------------------------------------------------------
# The prompt: trusted input only (R1)

_SYSTEM = """\
You are the planner of a tool-using agent. You write the whole plan before anything runs: the \
tools run later, exactly as you wrote them, and you never see their outputs.

Answer with JSON only: {"steps": [{"id": "1", "tool": "<tool>", "args": {...}}, ...]}
- Use only the tools listed below, with their parameter names. Step ids are "1", "2", ...
- Add only the steps the goal needs.
- An argument is a literal value, or a placeholder that is filled in at run time:
  {{<name>.<field>}} for a trusted context value listed with the goal;
  {{steps.<id>.output}} or {{steps.<id>.output.<field>}} for an earlier step's output \
(list items by number: {{steps.<id>.output.0.<field>}}).
  A placeholder that is the whole argument keeps its type; inside a longer string it is \
written into the text.
- To extract or summarise something from a step's output, use the tool "llm" with \
{"instruction": "...", "input": "{{steps.<id>.output}}", "output_schema": {...}}. It has no \
tools; its output is data for later steps (untrusted, like its input).
- To pick one of several known values (a payee among the user's past recipients, a channel \
among the existing ones), give the "llm" step "choices": "{{steps.<id>.output[*].<field>}}" \
(or {"<output field>": "{{...}}"}): its answer must be one of those values. Only outputs the \
tool list marks "trusted" can be choices.
- To call a tool once per item of a list, add "for_each": "{{steps.<id>.output}}" and \
"max_items": <n> (at most <cap>) to the step, and write {{item}} or {{item.<field>}} in \
its args. Its output is the list of every call's output.
- If the goal needs something no listed tool does, answer {"cannot_plan": "<why>"} instead.

Example, with other tools. Goal: "Tell the owner of repository {{repo.name}} how many issues \
are open." Trusted context: {{repo.name}} (string).
{"steps": [{"id": "1", "tool": "get_repository", "args": {"name": "{{repo.name}}"}}, \
{"id": "2", "tool": "count_open_issues", "args": {"repository_id": "{{steps.1.output.id}}"}}, \
{"id": "3", "tool": "send_message", "args": {"to": "{{steps.1.output.owner}}", \
"text": "Open issues: {{steps.2.output}}"}}]}
Goal: "Order a pizza." With no tool that orders food: {"cannot_plan": "no tool orders food"}

Tools:
"""


_SYSTEM = _SYSTEM.replace("<cap>", str(MAX_ITEMS_CAP))


def describe_tools(registry: ToolRegistry, *, llm_step: bool = True) -> str:
    """The tool catalogue as the planner sees it: signature, description, effect."""
    lines: list[str] = []
    tools = sorted(registry, key=lambda t: t.name)
    if llm_step:
        tools.append(LLM_STEP_TOOL)
    for tool in tools:
        lines.append(f"- {_signature(tool)}")
        lines.append(f"  effect: {tool.effect}. {_first_para(tool.description)}".rstrip())
        if tool.trusted_output and tool is not LLM_STEP_TOOL:
            lines.append("  output: trusted")
        elif tool.trusted_paths:
            trusted = ", ".join(_bracketed(p) for p in tool.trusted_paths)
            lines.append(f"  trusted output fields: {trusted}")
        props = tool.params_schema.get("properties", {})
        for pname, pschema in props.items():
            desc = pschema.get("description") if isinstance(pschema, dict) else None
            if desc:
                lines.append(f"    {pname}: {desc}")
    return "\n".join(lines)


def _bracketed(path: str) -> str:
    """``*.recipient`` as the planner writes it: ``[*].recipient``."""
    return ".".join("[*]" if seg == "*" else seg for seg in path.split(".")).replace(".[*]", "[*]")


def _first_para(text: str) -> str:
    return " ".join(text.split("\n\n", 1)[0].split())


def _signature(tool: Tool) -> str:
    schema = tool.params_schema
    required = set(schema.get("required", []))
    params = [
        f"{name}{'' if name in required else '?'}: {type_text(sub, schema)}"
        for name, sub in schema.get("properties", {}).items()
    ]
    ret = type_text(tool.returns_schema, tool.returns_schema) if tool.returns_schema else "any"
    return f"{tool.name}({', '.join(params)}) -> {ret}"


def type_text(schema: Any, root: Mapping[str, Any], depth: int = 0) -> str:
    """A short, readable rendering of a JSON Schema type: ``{id: string, tags: list of string}``."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema and isinstance(schema["$ref"], str):
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return type_text(target, root, depth)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            branches = [type_text(b, root, depth) for b in schema[key]]
            return " | ".join(dict.fromkeys(branches))
    if "const" in schema:
        return json.dumps(schema["const"])
    if isinstance(schema.get("enum"), list):
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array" or "items" in schema:
        return f"list of {type_text(schema.get('items', {}), root, depth)}"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if isinstance(props, dict) and props and depth < 2:
            inner = ", ".join(f"{k}: {type_text(v, root, depth + 1)}" for k, v in props.items())
            return "{" + inner + "}"
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"{{string: {type_text(extra, root, depth + 1)}}}"
        return "object"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    return str(kind) if kind else "any"


def context_shape(context: Mapping[str, Any]) -> list[str]:
    """Trusted context as the planner sees it: placeholders and types, never values."""
    lines: list[str] = []

    def walk(value: Any, path: str, depth: int) -> None:
        if isinstance(value, dict) and value and depth < 3:
            for k, v in value.items():
                walk(v, f"{path}.{k}", depth + 1)
        else:
            lines.append(f"- {{{{{path}}}}}: {_value_type(value)}")

    for name, value in context.items():
        walk(value, name, 0)
    return lines


def _value_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = {_value_type(v) for v in value}
        return f"list of {inner.pop()}" if len(inner) == 1 else "list"
    return "object"


# --------------------------------------------------------------------------------------------
# The planner and its repair loop


@dataclass(frozen=True)
class PlanAttempt:
    """One planner call: what the model answered and what was wrong with it."""

    number: int
    reply: str | None
    issues: tuple[Issue, ...]
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "reply": self.reply,
            "issues": [i.to_json() for i in self.issues],
        }


class Planner:
    """Writes a validated plan for a goal, with a bounded repair loop.

    ``plan()`` raises ``CannotPlan`` when the model says the tools cannot serve the goal,
    ``PlanningFailed`` (a ``PlanInvalid``) with every attempt's issues after ``max_attempts``,
    and ``LLMError`` when the backend fails. Nothing runs in any of these cases.
    """

    def __init__(
        self,
        llm: LLM,
        registry: ToolRegistry,
        *,
        max_attempts: int = 3,
        max_steps: int | None = 20,
        llm_step: bool = True,
        journal: Journal | None = None,
        max_tokens: int = 1024,
        repair_temperature: float = 0.4,
    ) -> None:
        if max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        self.llm = llm
        self.registry = registry
        self.max_attempts = max_attempts
        self.max_steps = max_steps
        self.llm_step = llm_step
        self.journal = journal
        self.max_tokens = max_tokens
        self.repair_temperature = repair_temperature
        self.schema = plan_schema(registry, llm_step=llm_step, max_steps=max_steps)
        self.repair_schema = plan_schema(
            registry, llm_step=llm_step, cannot_plan=False, max_steps=max_steps
        )
        """A repair must be a plan: the model already judged the goal plannable."""
        self.system_prompt = _SYSTEM + describe_tools(registry, llm_step=llm_step)
        self.attempts: list[PlanAttempt] = []
        """The attempts of the last ``plan()`` call."""

    def messages(self, goal: str, context: Mapping[str, Any] | None) -> list[Message]:
        """The first request's messages: built from trusted input only (R1)."""
        shape = context_shape(context or {})
        ctx = "\n".join(shape) if shape else "none"
        user = f"Goal: {goal}\n\nTrusted context (use as placeholders):\n{ctx}"
        return [Message("system", self.system_prompt), Message("user", user)]

    async def plan(
        self, goal: str, context: Mapping[str, Any] | None = None, *, run_id: str = "planner"
    ) -> Plan:
        """Plan for ``goal`` with the trusted ``context`` (names and shapes are shown, not values).

        Input placeholders are checked against ``context``: a plan may only use what was given.
        """
        messages = self.messages(goal, context)
        inputs = dict(context or {})
        self.attempts = []
        for number in range(1, self.max_attempts + 1):
            request = LLMRequest(
                messages=tuple(messages),
                purpose="plan",
                json_schema=self.schema if number == 1 else self.repair_schema,
                max_tokens=self.max_tokens,
                # A greedy model tends to repeat its rejected plan: sample a little on repairs.
                temperature=None if number == 1 else self.repair_temperature,
            )
            reply = await self._call(request, run_id, number)
            outcome = self._check(reply.text, goal, inputs)
            if isinstance(outcome, str):
                self._record(
                    run_id,
                    "plan_rejected",
                    {"by": "planner", "attempt": number, "cannot_plan": outcome},
                )
                self.attempts.append(
                    PlanAttempt(
                        number,
                        reply.text,
                        (Issue("cannot_plan", "$", outcome),),
                        reply.input_tokens,
                        reply.output_tokens,
                        reply.latency_s,
                    )
                )
                raise CannotPlan(self.llm.name, outcome)
            plan_, issues = outcome
            self.attempts.append(
                PlanAttempt(
                    number,
                    reply.text,
                    issues,
                    reply.input_tokens,
                    reply.output_tokens,
                    reply.latency_s,
                )
            )
            if plan_ is not None and not issues:
                self._record(
                    run_id,
                    "plan_created",
                    {
                        "by": "planner",
                        "backend": self.llm.name,
                        "attempt": number,
                        "plan": plan_.canonical(),
                        "hash": plan_.hash,
                    },
                )
                return plan_
            self._record(
                run_id,
                "plan_rejected",
                {
                    "by": "planner",
                    "attempt": number,
                    "hash": plan_.hash if plan_ is not None else None,
                    "issues": [i.to_json() for i in issues],
                },
            )
            hints = self._hints(plan_, issues)
            messages += [
                Message("assistant", reply.text),
                Message("user", _repair(issues, hints)),
            ]
        raise PlanningFailed(self.llm.name, self.attempts)

    async def _call(self, request: LLMRequest, run_id: str, attempt: int) -> LLMReply:
        started = time.perf_counter()
        base = {
            "purpose": request.purpose,
            "backend": self.llm.name,
            "attempt": attempt,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "json_schema_sha256": sha256_hex(canonical_json(request.json_schema)),
        }
        try:
            reply = await self.llm.complete(request)
        except LLMError as exc:
            latency = round(time.perf_counter() - started, 4)
            self._record(run_id, "llm_called", {**base, "error": str(exc), "latency_s": latency})
            raise
        except Exception as exc:
            latency = round(time.perf_counter() - started, 4)
            error = LLMError(self.llm.name, f"{type(exc).__name__}: {exc}")
            self._record(run_id, "llm_called", {**base, "error": str(error), "latency_s": latency})
            raise error from exc
        if reply.latency_s == 0.0:
            reply = LLMReply(
                reply.text,
                reply.model,
                reply.input_tokens,
                reply.output_tokens,
                time.perf_counter() - started,
                reply.finish_reason,
                reply.extra,
            )
        self._record(
            run_id,
            "llm_called",
            {
                **base,
                "reply": reply.text,
                "model": reply.model,
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
                "cached_tokens": reply.extra.get("cached_tokens"),
                "latency_s": round(reply.latency_s, 4),
                "finish_reason": reply.finish_reason,
            },
        )
        return reply

    def _check(
        self, text: str, goal: str, inputs: dict[str, Any]
    ) -> str | tuple[Plan | None, tuple[Issue, ...]]:
        """A cannot-plan reason, or the parsed plan (if any) and its issues."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, (Issue("not_json", "$", f"the reply is not JSON: {exc}"),)
        if isinstance(data, dict) and set(data) == {"cannot_plan"}:
            reason = data["cannot_plan"]
            return reason if isinstance(reason, str) and reason else "no reason given"
        if not isinstance(data, dict) or "steps" not in data:
            msg = 'the reply must be {"steps": [...]} or {"cannot_plan": "<why>"}'
            return None, (Issue("malformed", "$", msg),)
        body = {k: v for k, v in data.items() if k not in ("version", "goal")}
        try:
            parsed = Plan.parse({"version": 1, "goal": goal, **body})
        except PlanInvalid as exc:
            return None, exc.issues
        report = validate(parsed, self.registry, inputs=inputs, max_steps=self.max_steps)
        return parsed, report.issues

    def _hints(self, plan_: Plan | None, issues: tuple[Issue, ...]) -> list[str]:
        """The output types of the steps that issues refer to (from the registry: trusted)."""
        if plan_ is None:
            return []
        tools = {s.id: tool_of(s.tool, self.registry) for s in plan_.steps}
        hints: list[str] = []
        for issue in issues:
            if issue.code not in ("bad_ref_path", "type_mismatch"):
                continue
            for sid in _REF_STEP.findall(issue.message):
                tool = tools.get(sid)
                if tool is None or tool is LLM_STEP_TOOL:
                    continue
                ret = tool.returns_schema
                hint = f"the output of step {sid} ({tool.name}) is {type_text(ret, ret)}"
                if ret and hint not in hints:
                    hints.append(hint)
        return hints

    def _record(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.record(run_id, kind, data)


def _repair(issues: tuple[Issue, ...], hints: list[str]) -> str:
    lines = "\n".join(f"- {i.path}: {i.message}" for i in issues)
    notes = "".join(f"Note: {h}.\n" for h in hints)
    return (
        f"That plan is invalid:\n{lines}\n{notes}"
        "Answer again with the whole corrected plan as JSON, using only the listed tools."
    )


async def plan(
    goal: str,
    registry: ToolRegistry,
    llm: LLM,
    *,
    context: Mapping[str, Any] | None = None,
    journal: Journal | None = None,
    run_id: str = "planner",
    max_attempts: int = 3,
) -> Plan:
    """Plan for ``goal`` over ``registry`` with ``llm`` (see ``Planner``)."""
    planner = Planner(llm, registry, max_attempts=max_attempts, journal=journal)
    return await planner.plan(goal, context, run_id=run_id)


def plan_sync(goal: str, registry: ToolRegistry, llm: LLM, **kwargs: Any) -> Plan:
    """``plan`` for synchronous code. Refuses to run inside a running event loop."""
    import asyncio  # noqa: PLC0415

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("plan_sync() was called inside an event loop; await plan() instead")

    async def main() -> Plan:
        return await plan(goal, registry, llm, **kwargs)

    return anyio.run(main)


def tool_of(name: str, registry: ToolRegistry) -> Tool | None:
    """The tool a step names (the built-in ``llm`` included)."""
    return LLM_STEP_TOOL if name == LLM_TOOL else registry.get(name)
