"""The planner (R1, R2): an LLM that sees only trusted input writes a complete plan.

The prompt is built from trusted input only (``_prompt``); the reply is constrained by a JSON
Schema generated from the registry (``_plan_schema``). The parsed plan is validated against the
registry; an invalid plan is sent back with every issue and regenerated, at most
``max_attempts`` times. Each call is bounded by ``max_tokens`` and ``timeout_s``; a reply cut off
there, or stopped for degenerate repetition (``LLMCutOff``), is repaired the same way, with a
message saying what happened. A valid plan with coverage warnings (a part of the goal that no step
seems to serve, ``validation._coverage``) is sent back too, naming the registered tools that can
do what is missing, and offering the refusal again only when no tool can; when the attempts run
out, the valid plan with the fewest warnings is returned, with its warnings
(``Planner.warnings``). The heuristic advises: it never invalidates a plan, though the model may
answer the repair with ``cannot_plan``. Every call is journaled, its progress too
(``planning_progress``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from planlock import telemetry
from planlock.core import Plan
from planlock.errors import (
    CannotPlan,
    LLMCutOff,
    LLMError,
    PlanInvalid,
    PlanningFailed,
    UsageError,
)
from planlock.journal import Journal, llm_called
from planlock.llm import (
    LLM,
    LLMReply,
    LLMRequest,
    Message,
    Progress,
    ProgressCallback,
    call_model,
    provider_and_model,
)
from planlock.planning._cutoff import cut_off_advice, cut_off_issue, cut_off_message
from planlock.planning._fix import did_you_mean, fix_reply
from planlock.planning._plan_schema import plan_schema
from planlock.planning._prompt import (
    context_shape,
    coverage_hints,
    coverage_message,
    describe_tools,
    planner_system,
    repair_hints,
    repair_message,
)
from planlock.tools import ToolRegistry
from planlock.validation import Issue, validate

__all__ = ["PlanAttempt", "Planner", "plan_attributes"]

FIX_ROUNDS = 3
"""How many times the planner's deterministic rewrites (``fix_reply``) are applied to a reply."""
_log = logging.getLogger("planlock.planning")


@dataclass(frozen=True)
class PlanAttempt:
    """One planner call: what the model answered and what was wrong with it."""

    number: int
    reply: str | None
    issues: tuple[Issue, ...]
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = "stop"
    """``stop``, or why the reply was cut off: ``length``, ``timeout``, ``repetition``."""
    warnings: tuple[Issue, ...] = ()
    """For a valid plan: parts of the goal no step seems to serve (they do not invalidate it)."""
    repaired: tuple[str, ...] = ()
    """The changes that made the reply valid (``planlock.planning._fix``: placeholders
    rewritten, fields that say nothing dropped), one line each:
    ``$.steps[2].args.event_id: '{{...}}' -> '{{...}}'``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "reply": self.reply,
            "finish_reason": self.finish_reason,
            "issues": [i.to_json() for i in self.issues],
            **({"warnings": [w.to_json() for w in self.warnings]} if self.warnings else {}),
            **({"repaired": list(self.repaired)} if self.repaired else {}),
        }


class Planner:
    """Writes a validated plan for a goal, with a bounded repair loop.

    ``plan()`` raises ``CannotPlan`` when the model says the tools cannot serve the goal,
    ``PlanningFailed`` (a ``PlanInvalid``) with every attempt's issues after ``max_attempts``
    (cut-off replies included: never an ``LLMCutOff``), and ``LLMError`` when the backend
    fails. Nothing runs in any of these cases.

    ``max_tokens`` and ``timeout_s`` bound each call (None: no time limit). ``on_progress``
    gets every progress report (with the attempt; a repair's writing is phase ``repairing``);
    the journal gets a ``planning_progress`` event at each phase change and at most every
    ``progress_every_s`` seconds within one.

    ``coverage`` (default on) has the reply state which steps serve each part of the goal;
    coverage warnings are repaired within ``max_attempts`` and never make planning fail.
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
        timeout_s: float | None = 120.0,
        on_progress: ProgressCallback | None = None,
        progress_every_s: float = 5.0,
        coverage: bool = True,
    ) -> None:
        if max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        if max_tokens < 1:
            raise UsageError("max_tokens must be at least 1")
        if timeout_s is not None and timeout_s <= 0:
            raise UsageError("timeout_s must be positive (or None for no time limit)")
        self.llm = llm
        self.registry = registry
        self.max_attempts = max_attempts
        self.max_steps = max_steps
        self.llm_step = llm_step
        self.journal = journal
        self.max_tokens = max_tokens
        self.repair_temperature = repair_temperature
        self.timeout_s = timeout_s
        self.on_progress = on_progress
        self.progress_every_s = progress_every_s
        self._journaled: tuple[int, str, float] | None = None
        self.coverage = coverage
        self._schemas: dict[frozenset[str], tuple[dict[str, Any], dict[str, Any]]] = {}
        self.schema, self.repair_schema = self.schemas_for(())
        """The reply schemas for a goal with no trusted context (``schemas_for``)."""
        self.system_prompt = planner_system(coverage=coverage) + describe_tools(
            registry, llm_step=llm_step
        )
        self.attempts: list[PlanAttempt] = []
        """The attempts of the last ``plan()`` call."""
        self.warnings: tuple[Issue, ...] = ()
        """The coverage warnings of the plan the last ``plan()`` call returned."""
        self.repaired: tuple[str, ...] = ()
        """The changes made to the plan the last ``plan()`` call returned."""

    def schemas_for(self, context: Collection[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The schemas a reply must follow, for a goal with trusted context values named
        ``context``: the first attempt's (a plan or ``cannot_plan``), and a repair's (a plan: the
        model already judged the goal plannable, except after coverage warnings, where refusing
        may be the right answer). Narrowed to what can be valid (``plan_schema``'s ``context``):
        placeholders from earlier steps, loop items and the given names only, ids 1, 2, ..."""
        key = frozenset(context)
        if key not in self._schemas:
            common: dict[str, Any] = {
                "llm_step": self.llm_step,
                "max_steps": self.max_steps,
                "coverage": self.coverage,
                "context": key,
            }
            self._schemas[key] = (
                plan_schema(self.registry, **common),
                plan_schema(self.registry, cannot_plan=False, **common),
            )
        return self._schemas[key]

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
        Traced as a ``plan`` span, with each model call as a ``chat`` span in it.
        """
        attributes = plan_attributes(self.llm, run_id, "plan")
        with telemetry.span("plan", attributes, kind="plan", run_id=run_id) as span:
            made = await self._plan(goal, context, run_id)
            span.set({"gen_ai.plan.step.count": len(made.steps), "planlock.plan_hash": made.hash})
            return made

    async def _plan(self, goal: str, context: Mapping[str, Any] | None, run_id: str) -> Plan:
        messages = self.messages(goal, context)
        inputs = dict(context or {})
        schema, repair_schema = self.schemas_for(inputs)
        self.attempts = []
        self.warnings = ()
        self.repaired = ()
        self._journaled = None
        judged = False  # has the model finished a reply (and so judged the goal plannable)?
        best: tuple[Plan, PlanAttempt] | None = None  # the valid plan with the fewest warnings
        for number in range(1, self.max_attempts + 1):
            request = LLMRequest(
                messages=tuple(messages),
                purpose="plan",
                json_schema=repair_schema if judged else schema,
                max_tokens=self.max_tokens,
                # A greedy model tends to repeat its rejected plan: sample a little on repairs.
                temperature=None if number == 1 else self.repair_temperature,
                timeout_s=self.timeout_s,
                on_progress=self._progress_for(run_id, number),
            )
            try:
                reply = await self._call(request, run_id, number)
            except LLMCutOff as exc:
                issue = cut_off_issue(exc, self.max_tokens, self.timeout_s)
                self._record(
                    run_id,
                    "plan_rejected",
                    {"by": "planner", "attempt": number, "hash": None, "issues": [issue.to_json()]},
                )
                self.attempts.append(
                    PlanAttempt(
                        number,
                        exc.partial,
                        (issue,),
                        exc.input_tokens,
                        exc.output_tokens,
                        exc.latency_s,
                        exc.reason,
                    )
                )
                # The cut-off text is not sent back: a loop shown to the model invites another.
                messages += [Message("user", cut_off_message(exc, self.max_tokens, self.timeout_s))]
                continue
            judged = True
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
            plan_, issues, warnings, repaired = outcome
            _log.info("planner %s, attempt %d: %d issue(s)", self.llm.name, number, len(issues))
            attempt = PlanAttempt(
                number,
                reply.text,
                issues,
                reply.input_tokens,
                reply.output_tokens,
                reply.latency_s,
                warnings=warnings,
                repaired=repaired,
            )
            self.attempts.append(attempt)
            if plan_ is not None and not issues:
                if best is None or len(warnings) <= len(best[1].warnings):
                    best = (plan_, attempt)
                if not warnings or number == self.max_attempts:
                    return self._created(run_id, *best)
            self._record(
                run_id,
                "plan_rejected",
                {
                    "by": "planner",
                    "attempt": number,
                    "hash": plan_.hash if plan_ is not None else None,
                    "issues": [i.to_json() for i in issues],
                    **({"warnings": [w.to_json() for w in warnings]} if warnings else {}),
                },
            )
            if issues:
                hints = repair_hints(plan_, issues, self.registry)
                if plan_ is not None:
                    fixes = did_you_mean(plan_, issues, self.registry)
                    hints += [f"write '{{{{{n}}}}}' for '{{{{{o}}}}}'" for o, n in fixes.items()]
                repair = repair_message(issues, hints)
            else:  # only coverage warnings: name the tools that can; refusing if none can
                hints, refusal = coverage_hints(warnings, self.registry)
                repair = coverage_message(warnings, hints, refusal=refusal)
                judged = not refusal
            messages += [Message("assistant", reply.text), Message("user", repair)]
        if best is not None:  # a later repair went wrong: the earlier valid plan stands
            return self._created(run_id, *best)
        cut = [a.finish_reason for a in self.attempts if a.finish_reason != "stop"]
        advice = cut_off_advice(cut, self.max_tokens, self.timeout_s) if cut else None
        raise PlanningFailed(self.llm.name, self.attempts, advice)

    def _created(self, run_id: str, plan_: Plan, attempt: PlanAttempt) -> Plan:
        """Journal and return the plan of ``attempt`` (with its warnings, if any)."""
        self.warnings = attempt.warnings
        self.repaired = attempt.repaired
        self._record(
            run_id,
            "plan_created",
            {
                "by": "planner",
                "backend": self.llm.name,
                "attempt": attempt.number,
                "plan": plan_.canonical(),
                "hash": plan_.hash,
                **(
                    {"warnings": [w.to_json() for w in attempt.warnings]}
                    if attempt.warnings
                    else {}
                ),
                **({"repaired": list(attempt.repaired)} if attempt.repaired else {}),
            },
        )
        return plan_

    async def _call(self, request: LLMRequest, run_id: str, attempt: int) -> LLMReply:
        started = time.perf_counter()
        try:
            reply = await call_model(self.llm, request)
        except LLMCutOff as exc:
            partial = LLMReply(
                exc.partial,
                exc.model or self.llm.name,
                exc.input_tokens,
                exc.output_tokens,
                exc.latency_s or time.perf_counter() - started,
                exc.reason,
            )
            self._record_call(run_id, request, attempt, reply=partial, error=exc)
            raise
        except LLMError as exc:
            self._record_call(run_id, request, attempt, error=exc, started=started)
            raise
        except Exception as exc:
            error = LLMError(self.llm.name, f"{type(exc).__name__}: {exc}")
            self._record_call(run_id, request, attempt, error=error, started=started)
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
        self._record_call(run_id, request, attempt, reply=reply)
        return reply

    def _record_call(
        self,
        run_id: str,
        request: LLMRequest,
        attempt: int,
        *,
        reply: LLMReply | None = None,
        error: LLMError | None = None,
        started: float | None = None,
    ) -> None:
        """Journal one planner call: its reply, or its error and how long it took to fail."""
        if self.journal is None:
            return
        latency = None if started is None else time.perf_counter() - started
        event = llm_called(
            request.purpose,
            self.llm,
            request,
            reply,
            error=error,
            latency_s=latency,
            attempt=attempt,
        )
        self._record(run_id, "llm_called", event)

    def _progress_for(self, run_id: str, attempt: int) -> ProgressCallback:
        def report(progress: Progress) -> None:
            if attempt > 1 and progress.phase == "writing":
                progress = replace(progress, phase="repairing")
            progress = replace(progress, attempt=attempt)
            if self.on_progress is not None:
                self.on_progress(progress)
            self._journal_progress(run_id, progress)

        return report

    def _journal_progress(self, run_id: str, progress: Progress) -> None:
        """A ``planning_progress`` event at each phase change, else every ``progress_every_s``
        (the end of a call is its ``llm_called`` event)."""
        if self.journal is None or progress.phase == "done" or progress.attempt is None:
            return
        now = time.monotonic()
        last = self._journaled
        if (
            last is not None
            and last[:2] == (progress.attempt, progress.phase)
            and now - last[2] < self.progress_every_s
        ):
            return
        self._journaled = (progress.attempt, progress.phase, now)
        self._record(run_id, "planning_progress", {"by": "planner", **progress.to_json()})

    def check_reply(
        self, text: str, goal: str, inputs: dict[str, Any] | None = None
    ) -> tuple[Plan, tuple[str, ...]] | None:
        """The plan a first reply gives, with the rewrites that made it valid, when ``plan``
        would take it with no repair (valid, and no coverage warning); None otherwise. With
        greedy decoding a model writes the same first reply to the same request, so a reply kept
        from an earlier run can be checked against this planner's repairs without the model."""
        outcome = self._check(text, goal, dict(inputs or {}))
        if isinstance(outcome, str):
            return None
        plan_, issues, warnings, repaired = outcome
        return (plan_, repaired) if plan_ is not None and not issues and not warnings else None

    def _check(
        self, text: str, goal: str, inputs: dict[str, Any]
    ) -> str | tuple[Plan | None, tuple[Issue, ...], tuple[Issue, ...], tuple[str, ...]]:
        """A cannot-plan reason, or the parsed plan (if any), its issues, its warnings and the
        changes that made it valid (``fix_reply``: kept only if they make it so)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, (Issue("not_json", "$", f"the reply is not JSON: {exc}"),), (), ()
        if isinstance(data, dict) and set(data) == {"cannot_plan"}:
            reason = data["cannot_plan"]
            return reason if isinstance(reason, str) and reason else "no reason given"
        if not isinstance(data, dict) or "steps" not in data:
            msg = 'the reply must be {"steps": [...]} or {"cannot_plan": "<why>"}'
            return None, (Issue("malformed", "$", msg),), (), ()
        body = {k: v for k, v in data.items() if k not in ("version", "goal")}
        try:
            parsed = Plan.parse({"version": 1, "goal": goal, **body})
        except PlanInvalid as exc:
            return None, exc.issues, (), ()
        report = validate(parsed, self.registry, inputs=inputs, max_steps=self.max_steps)
        current, issues, notes = parsed, report.issues, list[str]()
        for n in range(FIX_ROUNDS):  # a rewrite may leave an issue that another one fixes
            fixed = fix_reply(body, current, issues, self.registry, first_items=n == 0)
            if fixed is None:  # also a valid reply: nothing to rewrite
                break
            body, notes = fixed[0], notes + fixed[1]
            try:
                current = Plan.parse({"version": 1, "goal": goal, **body})
            except PlanInvalid:
                break
            again = validate(current, self.registry, inputs=inputs, max_steps=self.max_steps)
            if not again.issues:
                return current, (), again.warnings, tuple(notes)
            issues = again.issues
        return parsed, report.issues, report.warnings, ()

    def _record(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.record(run_id, kind, data)


def plan_attributes(llm: LLM, run_id: str, purpose: str) -> telemetry.Attributes:
    """A ``plan`` span's attributes (GenAI conventions: operation ``plan``)."""
    provider, _ = provider_and_model(llm.name)
    return {
        "gen_ai.operation.name": "plan",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "planlock.run_id": run_id,
        "planlock.purpose": purpose,
    }
