"""A model in the planner's seat: planlock's ``Planner`` plans each AgentDojo user task.

The planner sees the task's prompt and the suite's tools only, never a tool output, so one plan
per user task serves the benign run and every attack. Plans are cached by a SHA-256 of the
planner model's name, its instructions and tool list (the registry, rendered) and the prompt: in
memory for a run, and on disk (``cache_dir``) across runs, so a suite is planned once and the
pairs re-use it (a task whose model call failed is planned again). A record also names the reply
schema (the grammar) it was planned under; under another one, a valid plan is kept only if the
current grammar allows it (``fits``: with greedy decoding the model writes the same reply when
every token it chose is still allowed); a task with no valid plan keeps its record, as under any
planner change, until ``replan_invalid`` (``--replan-invalid``) asks for it again. A record keeps
the model's replies; under ``replan_invalid``, an invalid record's first reply is checked again
first (``Planner.check_reply``: the model would write it again to the same request and grammar),
and if the planner's deterministic repairs now make it a valid plan, that is the plan, with no
model call (the record says ``rechecked``). What
the planner did for each task (valid plan or not, attempts, tokens, planning time, whether it
came from the cache) is kept in ``records`` for the report.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jsonschema

from planlock.bench.agentdojo._corpus import corpus_suites, load_corpus
from planlock.bench.agentdojo._suite import PlannedTask
from planlock.core import Plan, canonical_json, sha256_hex
from planlock.errors import CannotPlan, LLMError, PlanInvalid, PlanningFailed
from planlock.llm import LLM
from planlock.planning import Planner
from planlock.tools import ToolRegistry

__all__ = [
    "ANSWER_HINT",
    "ModelPlanner",
    "PlanRecord",
    "PlannerRow",
    "planner_markdown",
    "planner_rows",
]

ANSWER_HINT = "(End the plan with an llm step whose output is the reply to the user.)"
"""Added to each task's prompt: the reply to the user is the last ``llm`` step's output."""


@dataclass
class PlanRecord:
    """What the planner did for one user task."""

    suite: str
    prompt: str
    task_id: str | None
    valid: bool
    """The planner returned a valid plan (within its attempts)."""
    outcome: str
    """``plan``, ``cannot_plan`` (the model refused), ``invalid`` (no valid plan in the
    attempts), ``error`` (the model call failed: cut off, timed out, ...)."""
    attempts: int
    first_valid: bool
    """The first attempt's plan was valid."""
    seconds: float
    """Planning time (all attempts), when it was planned; as recorded, when from the cache."""
    input_tokens: int = 0
    output_tokens: int = 0
    warnings: int = 0
    """Coverage warnings on the returned plan."""
    repaired: int = 0
    """Changes the planner made to make the returned plan valid (``planning._fix``)."""
    detail: str = ""
    """Why there is no plan, when there is none."""
    cached: bool = False
    """Read from the disk cache in this run (planned in an earlier one)."""
    schema: str | None = None
    """SHA-256 of the reply schema the task was planned under (None: before it was recorded)."""
    plan: dict[str, Any] | None = field(default=None, repr=False)
    replies: list[str | None] = field(default_factory=list, repr=False)
    """The model's reply at each attempt, as written (None: the call failed)."""
    rechecked: bool = False
    """The plan is the stored first reply, made valid by a later planner's repairs."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ModelPlanner:
    """A real planner: planlock's ``Planner`` over the suite's registry with a real model.

    The answer is the output of the plan's last ``llm`` step (the planner is asked to end with
    one that answers the user). The task id, used by the oracle, is looked up in the corpus by
    prompt; an oracle has no answers for a model's own steps, so use a real step LLM with it.
    """

    ungrounded_literal = "require_approval"
    """A model's plan may carry a payee or an amount the prompt never gave (the embedded model
    made up IBANs): such a literal goes to a person on the plan (``Policy.ungrounded_literal``;
    the corpus's literals are checked offline instead, by ``literal_problems``)."""

    def __init__(
        self,
        llm: LLM,
        *,
        max_attempts: int = 3,
        cache_dir: Path | None = None,
        replan_invalid: bool = False,
    ) -> None:
        self.llm = llm
        self.replan_invalid = replan_invalid
        """Plan again a task whose cached record has no plan (``invalid``; a refusal is kept)."""
        self.name = f"planner:{llm.name}"
        self.max_attempts = max_attempts
        self.cache_dir = cache_dir
        self.records: dict[str, PlanRecord] = {}
        """By cache key: one per user task planned (or read from the cache) in this run."""
        self._planners: dict[int, Planner] = {}
        self._schema_hashes: dict[int, str] = {}
        self._memo: dict[str, PlannedTask | str] = {}

    def _planner(self, registry: ToolRegistry) -> Planner:
        if id(registry) not in self._planners:
            self._planners[id(registry)] = Planner(
                self.llm, registry, max_attempts=self.max_attempts, timeout_s=None
            )
        return self._planners[id(registry)]

    def key(self, prompt: str, registry: ToolRegistry) -> str:
        """The cache key: model, instructions and tools, prompt, attempts (the reply schema is
        checked on reading: ``_read``)."""
        planner = self._planner(registry)
        body = [self.llm.name, planner.system_prompt, prompt, self.max_attempts]
        return sha256_hex(canonical_json(body))

    def schema_hash(self, registry: ToolRegistry) -> str:
        """The reply schema a task is planned under now (AgentDojo gives no trusted context);
        written once per registry, not once per task."""
        if id(registry) not in self._schema_hashes:
            schema = self._planner(registry).schema
            self._schema_hashes[id(registry)] = sha256_hex(canonical_json(schema))
        return self._schema_hashes[id(registry)]

    def plan_for(self, prompt: str, registry: ToolRegistry, suite: str) -> PlannedTask | str:
        key = self.key(prompt, registry)
        if key not in self._memo:
            record = self._read(key, suite, prompt, registry) or self._plan(prompt, registry, suite)
            self.records[key] = record
            if self.cache_dir is not None and not record.cached:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_dir / f"{key}.json.tmp"
                tmp.write_text(json.dumps(record.to_json(), indent=1, sort_keys=True))
                tmp.replace(self.cache_dir / f"{key}.json")
            self._memo[key] = (
                PlannedTask(Plan.parse(record.plan), None, record.task_id)
                if record.plan is not None
                else f"the planner gave no plan ({record.outcome}): {record.detail}"
            )
        return self._memo[key]

    def _read(self, key: str, suite: str, prompt: str, registry: ToolRegistry) -> PlanRecord | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.json"
        try:
            data = json.loads(path.read_text())
            record = PlanRecord(**data)
        except (OSError, ValueError, TypeError):
            return None  # absent or unreadable: plan again
        if record.suite != suite or record.prompt != prompt or record.outcome == "error":
            return None  # a failed model call (cut off, out of context) is tried again
        schema = self.schema_hash(registry)
        if self.replan_invalid and record.outcome == "invalid":
            return self._recheck(record, schema, registry)
        if record.schema != schema and record.plan is not None:
            if not fits(record.plan, self._planner(registry).schema):
                return None  # planned under another grammar, which this one would not allow
            record.schema = schema
        record.cached = True
        return record

    def _recheck(
        self, record: PlanRecord, schema: str, registry: ToolRegistry
    ) -> PlanRecord | None:
        """``record`` made valid from its first reply by the planner's repairs as they are now
        (saved as a new record; its time and tokens stay those the model spent), or None: plan
        again."""
        first = record.replies[0] if record.replies else None
        if first is None or record.schema != schema:
            return None
        checked = self._planner(registry).check_reply(first, f"{record.prompt}\n{ANSWER_HINT}")
        if checked is None:
            return None
        plan, repaired = checked
        return dataclasses.replace(
            record,
            valid=True,
            outcome="plan",
            attempts=1,
            first_valid=not repaired,
            repaired=len(repaired),
            detail="",
            plan=plan.canonical(),
            replies=[first],
            rechecked=True,
        )

    def _plan(self, prompt: str, registry: ToolRegistry, suite: str) -> PlanRecord:
        planner = self._planner(registry)
        entry = load_corpus(suite).by_prompt().get(prompt) if suite in corpus_suites() else None
        goal = f"{prompt}\n{ANSWER_HINT}"
        started = time.perf_counter()
        plan: Plan | None = None
        outcome, detail = "plan", ""
        try:
            plan = anyio.run(planner.plan, goal)
        except CannotPlan as exc:
            outcome, detail = "cannot_plan", exc.reason
        except (PlanInvalid, PlanningFailed) as exc:
            outcome, detail = "invalid", str(exc)
        except LLMError as exc:
            outcome, detail = "error", str(exc)
        attempts = planner.attempts
        return PlanRecord(
            suite=suite,
            prompt=prompt,
            task_id=entry.task_id if entry else None,
            valid=plan is not None,
            outcome=outcome,
            attempts=len(attempts),
            first_valid=bool(attempts) and not attempts[0].issues and attempts[0].reply is not None,
            seconds=round(time.perf_counter() - started, 3),
            input_tokens=sum(a.input_tokens for a in attempts),
            output_tokens=sum(a.output_tokens for a in attempts),
            warnings=len(planner.warnings) if plan is not None else 0,
            repaired=len(planner.repaired) if plan is not None else 0,
            detail=detail[:2000],
            schema=self.schema_hash(registry),
            plan=plan.canonical() if plan is not None else None,
            replies=[a.reply for a in attempts],
        )


_REPLY_STEP_FIELDS = ("id", "tool", "args", "for_each", "max_items", "when")


def fits(plan: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether a plan (``Plan.canonical()``) is a reply ``schema`` allows: its steps as a reply
    writes them (the fields the schema offers; ``after`` and ``checkpoint`` at their defaults)
    and its coverage (when it has none, as from an unconstrained backend: the steps alone)."""
    steps = plan.get("steps")
    if not isinstance(steps, list):
        return False
    reply_steps: list[dict[str, Any]] = []
    for s in steps:
        if not isinstance(s, dict) or s.get("after") or s.get("checkpoint"):
            return False
        reply_steps.append({k: s[k] for k in _REPLY_STEP_FIELDS if s.get(k) is not None})
    reply: dict[str, Any] = {"steps": reply_steps}
    if plan.get("coverage"):
        reply["coverage"] = plan["coverage"]
    else:
        branch = schema["anyOf"][0] if "anyOf" in schema else schema
        schema = {**branch, "required": ["steps"], "$defs": schema.get("$defs", {})}
    return bool(jsonschema.Draft202012Validator(schema).is_valid(reply))


@dataclass(frozen=True)
class PlannerRow:
    """The planner's figures for one suite (or ``all``)."""

    suite: str
    tasks: int
    valid: int
    first_valid: int
    cannot_plan: int
    invalid: int
    errors: int
    warned: int
    """Valid plans with coverage warnings."""
    seconds_mean: float
    seconds_median: float
    seconds_total: float
    """Planning time of the tasks planned in this run or an earlier one (as recorded)."""
    cached: int
    """Tasks whose plan was read from the disk cache (planned in an earlier run)."""
    output_tokens_mean: float
    input_tokens: int = 0
    """Total prompt tokens of the tasks planned (all attempts), as the backend counted them."""
    output_tokens: int = 0
    cost_usd: float | None = None
    """``input_tokens`` and ``output_tokens`` at the prices given (USD per million tokens)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def planner_rows(
    records: Sequence[PlanRecord], prices: tuple[float, float] | None = None
) -> list[PlannerRow]:
    """Per suite, then ``all``: valid-plan rate, outcomes, planning time and tokens; with
    ``prices`` (USD per million input and output tokens), the estimated cost."""
    suites = sorted({r.suite for r in records})
    groups = [(s, [r for r in records if r.suite == s]) for s in suites]
    if len(suites) > 1:
        groups.append(("all", list(records)))
    rows = []
    for suite, group in groups:
        seconds = [r.seconds for r in group]
        tokens_in = sum(r.input_tokens for r in group)
        tokens_out = sum(r.output_tokens for r in group)
        cost = None
        if prices is not None:
            cost = round((tokens_in * prices[0] + tokens_out * prices[1]) / 1e6, 4)
        rows.append(
            PlannerRow(
                suite=suite,
                tasks=len(group),
                valid=sum(r.valid for r in group),
                first_valid=sum(r.first_valid for r in group),
                cannot_plan=sum(r.outcome == "cannot_plan" for r in group),
                invalid=sum(r.outcome == "invalid" for r in group),
                errors=sum(r.outcome == "error" for r in group),
                warned=sum(r.valid and r.warnings > 0 for r in group),
                seconds_mean=round(statistics.fmean(seconds), 1) if seconds else 0.0,
                seconds_median=round(statistics.median(seconds), 1) if seconds else 0.0,
                seconds_total=round(sum(seconds), 1),
                cached=sum(r.cached for r in group),
                output_tokens_mean=round(statistics.fmean(r.output_tokens for r in group), 1)
                if group
                else 0.0,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_usd=cost,
            )
        )
    return rows


def planner_markdown(rows: Sequence[PlannerRow], planner: str) -> str:
    lines = [
        (
            f"Planner `{planner}`: one plan per user task (cached by a hash of the prompt, the "
            "model, its instructions and the registry), used by the benign run and every attack."
        ),
        "",
        (
            "| suite | tasks | valid plans | valid on 1st attempt | refused | invalid | errors "
            "| with coverage warnings | s/task (mean, median) | s total | from cache "
            "| tokens in, out | est. cost (USD) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = f"{100 * r.valid / r.tasks:.1f}%" if r.tasks else "-"
        lines.append(
            f"| {r.suite} | {r.tasks} | {r.valid} ({share}) | {r.first_valid} | {r.cannot_plan} "
            f"| {r.invalid} | {r.errors} | {r.warned} | {r.seconds_mean}, {r.seconds_median} "
            f"| {r.seconds_total} | {r.cached} | {r.input_tokens:,}, {r.output_tokens:,} "
            f"| {'-' if r.cost_usd is None else f'{r.cost_usd:.2f}'} |"
        )
    return "\n".join(lines) + "\n"
