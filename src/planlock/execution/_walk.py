"""The deterministic executor (R3): a DAG walk that never asks an LLM what to do next.

``walk`` is engine-agnostic: it takes three functions, *run a step*, *wait for an approval* and
*record an event*, so the same walk runs in process (``InProcessEngine``) or on a durable engine.
Placeholders are resolved just before a step runs, keeping types and provenance (R5).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from planlock.approval import ApprovalRequest, Decision, Denied, binding_problem
from planlock.core import (
    PLAN_SOURCE,
    Ref,
    Sources,
    Unresolvable,
    canonical_json,
    resolve,
    sha256_hex,
    walk_path,
)
from planlock.errors import LLMError, StepFailed
from planlock.llm import LLM
from planlock.tools import (
    LLM_TOOL,
    NotEnoughInformation,
    StepContext,
    Tool,
    choice_problem,
    quarantined_call,
)
from planlock.validation import (
    Analysis,
    CompiledStep,
    expand_items,
    is_number,
    item_ref,
    ref_sources,
)

__all__ = ["InProcessEngine", "RunResult", "StepCall", "StepOutcome", "walk"]


@dataclass(frozen=True)
class StepCall:
    """A step with its arguments resolved, about to run."""

    run_id: str
    step: CompiledStep
    args: dict[str, Any]
    """Resolved arguments (JSON values)."""
    provenance: dict[str, list[str]]
    """For each argument, the sorted sources it came from."""
    item: int | None = None
    """In a ``for_each`` step: the index of the item this call is for."""

    @property
    def args_hash(self) -> str:
        return sha256_hex(canonical_json(self.args))


@dataclass(frozen=True)
class StepOutcome:
    """What running a step produced."""

    ok: bool
    output: Any = None
    error_kind: str | None = None
    """Stable class of failure: timeout, tool_error, invalid_arguments, invalid_output, ..."""
    error_type: str | None = None
    """The exception's class name, when there was one."""
    error: str | None = None
    """The detail (journaled only; never given to a planner prompt, R9)."""
    attempts: int = 1


@dataclass
class RunResult:
    """The outcome of a run."""

    run_id: str
    status: Literal["succeeded", "failed", "paused"]
    outputs: dict[str, Any] = field(default_factory=dict)
    """Output of every step that finished."""
    statuses: dict[str, str] = field(default_factory=dict)
    """``finished``, ``failed``, ``skipped`` or ``pending`` (after a pause) for every step."""
    failed_step: str | None = None
    error_kind: str | None = None
    error: str | None = None
    error_type: str | None = None
    plan_hash: str = ""
    provenance: dict[str, list[str]] = field(default_factory=dict)
    """Source labels of every finished step's output."""
    paused_at: str | None = None
    """The checkpoint step after which the walk paused (``status == "paused"``)."""
    replans: int = 0
    """How many times the plan was revised during the run."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> RunResult:
        """Raise StepFailed if the run failed; return self otherwise."""

        if not self.ok:
            raise StepFailed(self.failed_step or "?", self.error_kind or "?", self.error or "")
        return self


RunStep = Callable[[StepCall], Awaitable[StepOutcome]]
WaitForApproval = Callable[[ApprovalRequest], Awaitable[Decision]]
Record = Callable[[str, dict[str, Any]], Awaitable[None]]
Lookup = Callable[[Ref], tuple[Any, Sources]]
CheckCall = Callable[[StepCall], "ApprovalRequest | Denied | None"]
"""Decides a concrete call: None runs it, a Denied stops it, a request asks for approval."""


async def walk(
    analysis: Analysis,
    inputs: Mapping[str, Any],
    *,
    run_id: str,
    run_step: RunStep,
    wait_for_approval: WaitForApproval,
    record: Record,
    check_call: CheckCall | None = None,
    concurrency: int = 16,
    trusted_steps: frozenset[str] = frozenset(),
    completed: Mapping[str, tuple[Any, Sources]] | None = None,
    pause_at_checkpoints: bool = False,
) -> RunResult:
    """Run a validated plan's DAG: independent steps in parallel, dependents after their inputs.

    A failed step skips its dependents (transitively); independent branches finish. Nothing here
    chooses a tool: every call is the one the plan names (R3). Steps in ``completed`` (outputs
    and sources from before a revision) are never run again (R11). With ``pause_at_checkpoints``
    the walk starts no new step after a checkpoint step finishes and returns ``paused``.
    """
    steps = analysis.steps
    outputs: dict[str, tuple[Any, Sources]] = dict(completed or {})
    status: dict[str, str] = {sid: "finished" for sid in outputs if sid in steps}
    pending = {sid: len(s.deps) for sid, s in steps.items()}
    for sid in status:
        for nxt in analysis.dependents.get(sid, ()):
            pending[nxt] -= 1
    paused: list[str] = []
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    first_failure: list[tuple[str, StepOutcome]] = []

    def lookup(ref: Ref) -> tuple[Any, Sources]:
        if ref.source == "step":
            value, sources = outputs[ref.name]
            found = walk_path(value, ref.path, f"steps.{ref.name}.output")
            return found, ref_sources(steps, ref.name, ref.path, sources)
        if ref.source == "item":
            raise Unresolvable(f"'{{{{{ref.text}}}}}' outside a for_each step")
        if ref.name not in inputs:
            raise Unresolvable(f"no trusted input named '{ref.name}'")
        return walk_path(inputs[ref.name], ref.path, ref.name), frozenset((f"input:{ref.name}",))

    async def skip_dependents(sid: str) -> None:
        stack = list(analysis.dependents.get(sid, ()))
        while stack:
            nxt = stack.pop()
            if nxt in status:
                continue
            status[nxt] = "skipped"
            await record("step_skipped", {"step": nxt, "because": sid})
            stack.extend(analysis.dependents.get(nxt, ()))

    async def fail(sid: str, outcome: StepOutcome) -> None:
        status[sid] = "failed"
        first_failure.append((sid, outcome))
        await record(
            "step_failed",
            {
                "step": sid,
                "error_kind": outcome.error_kind,
                "error_type": outcome.error_type,
                "error": outcome.error,
                "attempts": outcome.attempts,
            },
        )
        await skip_dependents(sid)

    async def gate(call: StepCall, check: ApprovalRequest | Denied) -> bool:
        """Run-time policy (R6, R7): a denial stops the call; a request waits for an answer
        bound to this exact call. Journaling the answer is the waiter's job (the queue records
        it when a person decides); the binding check is made here, for every engine."""
        sid = call.step.id
        if isinstance(check, Denied):
            await record("approval_denied", check.to_json())
            await fail(sid, StepOutcome(False, error_kind="denied", error=check.reason))
            return False
        await record("approval_requested", _call_request_event(check))
        decision = await wait_for_approval(check)
        problem = binding_problem(decision, check)
        if problem is not None:
            await record("approval_refused", {**decision.to_json(), "problem": problem})
            await fail(sid, StepOutcome(False, error_kind="approval_refused", error=problem))
            return False
        if not decision.approved:
            await fail(sid, StepOutcome(False, error_kind="denied", error=decision.reason))
            return False
        return True

    async def call_once(
        step: CompiledStep, look: Lookup, item: int | None, count: int | None
    ) -> tuple[StepOutcome, Sources] | None:
        """Resolve, check (policy, approval), run one call; None when the step failed."""
        sid = step.id
        try:
            resolved = {k: resolve(t, look) for k, t in step.args.items()}
        except Unresolvable as exc:
            await fail(sid, StepOutcome(False, error_kind="unresolved_reference", error=str(exc)))
            return None
        args = {k: v for k, (v, _) in resolved.items()}
        prov = {k: sorted(s) for k, (_, s) in resolved.items()}
        call = StepCall(run_id, step, args, prov, item)
        check = check_call(call) if check_call else None
        if check is not None and not await gate(call, check):
            return None
        event: dict[str, Any] = {"step": sid, "tool": step.tool.name, "args": args}
        event["provenance"] = prov
        if item is not None:
            event |= {"item": item, "items": count}
        await record("step_started", event)
        outcome = await run_step(call)
        if outcome.ok and step.choices:
            # R4 with a trusted result: whatever the model read, its answer must be one of the
            # trusted values the plan named; anything else fails the step.
            problem = choice_problem(outcome.output, args.get("choices"), args.get("output_schema"))
            if problem is not None:
                outcome = StepOutcome(
                    False, error_kind="invalid_choice", error=problem, attempts=outcome.attempts
                )
        if not outcome.ok:
            await fail(sid, outcome)
            return None
        sources = frozenset((f"step:{sid}",))
        if step.tool.name == LLM_TOOL:
            sources = sources.union(*(s for _, s in resolved.values())) - {PLAN_SOURCE}
        return outcome, sources

    async def run_loop(step: CompiledStep) -> tuple[StepOutcome, Sources] | None:
        """Run the step's tool once per item of its for_each list, in order."""
        sid, loop = step.id, step.for_each
        assert loop is not None
        try:
            items, _ = lookup(loop)
        except Unresolvable as exc:
            await fail(sid, StepOutcome(False, error_kind="unresolved_reference", error=str(exc)))
            return None
        if not isinstance(items, list):
            msg = f"for_each '{{{{{loop.text}}}}}' is {type(items).__name__}, not a list"
            await fail(sid, StepOutcome(False, error_kind="not_a_list", error=msg))
            return None
        limit = step.max_items or 0
        if len(items) > limit:
            # Fail before any iteration: dropping the rest silently would do part of the job.
            msg = f"for_each '{{{{{loop.text}}}}}' has {len(items)} items; max_items is {limit}"
            await fail(sid, StepOutcome(False, error_kind="too_many_items", error=msg))
            return None
        outputs_: list[Any] = []
        attempts = 0
        for i in range(len(items)):

            def look(ref: Ref, i: int = i) -> tuple[Any, Sources]:
                if is_number(ref):  # the item's position; labelled like the list it is in
                    return i + 1, lookup(loop)[1]
                return lookup(item_ref(ref, loop, str(i)) if ref.source == "item" else ref)

            done = await call_once(step, look, i, len(items))
            if done is None:
                return None
            outputs_.append(done[0].output)
            attempts += done[0].attempts
        sources = frozenset((f"step:{sid}",))
        if step.tool.name == LLM_TOOL:  # the labels of its arguments, whatever the item count
            labels = [resolve(expand_items(t, loop), _labels)[1] for t in step.args.values()]
            sources = sources.union(*labels) - {PLAN_SOURCE}
        return StepOutcome(True, output=outputs_, attempts=max(1, attempts)), sources

    def _labels(ref: Ref) -> tuple[Any, Sources]:
        if ref.source == "step":
            general = outputs[ref.name][1] if ref.name in outputs else frozenset()
            return None, ref_sources(steps, ref.name, ref.path, general)
        return None, frozenset((f"input:{ref.name}",))

    async def run_one(sid: str, tg: anyio.abc.TaskGroup) -> None:
        step = steps[sid]
        async with limiter:
            started = time.perf_counter()
            if step.for_each is not None:
                done = await run_loop(step)
            else:
                done = await call_once(step, lookup, None, None)
            if done is None:
                return
            outcome, sources = done
            outputs[sid] = (outcome.output, sources)
            status[sid] = "finished"
            if pause_at_checkpoints and step.checkpoint:
                paused.append(sid)
            await record(
                "step_finished",
                {
                    "step": sid,
                    "output": outcome.output,
                    "provenance": sorted(sources),
                    "trusted": sid in trusted_steps,
                    "attempts": outcome.attempts,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
        for nxt in analysis.dependents.get(sid, ()):
            pending[nxt] -= 1
            if pending[nxt] == 0 and nxt not in status and not paused:
                tg.start_soon(run_one, nxt, tg)

    async with anyio.create_task_group() as tg:
        for sid in analysis.order:
            if pending[sid] == 0 and sid not in status:
                tg.start_soon(run_one, sid, tg)

    outcome_status: Literal["succeeded", "failed", "paused"] = "succeeded"
    if first_failure:
        outcome_status = "failed"
    elif paused and len(status) < len(steps):
        outcome_status = "paused"
    idle = "pending" if outcome_status == "paused" else "skipped"
    result = RunResult(
        run_id=run_id,
        status=outcome_status,
        outputs={sid: v for sid, (v, _) in outputs.items() if sid in steps},
        statuses={sid: status.get(sid, idle) for sid in analysis.order},
        plan_hash=analysis.plan.hash,
        provenance={sid: sorted(s) for sid, (_, s) in outputs.items() if sid in steps},
        paused_at=min(paused, key=lambda s: steps[s].index) if outcome_status == "paused" else None,
    )
    if first_failure:
        sid, outcome = min(first_failure, key=lambda f: steps[f[0]].index)
        result.failed_step, result.error_kind, result.error = sid, outcome.error_kind, outcome.error
        result.error_type = outcome.error_type
    return result


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
        try:
            validated = tool.args_model.model_validate_json(json.dumps(call.args), strict=True)
        except ValidationError as exc:
            raise _ArgsInvalid(_short(exc)) from None
        kwargs = {name: getattr(validated, name) for name in tool.args_model.model_fields}
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
            await self.record("llm_called", _llm_event(self.llm.name, request, reply, call.step.id))
        return output


def _call_request_event(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "kind": "call",
        "id": request.id,
        "plan_hash": request.plan_hash,
        "step": request.step_id,
        "args_hash": request.args_hash,
        "args": request.args,
        "provenance": request.provenance,
        "reasons": [r.to_json() for r in request.reasons],
    }


def _llm_event(backend: str, request: Any, reply: Any, step_id: str | None) -> dict[str, Any]:
    return {
        "purpose": request.purpose,
        "backend": backend,
        "step": step_id,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "json_schema": request.json_schema,
        "reply": reply.text,
        "model": reply.model,
        "input_tokens": reply.input_tokens,
        "output_tokens": reply.output_tokens,
        "latency_s": round(reply.latency_s, 4),
    }


class _ArgsInvalid(Exception):
    pass


class _OutputInvalid(Exception):
    pass


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )
