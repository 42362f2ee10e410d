"""Where the AgentDojo plans come from: the plan corpus (one plan per user task), or a planner.

The corpus (``planlock/agentdojo/corpus/<suite>.json``) stands in for an ideal planner when no
strong model is at hand. Its plans are written from the task prompt and the tool documentation
alone, never from the environment: ``literal_problems`` checks that every literal argument
appears in the prompt (or in the suite's short list of ``conventions``, such as ``"today"`` for a
date no tool gives, or is a date and time written from the prompt's own words, such as
``2024-05-19 13:00`` for "12:00 on 2024-05-19 for one hour"), and that no ``llm`` instruction
names a number, address or link that the prompt does not. Everything else reaches the tools
through placeholders.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from planlock.bench.agentdojo._suite import PlannedTask
from planlock.core import Plan, find_placeholders
from planlock.errors import UsageError
from planlock.tools import LLM_TOOL, ToolRegistry

__all__ = [
    "CorpusPlanner",
    "corpus_suites",
    "literal_problems",
    "load_corpus",
    "load_oracle",
]


@dataclass(frozen=True)
class CorpusEntry:
    task_id: str
    prompt: str
    steps: list[dict[str, Any]]
    answer: str | None
    cannot_plan: str | None = None
    """Why no fixed plan can serve the task (then ``steps`` is empty)."""


@dataclass(frozen=True)
class Corpus:
    suite: str
    conventions: tuple[str, ...]
    tasks: dict[str, CorpusEntry]

    def by_prompt(self) -> dict[str, CorpusEntry]:
        return {e.prompt: e for e in self.tasks.values()}


def _data(kind: str, suite: str) -> Any:
    path = resources.files("planlock.bench.agentdojo") / kind / f"{suite}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no {kind} for AgentDojo suite {suite!r}") from None


@cache
def load_corpus(suite: str) -> Corpus:
    data = _data("corpus", suite)
    tasks = {
        tid: CorpusEntry(
            tid, t["prompt"], t.get("steps", []), t.get("answer"), t.get("cannot_plan")
        )
        for tid, t in data["tasks"].items()
    }
    return Corpus(suite, tuple(data.get("conventions", ())), tasks)


@cache
def load_oracle(suite: str) -> dict[str, dict[str, Any]]:
    """The oracle's answers: user task -> llm step id -> result."""
    answers: dict[str, dict[str, Any]] = _data("oracle", suite)["answers"]
    return answers


class CorpusPlanner:
    """The plan corpus as a planner: the plan written for this exact prompt."""

    name = "corpus"

    def plan_for(
        self,
        prompt: str,
        registry: ToolRegistry,  # noqa: ARG002  (the corpus's plans were validated in tests)
        suite: str,
    ) -> PlannedTask | str:
        entry = load_corpus(suite).by_prompt().get(prompt)
        if entry is None:
            return "the corpus has no plan for this prompt"
        if entry.cannot_plan:
            return entry.cannot_plan
        plan = Plan.parse({"goal": prompt, "steps": entry.steps})
        return PlannedTask(plan, entry.answer, entry.task_id)


# --------------------------------------------------------------------------------------------
# The corpus's promise: nothing in a plan comes from the environment

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_IDENT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+|www\.\S+|https?://\S+|\b[A-Z]{2}\d{6,}")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _numbers(text: str) -> set[float]:
    out: set[float] = set()
    for m in _NUMBER.findall(text):
        for cand in (m.replace(",", ""), m.replace(",", ".")):
            try:
                out.add(float(cand))
            except ValueError:
                continue
    return out


def _literals(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _literals(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _literals(v, f"{path}[{i}]")
    elif isinstance(value, str):
        if not find_placeholders(value):
            yield path, value
        else:  # the text around placeholders is literal too
            rest = re.sub(r"\{\{.*?\}\}", "\n", value)
            for piece in rest.split("\n"):
                if piece.strip(" ,.:;-()"):
                    yield path, piece.strip()
    else:
        yield path, value


def _condition_values(when: Any) -> Any:
    """A condition with its references left out: the literals it compares with."""
    if not isinstance(when, dict):
        return None
    if "ref" in when:
        return {"value": when.get("value")}
    if "not" in when:
        return {"not": _condition_values(when["not"])}
    key = "all" if "all" in when else "any"
    return {key: [_condition_values(c) for c in when.get(key, [])]}


_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}))?$")
_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_HOURS = re.compile(r"\b(\d+|one|two|three|four|five|six|seven|eight)[ -]hours?\b", re.IGNORECASE)
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_WHOLE_DAY = {(0, 0), (23, 59)}
"""An event "on a day" with no time named spans the whole day: 00:00 to 23:59."""


def _prompt_dates(prompt: str) -> set[tuple[int, int, int]]:
    """The dates a prompt names with their year: ISO, or a month name, a day and a year."""
    out = {(int(y), int(m), int(d)) for y, m, d in re.findall(r"(\d{4})-(\d{2})-(\d{2})", prompt)}
    years = [int(y) for y in re.findall(r"\b(20\d\d)\b", prompt)]
    for match in re.finditer(r"\b([A-Za-z]+) (\d{1,2})(?:st|nd|rd|th)?\b", prompt):
        name, day = match.group(1).lower(), int(match.group(2))
        if name in _MONTHS:
            after = re.findall(r"\b(20\d\d)\b", prompt[match.end() :])
            year = int(after[0]) if after else (years[-1] if len(set(years)) == 1 else 0)
            if year:
                out.add((year, _MONTHS.index(name) + 1, day))
    for match in re.finditer(r"\b(\d{1,2})(?:st|nd|rd|th)? of ([A-Za-z]+)\b", prompt):
        name = match.group(2).lower()
        after = re.findall(r"\b(20\d\d)\b", prompt[match.end() :])
        if name in _MONTHS and after:
            out.add((int(after[0]), _MONTHS.index(name) + 1, int(match.group(1))))
    return out


def _prompt_datetime(literal: str, prompt: str) -> bool:
    """A ``YYYY-MM-DD[ HH:MM]`` literal the planner wrote from the prompt's own words: its date
    is one the prompt names with its year (in any common spelling), and its time is one the
    prompt names, that time plus a duration in hours the prompt states ("for one hour"), or
    the whole day (00:00 / 23:59) when the prompt names no time. Nothing here can come from
    the environment."""
    m = _ISO.match(literal.strip())
    if m is None:
        return False
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if (y, mo, d) not in _prompt_dates(prompt):
        return False
    if m.group(4) is None:
        return True
    hm = (int(m.group(4)), int(m.group(5)))
    times = {(int(h), int(mi)) for h, mi in re.findall(r"\b(\d{1,2}):(\d{2})\b", prompt)}
    if not times:
        return hm in _WHOLE_DAY
    spans = {int(n) if n.isdigit() else _WORDS[n.lower()] for n in _HOURS.findall(prompt)}
    return hm in times or any((h + n, mi) == hm for h, mi in times for n in spans)


def literal_problems(
    prompt: str, steps: list[dict[str, Any]], conventions: Iterable[str]
) -> list[str]:
    """Every literal in a plan that the prompt does not give (empty: the plan is clean).

    Strings must appear in the prompt (case and spacing aside), be a convention, or be a date
    and time written from the prompt's words (``_prompt_datetime``); numbers must
    appear in the prompt as numbers; booleans and null are choices, not data. An ``llm`` step's
    instruction and output schema are the planner's own words, but may name no number, email
    address, link or account that the prompt does not. A condition's (``when``) values are
    literals like any other ("rated higher than 4": ``4``).
    """
    text = _norm(prompt)
    nums = _numbers(prompt)
    conv = {_norm(c) for c in conventions}
    problems: list[str] = []
    for i, step in enumerate(steps):
        args = step.get("args", {})
        if step.get("tool") == LLM_TOOL:
            words = json.dumps([args.get("instruction", ""), args.get("output_schema", {})])
            problems.extend(
                f"step {i + 1}: instruction names {ident!r}"
                for ident in _IDENT.findall(words)
                if _norm(ident) not in text
            )
            problems.extend(
                f"step {i + 1}: instruction names the number {n}"
                for n in _numbers(str(args.get("instruction", "")))
                if n not in nums
            )
            args = {"input": args.get("input")}
        found = list(_literals(args, f"steps[{i}].args"))
        found += _literals(_condition_values(step.get("when")), f"steps[{i}].when")
        for path, lit in found:
            if lit is None or isinstance(lit, bool):
                continue
            if isinstance(lit, int | float):
                if float(lit) not in nums:
                    problems.append(f"{path}: number {lit} is not in the prompt")
            elif (
                _norm(str(lit)) not in text
                and _norm(str(lit)) not in conv
                and not _prompt_datetime(str(lit), prompt)
            ):
                problems.append(f"{path}: {lit!r} is not in the prompt")
    return problems


def corpus_entries(suite: str) -> Mapping[str, CorpusEntry]:
    return load_corpus(suite).tasks


def corpus_suites() -> list[str]:
    """The suites the corpus has plans for."""
    from planlock.bench.agentdojo._suite import SUITES  # noqa: PLC0415

    folder = resources.files("planlock.bench.agentdojo") / "corpus"
    return [s for s in SUITES if (folder / f"{s}.json").is_file()]
