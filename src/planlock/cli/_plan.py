"""``planlock plan``, ``planlock ask`` and ``planlock demo``: the planner's front end.

Registered on the main app by one import at the bottom of ``_cli``. Thin: every decision is the
library's (``Planner``, ``run_sync``); this module parses options and prints.

Exit codes as for ``run``: 0 ok, 1 invalid plan, cannot plan or model error (nothing ran),
2 usage error, 3 approval required or denied, 4 a step failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
import typer
from rich.text import Text
from ulid import ULID

from planlock.agent import run_sync
from planlock.cli import _render
from planlock.cli._app import (
    EXIT_APPROVAL,
    EXIT_INVALID,
    EXIT_USAGE,
    JournalOpt,
    JsonOpt,
    PolicyOpt,
    ToolsOpt,
    _approver,
    _endorsements,
    _fail,
    _inputs,
    _journal_path,
    _open_journal,
    _policy,
    _progress,
    _registry,
    app,
    err,
    out,
    report_result,
)
from planlock.cli._plan_progress import PlanProgress
from planlock.core import Plan
from planlock.errors import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequired,
    CannotPlan,
    LLMError,
    PlanInvalid,
    PlanningFailed,
    UsageError,
)
from planlock.journal import Journal
from planlock.llm import LLM, load_model
from planlock.planning import Planner
from planlock.tools import ToolRegistry

GoalArg = Annotated[str, typer.Argument(help="What to do, in words (trusted).")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="local, local:/path/model.gguf, openai:MODEL, openai:MODEL@BASE_URL or "
        "anthropic:MODEL (default: $PLANLOCK_MODEL, else local).",
    ),
]
InputOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        "--context",
        "-c",
        metavar="NAME=JSON",
        help="A trusted input as NAME=JSON (repeatable; --context is the same option). The "
        "planner sees names and types; the run gets the values.",
    ),
]
AttemptsOpt = Annotated[
    int, typer.Option("--max-attempts", min=1, help="Planner calls at most (repairs included).")
]
MaxTokensOpt = Annotated[
    int,
    typer.Option(
        "--max-tokens", min=1, help="Reply tokens per planner call; a longer reply is cut off."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0,
        help="Seconds per planner call (model loading included) before it is stopped "
        "(0: no limit).",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No planning progress on the terminal.")
]


def _model(spec: str | None) -> LLM:
    try:
        return load_model(spec)
    except (UsageError, LLMError) as exc:
        _fail(EXIT_USAGE, str(exc))


def _make_plan(
    goal: str,
    registry: ToolRegistry,
    llm: LLM,
    context: dict[str, Any],
    *,
    journal: Journal | None,
    run_id: str,
    max_attempts: int,
    as_json: bool,
    max_tokens: int = 1024,
    timeout: float = 120.0,
    quiet: bool = False,
) -> Plan:
    progress = PlanProgress(err, llm.name, max_attempts, enabled=not (quiet or as_json))
    planner = Planner(
        llm,
        registry,
        max_attempts=max_attempts,
        journal=journal,
        max_tokens=max_tokens,
        timeout_s=timeout or None,
        on_progress=progress,
    )

    async def go() -> Plan:
        return await planner.plan(goal, context, run_id=run_id)

    try:
        with progress:
            made = anyio.run(go)
    except CannotPlan as exc:
        _no_plan(as_json, "cannot_plan", exc.reason, [])
    except PlanningFailed as exc:
        if not as_json:
            for a in exc.attempts:
                err.print(
                    Text.assemble((f"attempt {a.number}", "yellow"), f": {len(a.issues)} issue(s)")
                )
                err.print(_render.issues_table(a.issues))
        _no_plan(as_json, "invalid", str(exc), [a.to_json() for a in exc.attempts])
    except LLMError as exc:
        _no_plan(as_json, "llm_error", str(exc), [a.to_json() for a in planner.attempts])
    if not as_json:  # what the planner rewrote in the model's reply: part of what is approved
        for line in planner.repaired:
            err.print(Text.assemble(("repaired", "yellow"), f" {line}"), highlight=False)
    return made


def _no_plan(as_json: bool, status: str, reason: str, attempts: list[dict[str, Any]]) -> NoReturn:
    if as_json:
        print(json.dumps({"status": status, "reason": reason, "attempts": attempts}, indent=2))
    label = {"cannot_plan": "cannot plan", "invalid": "no valid plan", "llm_error": "model error"}
    _fail(EXIT_INVALID, f"{label[status]}: {reason} (nothing was run)")


@app.command("plan")
def plan_cmd(
    goal: GoalArg,
    tools: ToolsOpt,
    model: ModelOpt = None,
    input_: InputOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the plan (JSON) to this file.")
    ] = None,
    max_attempts: AttemptsOpt = 3,
    max_tokens: MaxTokensOpt = 1024,
    timeout: TimeoutOpt = 120.0,
    quiet: QuietOpt = False,
    journal: Annotated[
        str | None,
        typer.Option(
            "--journal", help="Also journal the planner's calls here (file or postgresql:// DSN)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a validated plan for GOAL with the planner model; print it (and save it with -o)."""
    registry = _registry(tools)
    ctx = _inputs(input_)
    llm = _model(model)
    j = _open_journal(journal) if journal else None
    plan = _make_plan(
        goal,
        registry,
        llm,
        ctx,
        journal=j,
        run_id=str(ULID()),
        max_attempts=max_attempts,
        as_json=as_json,
        max_tokens=max_tokens,
        timeout=timeout,
        quiet=quiet,
    )
    text = json.dumps(plan.canonical(), indent=2, ensure_ascii=False)
    if output is not None:
        try:
            output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            _fail(EXIT_USAGE, f"cannot write {output}: {exc.strerror}")
    if as_json:
        print(text)
        return
    out.print(_render.plan_table(plan, registry))
    where = f"; written to {output}" if output else ""
    shown = f": {len(plan.steps)} step(s), hash {plan.hash[:16]}{where}"
    out.print(Text.assemble(("plan is valid", "green"), shown))


@app.command("ask")
def ask_cmd(
    goal: GoalArg,
    tools: ToolsOpt,
    model: ModelOpt = None,
    input_: InputOpt = None,
    journal: JournalOpt = None,
    approve: Annotated[
        str | None,
        typer.Option(
            "--approve",
            help="auto: only read-only plans run; prompt: ask; all: approve "
            "(default: prompt on a terminal, auto otherwise).",
        ),
    ] = None,
    max_attempts: AttemptsOpt = 3,
    max_tokens: MaxTokensOpt = 1024,
    timeout: TimeoutOpt = 120.0,
    quiet: QuietOpt = False,
    max_replans: Annotated[
        int,
        typer.Option(
            "--max-replans",
            help="Revisions allowed after errors and checkpoints, by the same model (0 disables).",
            min=0,
        ),
    ] = 2,
    policy: PolicyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan GOAL, then validate, show, approve and execute the plan in one go.

    Replans (after a failed step or at a checkpoint) are shown as they happen; a revision that
    reaches beyond the approved plan asks for approval again.
    """
    registry = _registry(tools)
    rules = _policy(policy, registry)
    ctx = _inputs(input_)
    llm = _model(model)
    approver = _approver(approve)
    j = _open_journal(journal)
    run_id = str(ULID())
    plan = _make_plan(
        goal,
        registry,
        llm,
        ctx,
        journal=j,
        run_id=run_id,
        max_attempts=max_attempts,
        as_json=as_json,
        max_tokens=max_tokens,
        timeout=timeout,
        quiet=quiet,
    )
    j.listeners.append(_progress(as_json))
    if not as_json:
        err.print(_render.plan_table(plan, registry))
    try:
        result = run_sync(
            plan,
            registry,
            inputs=ctx,
            journal=j,
            approver=approver,
            policy=rules,
            llm=llm,
            run_id=run_id,
            replanner=llm if max_replans else None,
            max_replans=max_replans,
            endorsements=_endorsements(j),
        )
    except PlanInvalid as exc:  # pragma: no cover  (the planner validated it already)
        _fail(EXIT_INVALID, str(exc))
    except (ApprovalRequired, ApprovalDenied, ApprovalMismatch) as exc:
        if as_json:
            print(
                json.dumps(
                    {"status": "not_approved", "reason": str(exc), "plan": plan.canonical()},
                    indent=2,
                )
            )
        _fail(EXIT_APPROVAL, f"{exc} (nothing was run)")
    report_result(result, as_json, plan=plan.canonical())


@app.command("demo")
def demo_cmd(
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve the plan without asking.")
    ] = False,
    journal: JournalOpt = None,
    model: ModelOpt = None,
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan-file", help="Run this plan file instead of planning (no model)."),
    ] = None,
    shipped_plan: Annotated[
        bool, typer.Option("--shipped-plan", help="Run the shipped plan instead of planning.")
    ] = False,
    compare_react: Annotated[
        bool,
        typer.Option(
            "--compare-react", help="Also run a ReAct agent on the same goal and compare."
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the seed's customer-support scenario end to end, offline: plan with the local model,
    approve, execute, and show where the injected instruction went."""

    from planlock.cli._demo import run_demo  # noqa: PLC0415  (the demo's tools load on use)

    code = run_demo(
        out,
        yes=yes,
        journal_path=_journal_path(journal) if journal else None,
        model=model,
        plan_file=plan_file,
        shipped_plan=shipped_plan,
        compare_react=compare_react,
        quiet=quiet,
    )
    raise typer.Exit(code)
