"""The deterministic executor (R3): a DAG walk that never asks an LLM what to do next.

``walk`` is engine-agnostic: it takes three functions, *run a step*, *wait for an approval* and
*record an event*, so the same walk runs in process (``InProcessEngine``) or on a durable engine.
Placeholders are resolved just before a step runs, keeping types and provenance (R5); a step's
condition (``when``) is evaluated just before it would run, and when it does not hold the step and
the steps that read its output are skipped (journaled ``step_skipped``), which is not a failure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from planlock import telemetry
from planlock.core import (
    ConditionTypeError,
    Ref,
    Sources,
    Unresolvable,
    condition_json,
    evaluate_condition,
    resolve,
    walk_path,
)
from planlock.execution._ask import Checks
from planlock.execution._calls import check_choice, to_json_text
from planlock.execution._types import (
    CheckCall,
    Lookup,
    Record,
    RunResult,
    RunStep,
    StepCall,
    StepOutcome,
    WaitForApproval,
)
from planlock.tools import run_scope
from planlock.validation import (
    Analysis,
    CompiledStep,
    arg_labels,
    expand_items,
    input_labels,
    is_number,
    item_ref,
    output_sources,
    ref_sources,
)

if TYPE_CHECKING:
    import asyncio

__all__ = ["walk"]

Done = tuple[StepOutcome, Sources]
"""A step that ran: its outcome and the source labels of its output."""


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

    A failed step skips its dependents (transitively); independent branches finish. A step whose
    condition does not hold is skipped with the steps that read its output (transitively); steps
    that only come ``after`` it still run, and the run still succeeds. Nothing here chooses a
    tool: every call is the one the plan names (R3). Steps in ``completed`` (outputs
    and sources from before a revision) are never run again (R11). With ``pause_at_checkpoints``
    the walk starts no new step after a checkpoint step finishes and returns ``paused``.
    """
    scheduler = _Walk(
        analysis,
        inputs,
        run_id=run_id,
        run_step=run_step,
        wait_for_approval=wait_for_approval,
        record=record,
        check_call=check_call,
        concurrency=concurrency,
        trusted_steps=trusted_steps,
        completed=completed,
        pause_at_checkpoints=pause_at_checkpoints,
    )
    async with run_scope():  # connections the steps open (MCP sessions) end with the walk
        return await scheduler.run()


class _Walk:
    """One walk: the outputs and statuses so far, how many unfinished inputs each step waits
    for, and the stages of a step: resolve its arguments, check the call, run it, finish it."""

    def __init__(
        self,
        analysis: Analysis,
        inputs: Mapping[str, Any],
        *,
        run_id: str,
        run_step: RunStep,
        wait_for_approval: WaitForApproval,
        record: Record,
        check_call: CheckCall | None,
        concurrency: int,
        trusted_steps: frozenset[str],
        completed: Mapping[str, tuple[Any, Sources]] | None,
        pause_at_checkpoints: bool,
    ) -> None:
        self.analysis = analysis
        self.steps = analysis.steps
        self.inputs = inputs
        self.run_id = run_id
        self.run_step = run_step
        self.record = record
        self.checks = Checks(check_call, record, wait_for_approval, self._fail)
        """The policy's check of each call, and a person's answer (``_ask``)."""
        self.trusted_steps = trusted_steps
        self.pause_at_checkpoints = pause_at_checkpoints
        self.concurrency = max(1, concurrency)
        self.ready: deque[str] = deque()
        """Steps whose inputs have all settled, not yet taken by a worker."""
        self.workers = 0
        self.tg: asyncio.TaskGroup
        self.outputs: dict[str, tuple[Any, Sources]] = dict(completed or {})
        self.status: dict[str, str] = {sid: "finished" for sid in self.outputs if sid in self.steps}
        self.pending = {sid: len(s.deps) for sid, s in self.steps.items()}
        """For each step, how many of its inputs have not finished."""
        for sid in self.status:
            for nxt in analysis.dependents.get(sid, ()):
                self.pending[nxt] -= 1
        self.paused: list[str] = []
        self.failures: list[tuple[str, StepOutcome]] = []
        self.skipped: dict[str, str] = {}
        """Why each skipped step did not run (``RunResult.skipped``)."""
        self.conditions: dict[str, dict[str, Any]] = {}
        """The values each step's condition read, when it held (journaled with the call)."""

    async def run(self) -> RunResult:
        self.ready.extend(
            sid for sid in self.analysis.order if self.pending[sid] == 0 and sid not in self.status
        )
        # asyncio's task group, not anyio's: starting a worker costs a fifth (measured: 5 vs
        # 24 us), which is most of what a wide fan-out waits for before its last step starts.
        import asyncio  # noqa: PLC0415  (on first use: `import planlock` stays light)

        self._sleep = asyncio.sleep
        async with asyncio.TaskGroup() as tg:
            self.tg = tg
            self._hire(keep=0)
        return self._result()

    # ----------------------------------------------------------------------------------------
    # Workers: at most ``concurrency``, each taking ready steps until none is left (a chain runs
    # in one worker, with no task per step); a step that becomes ready gets a new worker when
    # every worker is busy and the limit allows one, else the next worker free takes it.

    def _hire(self, keep: int) -> None:
        """Start a worker for each ready step beyond the ``keep`` the caller takes itself."""
        while len(self.ready) > keep and self.workers < self.concurrency:
            self.workers += 1
            self.tg.create_task(self._worker(self.ready.popleft()))

    async def _worker(self, sid: str) -> None:
        try:
            while True:
                await self._step(sid)
                self._hire(keep=1)
                if not self.ready:
                    return
                sid = self.ready.popleft()
                await self._sleep(0)  # other tasks run (and a cancellation lands)
        finally:
            self.workers -= 1

    # ----------------------------------------------------------------------------------------
    # A step: run it (once, or once per item), finish it, make ready the steps it unblocked

    async def _step(self, sid: str) -> None:
        step = self.steps[sid]
        started = time.perf_counter()
        if step.when is not None and not await self._condition_holds(step):
            if self.status.get(sid) == "skipped":
                await self._skip_readers(sid)
            return
        if step.for_each is not None:
            done = await self._run_loop(step, step.for_each)
        else:
            done = await self._call_once(step, self._lookup, None, None)
        if done is None:
            return
        await self._finish(step, done, started)
        for nxt in self.analysis.dependents.get(sid, ()):
            self._settled(nxt)

    def _settled(self, nxt: str) -> None:
        """One input of ``nxt`` has settled (finished, or skipped without ``nxt`` reading it):
        ``nxt`` is ready when it waits for nothing else."""
        self.pending[nxt] -= 1
        if self.pending[nxt] == 0 and nxt not in self.status and not self.paused:
            self.ready.append(nxt)

    # ----------------------------------------------------------------------------------------
    # Conditions: evaluated just before the step would run

    async def _condition_holds(self, step: CompiledStep) -> bool:
        """Whether the step's condition holds. When it does not, the step is skipped (and
        journaled with the condition and the values it read); a value that cannot be read or
        compared fails the step."""
        assert step.when is not None
        sid = step.id
        try:
            held, values = evaluate_condition(step.when, lambda ref: self._lookup(ref)[0])
        except Unresolvable as exc:
            await self._fail(
                sid, StepOutcome(False, error_kind="unresolved_reference", error=str(exc))
            )
            return False
        except ConditionTypeError as exc:
            await self._fail(
                sid, StepOutcome(False, error_kind="invalid_condition", error=str(exc))
            )
            return False
        if held:
            self.conditions[sid] = values
            return True
        self.status[sid] = "skipped"
        self.skipped[sid] = "condition"
        when = self.analysis.plan.steps[step.index].when
        await self.record(
            "step_skipped",
            {
                "step": sid,
                "reason": "condition",
                "when": condition_json(when) if when is not None else None,
                "values": values,
            },
        )
        return False

    async def _skip_readers(self, root: str) -> None:
        """``root`` did not run because its condition did not hold: the steps that read its
        output are skipped too (transitively); a step that only comes after one of them is not
        (it may start once nothing else holds it back)."""
        stack = [root]
        while stack:
            cur = stack.pop()
            for nxt in self.analysis.dependents.get(cur, ()):
                if cur not in self.steps[nxt].reads:
                    self._settled(nxt)
                elif nxt not in self.status:
                    self.status[nxt] = "skipped"
                    self.skipped[nxt] = f"condition:{root}"
                    await self.record(
                        "step_skipped", {"step": nxt, "because": root, "reason": "condition"}
                    )
                    stack.append(nxt)

    async def _finish(self, step: CompiledStep, done: Done, started: float) -> None:
        sid, (outcome, sources) = step.id, done
        self.outputs[sid] = (outcome.output, sources)
        self.status[sid] = "finished"
        if self.pause_at_checkpoints and step.checkpoint:
            self.paused.append(sid)
        await self.record(
            "step_finished",
            {
                "step": sid,
                "output": outcome.output,
                "provenance": sorted(sources),
                "trusted": sid in self.trusted_steps,
                "attempts": outcome.attempts,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    async def _call_once(
        self,
        step: CompiledStep,
        look: Lookup,
        item: int | None,
        count: int | None,
        checked: StepCall | None = None,
    ) -> Done | None:
        """Resolve, check (policy, approval), run one call, in an ``execute_tool`` span (when
        spans are recorded); None when the step failed. ``checked``: the call, resolved and
        already checked (a loop's items are checked together, ``_check_items``)."""
        tool = step.tool
        with telemetry.tool_span(tool.name, step.id, item, self.run_id, tool.effect) as span:
            return await self._call_traced(step, look, item, count, span, checked)

    async def _call_traced(
        self,
        step: CompiledStep,
        look: Lookup,
        item: int | None,
        count: int | None,
        span: telemetry.Span,
        checked: StepCall | None,
    ) -> Done | None:
        call = checked or await self._resolve(step, look, item)
        if call is None:
            return None
        if span is not telemetry.NOOP_SPAN and telemetry.capture_content():
            span.set({"gen_ai.tool.call.arguments": to_json_text(call.args)})
        if checked is None and not await self.checks.allowed(call):
            return None
        event: dict[str, Any] = {
            "step": step.id,
            "tool": step.tool.name,
            "args": call.args,
            "provenance": call.provenance,
        }
        if item is not None:
            event |= {"item": item, "items": count}
        if step.id in self.conditions:
            event["condition_values"] = self.conditions[step.id]
        await self.record("step_started", event)
        outcome = check_choice(call, await self.run_step(call))
        if not outcome.ok:
            await self._fail(step.id, outcome)
            return None
        if span is not telemetry.NOOP_SPAN and telemetry.capture_content():
            span.set({"gen_ai.tool.call.result": to_json_text(outcome.output)})
        return outcome, output_sources(step, call.provenance.values())

    async def _run_loop(self, step: CompiledStep, loop: Ref) -> Done | None:
        """Run the step's tool once per item of its for_each list, in order."""
        items = await self._loop_items(step, loop)
        if items is None:
            return None
        calls: list[StepCall] = []
        for i in range(len(items)):  # every item's call, before any runs: checked together
            call = await self._resolve(step, self._item_lookup(loop, i), i)
            if call is None:
                return None
            calls.append(call)
        if not await self.checks.items(step.id, calls):
            return None
        outputs: list[Any] = []
        attempts = 0
        for i, call in enumerate(calls):
            done = await self._call_once(step, self._item_lookup(loop, i), i, len(items), call)
            if done is None:
                return None
            outputs.append(done[0].output)
            attempts += done[0].attempts
        # An llm step's output carries the labels of its arguments, whatever the item count.
        labels = (resolve(expand_items(t, loop), self._labels)[1] for t in step.args.values())
        outcome = StepOutcome(True, output=outputs, attempts=max(1, attempts))
        return outcome, output_sources(step, labels)

    async def _loop_items(self, step: CompiledStep, loop: Ref) -> list[Any] | None:
        """The list a for_each step iterates over; None when the step failed on it."""
        sid = step.id
        try:
            items, _ = self._lookup(loop)
        except Unresolvable as exc:
            await self._fail(
                sid, StepOutcome(False, error_kind="unresolved_reference", error=str(exc))
            )
            return None
        if not isinstance(items, list):
            msg = f"for_each '{{{{{loop.text}}}}}' is {type(items).__name__}, not a list"
            await self._fail(sid, StepOutcome(False, error_kind="not_a_list", error=msg))
            return None
        limit = step.max_items or 0
        if len(items) > limit:
            # Fail before any iteration: dropping the rest silently would do part of the job.
            msg = f"for_each '{{{{{loop.text}}}}}' has {len(items)} items; max_items is {limit}"
            await self._fail(sid, StepOutcome(False, error_kind="too_many_items", error=msg))
            return None
        return items

    # ----------------------------------------------------------------------------------------
    # A call: resolve its arguments (its checks: ``_ask.Checks``)

    async def _resolve(self, step: CompiledStep, look: Lookup, item: int | None) -> StepCall | None:
        """The call with its arguments resolved (values and their sources); None when a
        placeholder cannot be resolved (the step failed)."""
        try:
            resolved = {k: resolve(t, look) for k, t in step.args.items()}
        except Unresolvable as exc:
            outcome = StepOutcome(False, error_kind="unresolved_reference", error=str(exc))
            await self._fail(step.id, outcome)
            return None
        args = {k: v for k, (v, _) in resolved.items()}
        prov = {k: sorted(arg_labels(step, s)) for k, (_, s) in resolved.items()}
        return StepCall(self.run_id, step, args, prov, item)

    # ----------------------------------------------------------------------------------------
    # Placeholders: values and source labels

    def _lookup(self, ref: Ref) -> tuple[Any, Sources]:
        if ref.source == "step":
            value, sources = self.outputs[ref.name]
            found = walk_path(value, ref.path, f"steps.{ref.name}.output")
            return found, ref_sources(self.steps, ref.name, ref.path, sources)
        if ref.source == "item":
            raise Unresolvable(f"'{{{{{ref.text}}}}}' outside a for_each step")
        if ref.name not in self.inputs:
            raise Unresolvable(f"no trusted input named '{ref.name}'")
        return walk_path(self.inputs[ref.name], ref.path, ref.name), input_labels(ref.name)

    def _item_lookup(self, loop: Ref, i: int) -> Lookup:
        """The lookup for item ``i`` of a for_each list: ``{{item...}}`` names that item."""

        def look(ref: Ref) -> tuple[Any, Sources]:
            if is_number(ref):  # the item's position; labelled like the list it is in
                return i + 1, self._lookup(loop)[1]
            return self._lookup(item_ref(ref, loop, str(i)) if ref.source == "item" else ref)

        return look

    def _labels(self, ref: Ref) -> tuple[Any, Sources]:
        """Source labels only (no value): what a for_each step's arguments were built from."""
        if ref.source == "step":
            general = self.outputs[ref.name][1] if ref.name in self.outputs else frozenset()
            return None, ref_sources(self.steps, ref.name, ref.path, general)
        return None, input_labels(ref.name)

    # ----------------------------------------------------------------------------------------
    # Failures and the result

    async def _fail(self, sid: str, outcome: StepOutcome) -> None:
        self.status[sid] = "failed"
        self.failures.append((sid, outcome))
        await self.record(
            "step_failed",
            {
                "step": sid,
                "error_kind": outcome.error_kind,
                "error_type": outcome.error_type,
                "error": outcome.error,
                "attempts": outcome.attempts,
            },
        )
        await self._skip_dependents(sid)

    async def _skip_dependents(self, sid: str) -> None:
        stack = list(self.analysis.dependents.get(sid, ()))
        while stack:
            nxt = stack.pop()
            if nxt in self.status:
                continue
            self.status[nxt] = "skipped"
            self.skipped[nxt] = f"failed:{sid}"
            await self.record("step_skipped", {"step": nxt, "because": sid})
            stack.extend(self.analysis.dependents.get(nxt, ()))

    def _result(self) -> RunResult:
        steps = self.steps
        outcome_status: Literal["succeeded", "failed", "paused"] = "succeeded"
        if self.failures:
            outcome_status = "failed"
        elif self.paused and len(self.status) < len(steps):
            outcome_status = "paused"
        idle = "pending" if outcome_status == "paused" else "skipped"
        result = RunResult(
            run_id=self.run_id,
            status=outcome_status,
            outputs={sid: v for sid, (v, _) in self.outputs.items() if sid in steps},
            statuses={sid: self.status.get(sid, idle) for sid in self.analysis.order},
            plan_hash=self.analysis.plan_hash,
            provenance={sid: sorted(s) for sid, (_, s) in self.outputs.items() if sid in steps},
            skipped=dict(self.skipped),
            paused_at=(
                min(self.paused, key=lambda s: steps[s].index)
                if outcome_status == "paused"
                else None
            ),
        )
        if self.failures:
            sid, outcome = min(self.failures, key=lambda f: steps[f[0]].index)
            result.failed_step, result.error_kind, result.error = (
                sid,
                outcome.error_kind,
                outcome.error,
            )
            result.error_type = outcome.error_type
        return result
