"""The in-process engine's step runner: tools in this process, the quarantined ``llm`` step
through the given backend (R4), with timeouts and retries for idempotent tools.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from planlock.errors import LLMError
from planlock.execution._types import Record, StepCall, StepOutcome
from planlock.journal import llm_called
from planlock.llm import LLM
from planlock.tools import LLM_TOOL, NotEnoughInformation, StepContext, Tool, quarantined_call

__all__ = ["InProcessEngine"]


@dataclass
class InProcessEngine:
    """Runs tools in this process: async tools on the event loop, sync tools in worker threads.

    Timeouts per tool (or ``default_timeout``); retries with exponential backoff only for tools
    declared idempotent, and only for timeouts and tool errors.
    """

    llm: LLM | None = None
    retries: int = 2
    backoff: float = 0.05
    default_timeout: float | None = None
    record: Record | None = None

    async def run_step(self, call: StepCall) -> StepOutcome:
        tool = call.step.tool
        attempts = 1 + (self.retries if tool.idempotent else 0)
        outcome = StepOutcome(False)
        for attempt in range(1, attempts + 1):
            outcome = await self._attempt(call, tool, attempt)
            if outcome.ok or outcome.error_kind not in ("timeout", "tool_error"):
                return outcome
            if attempt < attempts:
                if self.record:
                    await self.record(
                        "step_retrying",
                        {
                            "step": call.step.id,
                            "attempt": attempt,
                            "error_kind": outcome.error_kind,
                        },
                    )
                await anyio.sleep(self.backoff * 2 ** (attempt - 1))
        return outcome

    async def _attempt(self, call: StepCall, tool: Tool, attempt: int) -> StepOutcome:
        timeout = tool.timeout or self.default_timeout
        try:
            # No deadline, no cancel scope: a scope per call is measurable on long plans.
            with anyio.fail_after(timeout) if timeout else contextlib.nullcontext():
                if tool.name == LLM_TOOL:
                    output = await self._llm_step(call)
                else:
                    output = await self._call(call, tool, attempt)
        except TimeoutError:
            return StepOutcome(
                False, error_kind="timeout", error=f"no result within {timeout} s", attempts=attempt
            )
        except _ArgsInvalid as exc:
            return StepOutcome(
                False, error_kind="invalid_arguments", error=str(exc), attempts=attempt
            )
        except _OutputInvalid as exc:
            return StepOutcome(False, error_kind="invalid_output", error=str(exc), attempts=attempt)
        except NotEnoughInformation as exc:
            return StepOutcome(
                False, error_kind="not_enough_information", error=str(exc), attempts=attempt
            )
        except LLMError as exc:
            return StepOutcome(
                False,
                error_kind="llm_error",
                error_type="LLMError",
                error=str(exc),
                attempts=attempt,
            )
        except Exception as exc:
            return StepOutcome(
                False,
                error_kind="tool_error",
                error_type=type(exc).__name__,
                error=str(exc),
                attempts=attempt,
            )
        return StepOutcome(True, output=output, attempts=attempt)

    async def _call(self, call: StepCall, tool: Tool, attempt: int) -> Any:
        prechecked = call.step.prechecked
        try:
            if prechecked:  # literals checked when the plan was: the rest checked here
                kwargs = _checked_args(tool, call.args, prechecked)
            else:
                if tool.plain_args:  # the same checks as from JSON, without the JSON round trip
                    validated = tool.args_model.model_validate(call.args, strict=True)
                else:
                    text = json.dumps(call.args)
                    validated = tool.args_model.model_validate_json(text, strict=True)
                kwargs = {name: getattr(validated, name) for name in tool.args_model.model_fields}
        except ValidationError as exc:
            raise _ArgsInvalid(_short(exc)) from None
        if tool.context_param:
            kwargs[tool.context_param] = StepContext(call.run_id, call.step.id, attempt, call.item)
        if tool.is_async:
            result = await tool.fn(**kwargs)
        else:
            result = await anyio.to_thread.run_sync(
                lambda: tool.fn(**kwargs), abandon_on_cancel=True
            )
        if tool.returns is None:
            try:
                return to_jsonable_python(result)
            except Exception as exc:
                raise _OutputInvalid(f"output is not JSON-serializable: {exc}") from None
        try:
            return tool.returns.dump_python(tool.returns.validate_python(result), mode="json")
        except ValidationError as exc:
            raise _OutputInvalid(
                f"output does not match the declared return type: {_short(exc)}"
            ) from None

    async def _llm_step(self, call: StepCall) -> Any:
        if self.llm is None:
            raise LLMError("none", "this plan has an llm step but no LLM backend was given")
        output, request, reply = await quarantined_call(self.llm, call.args)
        if self.record:
            event = llm_called(
                request.purpose,
                self.llm,
                request,
                reply,
                step=call.step.id,
                json_schema=request.json_schema,
            )
            await self.record("llm_called", event)
        return output


def _checked_args(tool: Tool, args: dict[str, Any], prechecked: dict[str, Any]) -> dict[str, Any]:
    """A JSON-native tool's keyword arguments, as ``args_model`` would give them: an argument
    that is still the literal the plan's validation checked (``CompiledStep.prechecked``) is
    passed as it is, every other one goes through its parameter's check (strict), and a
    parameter left out takes its default."""
    fields = tool.args_model.model_fields
    extra = [name for name in args if name not in fields]
    if extra:
        raise _ArgsInvalid("; ".join(f"{name}: Extra inputs are not permitted" for name in extra))
    kwargs: dict[str, Any] = {}
    errors: list[str] = []
    for name, field_ in fields.items():
        if name not in args:
            if field_.is_required():
                errors.append(f"{name}: Field required")
            else:
                kwargs[name] = field_.get_default(call_default_factory=True)
            continue
        value = args[name]
        known = prechecked.get(name, _UNSET)
        if known is not _UNSET and type(known) is type(value) and known == value:
            kwargs[name] = value
            continue
        try:
            kwargs[name] = tool.param_adapters[name].validate_python(value, strict=True)
        except ValidationError as exc:
            errors.append(_short(exc, name))
    if errors:
        raise _ArgsInvalid("; ".join(errors))
    return kwargs


_UNSET = object()


class _ArgsInvalid(Exception):
    pass


class _OutputInvalid(Exception):
    pass


def _short(exc: ValidationError, name: str | None = None) -> str:
    """The errors on one line; ``name``: the parameter an adapter's errors are about."""
    return "; ".join(
        f"{'.'.join(str(p) for p in ((name, *e['loc']) if name else e['loc'])) or '<root>'}: "
        f"{e['msg']}"
        for e in exc.errors(include_url=False)
    )
