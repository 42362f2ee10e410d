"""``planlock bench agentdojo``: the AgentDojo security benchmark (needs ``planlock[agentdojo]``).

Runs each suite with no attack and under each attack, for planlock (plans from the corpus or a
real planner; in-step LLM oracle, local or worst case) and for the ReAct baseline driven by the
same worst-case model; prints the table and writes JSON, Markdown and the plot.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from planlock.cli._app import EXIT_USAGE, _fail, app, err, out
from planlock.cli._types import PlanlockTyper
from planlock.llm import LocalLLM, load_model

bench_app = PlanlockTyper(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _count(suite: Any, attack: str | None, n_users: int | None, n_inj: int | None) -> int:
    users = n_users or len(suite.user_tasks)
    return users * (n_inj or len(suite.injection_tasks)) if attack else users


@bench_app.command("agentdojo")
def agentdojo_cmd(
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite", "-s", help="Suite (repeatable) [default: every suite the corpus covers]."
        ),
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            "-a",
            help="Attack (repeatable), or 'none' [default: none and every attack].",
        ),
    ] = None,
    planner: Annotated[
        str, typer.Option("--planner", help="corpus, or a model spec (local, openai:MODEL, ...).")
    ] = "corpus",
    step_llm: Annotated[
        str,
        typer.Option(
            "--step-llm",
            help="In-step LLM: worst (worst case; honest = oracle), oracle (ORACLE answers "
            "from the ground truth), local (the embedded model).",
        ),
    ] = "worst",
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="Also run the ReAct baseline.")
    ] = True,
    user_task: Annotated[
        list[str] | None, typer.Option("--user-task", help="Only these user tasks.")
    ] = None,
    injection_task: Annotated[
        list[str] | None, typer.Option("--injection-task", help="Only these injection tasks.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for agentdojo.json/.md/.png/.svg.")
    ] = Path("benchmarks/results/agentdojo"),
    traces: Annotated[
        bool, typer.Option("--traces", help="Also write AgentDojo's trace file for every pair.")
    ] = False,
    plan_only: Annotated[
        bool,
        typer.Option(
            "--plan-only",
            help="With a model planner: plan every user task and report the planner's figures "
            "(valid plans, attempts, time), without running the tasks.",
        ),
    ] = False,
    plan_cache: Annotated[
        Path | None,
        typer.Option(
            "--plan-cache",
            help="Where a model planner's plans are cached across runs (by a hash of prompt, "
            "model and registry) [default: OUTPUT/plans].",
        ),
    ] = None,
    replan_invalid: Annotated[
        bool,
        typer.Option(
            "--replan-invalid",
            help="With a model planner: plan again the tasks whose cached record has no valid "
            "plan (the planner changed; valid cached plans are kept).",
        ),
    ] = False,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts",
            min=1,
            help="A model planner's attempts per task (a rejected plan is repaired).",
        ),
    ] = 3,
    price: Annotated[
        tuple[float, float] | None,
        typer.Option(
            "--price",
            help="The planner model's price, USD per million input and output tokens (e.g. "
            "--price 2 8): the report estimates the planning cost from the token counts.",
        ),
    ] = None,
    person: Annotated[
        str,
        typer.Option(
            "--person",
            help="The simulated person: approve (approves each call) or endorse (also runs the "
            "benign tasks with a person who endorses values, kept across a suite's tasks; "
            "attacked runs then see those endorsements, frozen).",
        ),
    ] = "approve",
) -> None:
    """Run AgentDojo v1.2.2 against planlock and print utility and attack success."""
    try:
        from planlock.bench.agentdojo import (  # noqa: PLC0415  (optional dependency, imported on use)
            ATTACKS,
            CAMEL_FIRE_RATE,
            SUITES,
            BaselineAgent,
            CorpusPlanner,
            FrozenEndorsements,
            ModelPlanner,
            PairResult,
            PlanlockAgent,
            PlannerRow,
            autonomy,
            corpus_suites,
            load_suite,
            make_element,
            misses,
            planner_markdown,
            planner_rows,
            run_pairs,
            summarize,
            write,
        )
    except ImportError as exc:
        _fail(EXIT_USAGE, f"AgentDojo is not installed ({exc}): pip install 'planlock[agentdojo]'")
    suites = suite or (corpus_suites() if planner == "corpus" else list(SUITES))
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        _fail(EXIT_USAGE, f"unknown suite(s) {unknown}: use {', '.join(SUITES)}")
    uncovered = [s for s in suites if planner == "corpus" and s not in corpus_suites()]
    if uncovered:
        _fail(EXIT_USAGE, f"the plan corpus has no plans for {uncovered} yet: use --planner MODEL")
    attacks: list[str | None] = [None if a == "none" else a for a in (attack or ["none", *ATTACKS])]
    bad = [a for a in attacks if a is not None and a not in ATTACKS]
    if bad:
        _fail(EXIT_USAGE, f"unknown attack(s) {bad}: use none or {', '.join(ATTACKS)}")
    if person not in ("approve", "endorse"):
        _fail(EXIT_USAGE, f"--person must be approve or endorse, not {person!r}")
    if step_llm not in ("worst", "oracle", "local"):
        _fail(EXIT_USAGE, f"--step-llm must be worst, oracle or local, not {step_llm!r}")
    if planner == "corpus":
        if plan_only:
            _fail(EXIT_USAGE, "--plan-only needs a model planner (--planner local, ...)")
        source: Any = CorpusPlanner()
    else:
        llm = load_model(planner)
        if isinstance(llm, LocalLLM):
            llm.ensure_context(PLANNER_CONTEXT)  # the workspace's tool list alone is ~4k tokens
        source = ModelPlanner(
            llm,
            max_attempts=max_attempts,
            cache_dir=plan_cache or output / "plans",
            replan_invalid=replan_invalid,
        )
        _plan_all(source, suites, user_task, make_element)
        if plan_only:
            only = planner_rows(list(source.records.values()), price)
            out.print(_planner_table(only, planner))
            meta = {
                "benchmark": "AgentDojo v1.2.2",
                "planner": planner,
                "plan_only": True,
                "price_usd_per_mtok": price,
                "machine": platform.platform(),
            }
            header = f"AgentDojo v1.2.2, planner `{planner}`, plans only\n"
            md = planner_markdown(only, planner)
            paths = write(output, [], [], meta, header, planner=(only, md))
            err.print("wrote " + ", ".join(str(p) for p in paths))
            return
    results: list[PairResult] = []
    approved: list[PairResult] = []
    endorsed: list[PairResult] = []
    total = 0
    for s in suites:
        st = load_suite(s)
        n_u, n_i = len(user_task or []) or None, len(injection_task or []) or None
        per = sum(_count(st, a, n_u, n_i) for a in attacks)
        total += per * (2 if baseline else 1) + (
            _count(st, None, n_u, n_i) if None in attacks else 0
        )
        total += _count(st, None, n_u, n_i) if person == "endorse" else 0
    started = time.perf_counter()
    with _progress() as progress:
        bar = progress.add_task("AgentDojo", total=total)

        def tick(_: PairResult) -> None:
            progress.advance(bar)

        for s in suites:
            frozen = None
            if person == "endorse":  # first: the endorsements attacked runs will see
                en, eworst = make_element(s, source, step_llm, approve="endorse")  # type: ignore[arg-type]
                progress.update(bar, description=f"planlock {s} none, person endorses")
                endorsed += run_pairs(
                    PlanlockAgent(en, eworst), s, None, user_tasks=user_task, on_result=tick
                )
                frozen = FrozenEndorsements.of(en.endorsements)
            el, worst = make_element(s, source, step_llm)  # type: ignore[arg-type]
            agents: list[Any] = [PlanlockAgent(el, worst)]
            if baseline:
                agents.append(BaselineAgent(s))
            for agent in agents:
                for a in attacks:
                    progress.update(bar, description=f"{agent.name[:24]} {s} {a or 'none'}")
                    el.endorsements = frozen if a is not None else None
                    results += run_pairs(
                        agent,
                        s,
                        a,
                        user_tasks=user_task,
                        injection_tasks=injection_task,
                        logdir=output / "traces" if traces else None,
                        on_result=tick,
                    )
            if None in attacks:
                granted, gworst = make_element(s, source, step_llm, approve="all")  # type: ignore[arg-type]
                progress.update(bar, description=f"planlock {s} none, person approves")
                approved += run_pairs(
                    PlanlockAgent(granted, gworst), s, None, user_tasks=user_task, on_result=tick
                )
    rows = summarize(results, approved)
    header = (
        f"AgentDojo v1.2.2, planner `{planner}`, in-step LLM `{step_llm}`"
        + (" (honest fallback: ORACLE)" if step_llm == "worst" else "")
        + ("; ORACLE answers" if step_llm == "oracle" else "")
        + "\n"
    )
    table = Table(title=header.strip())
    for col in (
        "agent",
        "suite",
        "attack",
        "pairs",
        "utility",
        "AgentDojo",
        "strict",
        "taint",
        "unasked",
        "asked",
        "if approved",
        "s",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.agent,
            r.suite,
            r.attack,
            str(r.pairs),
            f"{100 * r.utility:.1f}%",
            str(r.attacks_agentdojo),
            str(r.attacks_strict),
            str(r.attacks_taint),
            str(r.attacks_unasked),
            str(r.approval_runs),
            "" if r.utility_approved is None else f"{100 * r.utility_approved:.1f}%",
            f"{r.seconds:.1f}",
        )
    out.print(table)
    auto = autonomy(results, approved, endorsed)
    missed = misses(results, approved, endorsed)
    if auto:
        out.print(_autonomy_table(auto, CAMEL_FIRE_RATE))
    meta = {
        "benchmark": "AgentDojo v1.2.2",
        "planner": planner,
        "step_llm": step_llm,
        "suites": suites,
        "attacks": [a or "none" for a in attacks],
        "person": person,
        "price_usd_per_mtok": price,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.platform(),
    }
    planned: list[PlannerRow] = []
    if isinstance(source, ModelPlanner):
        planned = planner_rows(list(source.records.values()), price)
        out.print(_planner_table(planned, planner))
    paths = write(
        output,
        rows,
        results + approved + endorsed,
        meta,
        header,
        autonomy_rows=auto,
        missed=missed,
        planner=(planned, planner_markdown(planned, planner)) if planned else None,
    )
    err.print("wrote " + ", ".join(str(p) for p in paths))


@bench_app.command("plot")
def plot_cmd(
    reports: Annotated[
        list[Path],
        typer.Argument(help="agentdojo.json files written by `bench agentdojo` (one or more)."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for agentdojo.png and .svg.")
    ] = Path(),
) -> None:
    """Plot several AgentDojo reports together (for example the corpus's plans and a model's)."""
    from planlock.bench.agentdojo import plot, rows_of  # noqa: PLC0415  (optional dependency)

    rows: list[Any] = []
    for path in reports:
        try:
            rows.extend(rows_of(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            _fail(EXIT_USAGE, f"{path}: not an agentdojo.json report ({exc})")
    if not rows:
        _fail(EXIT_USAGE, "the reports have no rows")
    output.mkdir(parents=True, exist_ok=True)
    written = plot(rows, output)
    if not written:
        _fail(EXIT_USAGE, "plotting needs matplotlib: pip install 'planlock[agentdojo]'")
    err.print("wrote " + ", ".join(str(p) for p in written))


def _progress() -> Progress:
    """The benchmark's progress bars: description, bar, done of total, elapsed time."""
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=err, transient=False)


PLANNER_CONTEXT = 12288
"""Context of the embedded planner here: the instructions and a suite's tools take up to ~4.5k
tokens (workspace, travel), then the task, the plan and up to two repairs."""


def _plan_all(source: Any, suites: list[str], user_task: list[str] | None, make: Any) -> None:
    """Plan every user task first (or read its plan from the cache), with progress: the pairs
    then re-use the plans."""
    from planlock.bench.agentdojo import load_suite  # noqa: PLC0415  (optional dependency)

    with _progress() as progress:
        for s in suites:
            tasks = [
                t for t in load_suite(s).user_tasks.values() if not user_task or t.ID in user_task
            ]
            element, _ = make(s, source, "oracle")
            bar = progress.add_task(f"planning {s}", total=len(tasks))
            for task in tasks:
                source.plan_for(task.PROMPT, element.registry, s)
                progress.advance(bar)


def _planner_table(rows: list[Any], planner: str) -> Table:
    table = Table(title=f"Planner {planner}: one plan per user task, for every attack")
    cols = ["suite", "tasks", "valid", "1st try", "refused", "invalid", "errors", "s/task"]
    for col in [*cols, "tokens in/out", "est. USD"]:
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.suite,
            str(r.tasks),
            f"{r.valid} ({100 * r.valid / max(r.tasks, 1):.0f}%)",
            str(r.first_valid),
            str(r.cannot_plan),
            str(r.invalid),
            str(r.errors),
            f"{r.seconds_mean:.1f}",
            f"{r.input_tokens:,}/{r.output_tokens:,}",
            "-" if r.cost_usd is None else f"{r.cost_usd:.2f}",
        )
    return table


def _autonomy_table(rows: list[Any], camel: float) -> Table:
    """The second table: human touches and completion on benign tasks, per suite and overall,
    beside CaMeL's published share of benign runs on which its policy fires."""
    table = Table(title="autonomy (benign tasks)")
    cols = ("agent", "suite", "person", "tasks", "HITL load", "endorse", "TCR@0", "TCR@1")
    for col in (*cols, "TCR@∞", "fires"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.agent,
            r.suite,
            r.person,
            str(r.tasks),
            f"{r.hitl_load:.2f}",
            f"{r.endorsements:.2f}",
            *(f"{100 * x:.1f}%" for x in (r.tcr0, r.tcr1, r.tcr_inf, r.fire_rate)),
        )
    table.add_row("CaMeL (published)", "all", "", "", "", "", "", "", "", f"{100 * camel:.1f}%")
    return table
