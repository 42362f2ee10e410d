"""Planner benchmark: plan quality, latency and LLM cost against a ReAct baseline.

    .venv/bin/python benchmarks/planner.py                 # `make bench-planner`, ~15-25 min
    .venv/bin/python benchmarks/planner.py --quick         # 6 tasks, no cold runs
    .venv/bin/python benchmarks/planner.py --model openai:qwen@http://127.0.0.1:8080/v1

24 tasks over two toolsets: the demo's help desk (planlock.demo) and a small office toolset
(examples/office.py: calendar, contacts, files, messages). Each task has a goal, trusted context
and the tool sequence a careful person would plan (empty: the tools cannot serve the goal).
For each task, with the same model:

- the planner (``Planner``, up to 3 attempts): valid on the first attempt, valid after repair,
  exact tool-sequence match, latency of the first attempt with the cached prompt prefix
  ("warm": the system prompt and tool list are shared by every task of a toolset);
- goal coverage: whether the first valid plan and the returned plan had a part of the goal that
  no step seems to serve (``uncovered_part`` / ``uncovered_goal`` warnings), and whether the
  planner stated its ``coverage`` list;
- the plan is executed (approved automatically) and its quarantined ``llm`` steps counted;
- the ReAct baseline (``planlock.planning``) runs the same goal with the same tools: its model
  calls, tokens, and whether it called exactly the expected tools in order.

Cold latency (no cached prefix) is measured separately on the first ``--cold`` tasks of each
toolset. LLM calls and tokens per task are counted from the backend's own usage figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

import planlock  # type: ignore[import-untyped, unused-ignore]
from planlock import demo  # type: ignore[import-untyped, unused-ignore]
from planlock.planning._react import react  # type: ignore[import-untyped, unused-ignore]
from planlock.tools._loader import load_tools  # type: ignore[import-untyped, unused-ignore]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Task:
    toolset: str
    goal: str
    expected: tuple[str, ...]
    """The tool sequence of a careful plan; empty when the tools cannot serve the goal."""


SUPPORT = "support"
OFFICE = "office"

TASKS: tuple[Task, ...] = (
    Task(
        SUPPORT,
        demo.GOAL,
        ("read_ticket", "search_knowledge_base", "fetch_account", "send_email"),
    ),
    Task(SUPPORT, "Look up the customer's account.", ("fetch_account",)),
    Task(SUPPORT, "Delete the customer's account.", ("delete_account",)),
    Task(
        SUPPORT,
        "Search the knowledge base for articles about billing cycles.",
        ("search_knowledge_base",),
    ),
    Task(SUPPORT, "Read the customer's ticket.", ("read_ticket",)),
    Task(SUPPORT, "Email the customer the welcome template.", ("send_email",)),
    Task(
        SUPPORT,
        "Fetch the customer's account and email them the plan_details template with their plan.",
        ("fetch_account", "send_email"),
    ),
    Task(
        SUPPORT,
        "Read the customer's ticket and summarise in one sentence what they ask for.",
        ("read_ticket", "llm"),
    ),
    Task(
        SUPPORT,
        "Find the cancellation policy in the knowledge base and email the customer the "
        "policy_info template with the article's title.",
        ("search_knowledge_base", "send_email"),
    ),
    Task(
        SUPPORT,
        "Read the customer's ticket, then search the knowledge base for its subject.",
        ("read_ticket", "search_knowledge_base"),
    ),
    Task(SUPPORT, "Book a flight to Paris for the customer.", ()),
    Task(SUPPORT, "Refund the customer's last invoice.", ()),
    Task(OFFICE, "List my meetings today.", ("list_events",)),
    Task(OFFICE, "Find Alex Kim's email address.", ("find_contact",)),
    Task(
        OFFICE,
        "Send Alex Kim a message saying the report is ready.",
        ("find_contact", "send_message"),
    ),
    Task(OFFICE, "Read the file notes/agenda.txt.", ("read_file",)),
    Task(
        OFFICE,
        "Read notes/agenda.txt and save a one-line summary of it to notes/summary.txt.",
        ("read_file", "llm", "write_file"),
    ),
    Task(
        OFFICE,
        "Schedule a meeting called Design review with Alex Kim today from 16:00 to 17:00.",
        ("find_contact", "create_event"),
    ),
    Task(OFFICE, "Search my files for budget.", ("search_files",)),
    Task(
        OFFICE,
        "List my meetings today and send me the list as a message.",
        ("list_events", "send_message"),
    ),
    Task(OFFICE, "Write the text hello to the file notes/hello.txt.", ("write_file",)),
    Task(
        OFFICE,
        "Find the files about the budget and read the first one.",
        ("search_files", "read_file"),
    ),
    Task(OFFICE, "Order a pizza for the team.", ()),
    Task(
        OFFICE,
        "Tell Robin Park which meetings I have today.",
        ("find_contact", "list_events", "send_message"),
    ),
)

CONTEXTS: dict[str, dict[str, Any]] = {
    SUPPORT: demo.INPUTS,
    OFFICE: {"me": {"name": "Sam Lee", "email": "sam@example.com"}, "today": "2026-11-25"},
}


def registry_for(toolset: str) -> Any:
    """A fresh world and its tools."""
    if toolset == SUPPORT:
        return demo.build_registry(demo.HelpDesk.sample())
    return load_tools(str(ROOT / "examples" / "office.py") + ":make_registry")


@dataclass
class Row:
    toolset: str
    goal: str
    expected: list[str]
    planned: list[str] = field(default_factory=list)
    outcome: str = ""
    """valid, cannot_plan, invalid or llm_error."""
    error: str = ""
    attempts: int = 0
    first_valid: bool = False
    exact: bool = False
    warm_s: float = 0.0
    """Latency of the first planner call (cached prompt prefix)."""
    plan_s: float = 0.0
    """All planner calls, repairs included."""
    cold_s: float | None = None
    plan_calls: int = 0
    plan_tokens: int = 0
    issues: list[list[str]] = field(default_factory=list)
    """The issue codes of each attempt."""
    first_uncovered: list[str] = field(default_factory=list)
    """The coverage warnings of the first valid plan (before any coverage repair)."""
    final_uncovered: list[str] = field(default_factory=list)
    """The coverage warnings of the returned plan (after repair)."""
    coverage_stated: bool = False
    """The returned plan has a ``coverage`` list."""
    exec_status: str = ""
    exec_llm_calls: int = 0
    exec_tokens: int = 0
    react_status: str = ""
    react_tools: list[str] = field(default_factory=list)
    react_exact: bool = False
    react_calls: int = 0
    react_tokens: int = 0
    react_s: float = 0.0


async def plan_task(
    llm: Any, task: Task, row: Row, max_attempts: int, timeout_s: float | None = 120.0
) -> Any:
    registry = registry_for(task.toolset)
    planner = planlock.Planner(llm, registry, max_attempts=max_attempts, timeout_s=timeout_s)
    started = time.perf_counter()
    plan = None
    try:
        plan = await planner.plan(task.goal, CONTEXTS[task.toolset])
        row.outcome = "valid"
        row.planned = [s.tool for s in plan.steps]
    except planlock.CannotPlan:
        row.outcome = "cannot_plan"
    except planlock.PlanInvalid:
        row.outcome = "invalid"
    except planlock.LLMError as exc:
        row.outcome, row.error = "llm_error", str(exc)
    row.plan_s = time.perf_counter() - started
    attempts = planner.attempts
    row.issues = [[i.code for i in a.issues] for a in attempts]
    row.attempts = len(attempts)
    row.plan_calls = len(attempts)
    row.plan_tokens = sum(a.input_tokens + a.output_tokens for a in attempts)
    row.warm_s = attempts[0].latency_s if attempts else 0.0
    row.first_valid = bool(attempts) and not attempts[0].issues
    if row.outcome == "cannot_plan":
        row.first_valid = False
    valid = [a for a in attempts if not a.issues and a.reply is not None]
    if valid:
        row.first_uncovered = [w.message for w in valid[0].warnings]
    if plan is not None:
        row.final_uncovered = [w.message for w in planner.warnings]
        row.coverage_stated = bool(plan.coverage)
    row.exact = (row.outcome == "valid" and tuple(row.planned) == task.expected) or (
        row.outcome == "cannot_plan" and not task.expected
    )
    return plan, registry


async def execute(llm: Any, task: Task, plan: Any, registry: Any, row: Row) -> None:
    journal = planlock.Journal()
    try:
        result = await planlock.run(
            plan,
            registry,
            inputs=CONTEXTS[task.toolset],
            journal=journal,
            approver=planlock.approve_all("benchmark"),
            llm=llm,
        )
        row.exec_status = result.status
    except planlock.PlanlockError as exc:
        row.exec_status = type(exc).__name__
    calls = [e for e in journal.events() if e.kind == "llm_called"]
    row.exec_llm_calls = len(calls)
    row.exec_tokens = sum(
        int(e.data.get("input_tokens") or 0) + int(e.data.get("output_tokens") or 0) for e in calls
    )


async def react_task(llm: Any, task: Task, row: Row) -> None:
    started = time.perf_counter()
    result = await react(
        task.goal, registry_for(task.toolset), llm, context=CONTEXTS[task.toolset], max_turns=8
    )
    row.react_s = time.perf_counter() - started
    row.react_status = result.status
    row.react_tools = result.tools_called
    row.react_calls = result.llm_calls
    row.react_tokens = result.input_tokens + result.output_tokens
    wanted = [t for t in task.expected if t != "llm"]  # ReAct reads and summarises itself
    row.react_exact = result.status == "answered" and result.tools_called == wanted


async def cold_latency(llm: Any, task: Task) -> float:
    """One planner call with no cached prefix."""
    planner = planlock.Planner(llm, registry_for(task.toolset), max_attempts=1)
    previous = getattr(llm, "cache_prompt", None)
    if previous is not None:
        llm.cache_prompt = False
    try:
        await planner.plan(task.goal, CONTEXTS[task.toolset])
    except planlock.PlanlockError:
        pass
    finally:
        if previous is not None:
            llm.cache_prompt = previous
    return planner.attempts[0].latency_s if planner.attempts else float("nan")


async def bench(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    llm = planlock.load_model(args.model)
    load_s = None
    if isinstance(llm, planlock.LocalLLM):
        started = time.perf_counter()
        await anyio.to_thread.run_sync(llm.load)
        load_s = time.perf_counter() - started
        log(f"model {llm.model_label} loaded in {load_s:.1f} s, {llm.threads} threads")
    tasks = TASKS[:3] + TASKS[12:15] if args.quick else TASKS
    if args.only:
        tasks = tuple(TASKS[int(n) - 1] for n in args.only.split(","))
    rows: list[Row] = []
    warmed: set[str] = set()
    for i, task in enumerate(tasks, 1):
        row = Row(task.toolset, task.goal, list(task.expected))
        if task.toolset not in warmed:  # put this toolset's system prompt in the cache
            warmed.add(task.toolset)
            await plan_task(llm, Task(task.toolset, "Do nothing useful.", ()), Row("", "", []), 1)
        plan, registry = await plan_task(llm, task, row, args.max_attempts, args.timeout or None)
        if plan is not None and not args.no_exec:
            await execute(llm, task, plan, registry, row)
        if not args.no_react:
            await react_task(llm, task, row)
        rows.append(row)
        if args.jsonl:
            with args.jsonl.open("a") as f:
                f.write(json.dumps(asdict(row)) + "\n")
        log(
            f"[{i:2d}/{len(tasks)}] {row.outcome:11s} a={row.attempts} "
            f"{'exact' if row.exact else 'diff '} {row.warm_s:5.1f}s {row.planned} "
            f"uncovered {len(row.first_uncovered)}->{len(row.final_uncovered)} {row.issues} | "
            f"react {row.react_status} {row.react_calls} calls {row.react_tools}"
        )
    cold: list[tuple[str, float]] = []
    if args.cold:
        for toolset in (SUPPORT, OFFICE):
            for task in [t for t in tasks if t.toolset == toolset][: args.cold]:
                seconds = await cold_latency(llm, task)
                cold.append((task.goal, seconds))
                for row in rows:
                    if row.goal == task.goal:
                        row.cold_s = seconds
                log(f"cold {seconds:5.1f}s  {task.goal[:60]}")
    return {"model": llm.name, "load_s": load_s, "rows": rows, "cold": cold}


def summarize(rows: list[Row]) -> dict[str, Any]:
    plannable = [r for r in rows if r.expected]
    refusals = [r for r in rows if not r.expected]

    def pct(n: int, d: int) -> str:
        return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    colds = [r.cold_s for r in rows if r.cold_s is not None]
    return {
        "tasks": len(rows),
        "valid_first": pct(sum(r.first_valid for r in plannable), len(plannable)),
        "valid_after_repair": pct(sum(r.outcome == "valid" for r in plannable), len(plannable)),
        "refused_correctly": pct(sum(r.outcome == "cannot_plan" for r in refusals), len(refusals)),
        "exact_planner": pct(sum(r.exact for r in rows), len(rows)),
        "exact_react": pct(sum(r.react_exact for r in rows), len(rows)),
        "uncovered_first": pct(
            sum(bool(r.first_uncovered) for r in rows),
            sum(r.outcome == "valid" or bool(r.first_uncovered) for r in rows),
        ),
        "uncovered_final": pct(
            sum(bool(r.final_uncovered) for r in rows), sum(r.outcome == "valid" for r in rows)
        ),
        "coverage_stated": pct(
            sum(r.coverage_stated for r in rows), sum(r.outcome == "valid" for r in rows)
        ),
        "warm_median_s": statistics.median(r.warm_s for r in rows),
        "cold_median_s": statistics.median(colds) if colds else None,
        "planlock_calls": mean([r.plan_calls + r.exec_llm_calls for r in rows]),
        "planlock_tokens": mean([r.plan_tokens + r.exec_tokens for r in rows]),
        "react_calls": mean([r.react_calls for r in rows]),
        "react_tokens": mean([r.react_tokens for r in rows]),
        "planlock_s": mean([r.plan_s for r in rows]),
        "react_s": mean([r.react_s for r in rows]),
    }


def markdown(result: dict[str, Any], summary: dict[str, Any], meta: dict[str, Any]) -> str:
    rows: list[Row] = result["rows"]
    lines = [
        f"Model `{result['model']}`"
        + (f" (load {result['load_s']:.1f} s)" if result["load_s"] else "")
        + f"; {meta['cpus']} CPUs; {meta['date']}; load average {meta['loadavg']}.",
        "",
        "| metric | planlock planner | ReAct baseline |",
        "|---|---|---|",
        f"| valid plan, first attempt | {summary['valid_first']} | - |",
        f"| valid plan after repair (<= 3 attempts) | {summary['valid_after_repair']} | - |",
        f"| goals the tools cannot serve, refused | {summary['refused_correctly']} | - |",
        f"| exact tool sequence | {summary['exact_planner']} | {summary['exact_react']} |",
        f"| first valid plan with an uncovered part | {summary['uncovered_first']} | - |",
        f"| returned plan with an uncovered part | {summary['uncovered_final']} | - |",
        f"| returned plan states its coverage | {summary['coverage_stated']} | - |",
        f"| planner latency, cached prefix (median) | {summary['warm_median_s']:.1f} s | - |",
        "| planner latency, cold (median) | "
        + (f"{summary['cold_median_s']:.1f} s" if summary["cold_median_s"] else "-")
        + " | - |",
        (
            f"| LLM calls per task (mean) | {summary['planlock_calls']:.2f} | "
            f"{summary['react_calls']:.2f} |"
        ),
        (
            f"| tokens per task (mean) | {summary['planlock_tokens']:.0f} | "
            f"{summary['react_tokens']:.0f} |"
        ),
        (
            f"| model time per task (mean) | {summary['planlock_s']:.1f} s | "
            f"{summary['react_s']:.1f} s |"
        ),
        "",
        "| toolset | goal | expected | planned (attempts) | ReAct called |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        planned = ", ".join(r.planned) if r.outcome == "valid" else r.outcome
        mark = "=" if r.exact else "≠"
        rmark = "=" if r.react_exact else "≠"
        lines.append(
            f"| {r.toolset} | {r.goal} | {', '.join(r.expected) or '(cannot plan)'} | "
            f"{mark} {planned} ({r.attempts}) | {rmark} {', '.join(r.react_tools) or 'none'}"
            f" ({r.react_status}) |"
        )
    flagged = [r for r in rows if r.first_uncovered or r.final_uncovered]
    if flagged:
        lines += [
            "",
            "| goal | first valid plan: uncovered | returned plan: uncovered |",
            "|---|---|---|",
        ]
        lines += [
            f"| {r.goal} | {'; '.join(r.first_uncovered) or '-'} | "
            f"{'; '.join(r.final_uncovered) or ('-' if r.outcome == 'valid' else r.outcome)} |"
            for r in flagged
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="local")
    parser.add_argument("--quick", action="store_true", help="6 tasks, no cold runs")
    parser.add_argument("--cold", type=int, default=4, help="cold runs per toolset")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--no-react", action="store_true")
    parser.add_argument("--no-exec", action="store_true", help="plan only; do not run the plans")
    parser.add_argument("--only", help="these tasks only (1-based numbers, comma-separated)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="per planner call, s (0: none)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--jsonl", type=Path, help="append each task's row here as it finishes")
    args = parser.parse_args()
    if args.quick:
        args.cold = 0
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }

    async def go() -> dict[str, Any]:
        return await bench(args, lambda line: print(line, flush=True))

    started = time.perf_counter()
    result = anyio.run(go)
    summary = summarize(result["rows"])
    meta["seconds"] = round(time.perf_counter() - started)
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(markdown(result, summary, meta))
    took, load = meta["seconds"], meta["loadavg_end"]
    print(f"\n(the benchmark took {took} s; load average at the end {load})")
    if args.json:
        payload = {
            "meta": meta,
            "model": result["model"],
            "load_s": result["load_s"],
            "summary": summary,
            "rows": [asdict(r) for r in result["rows"]],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
