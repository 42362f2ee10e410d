"""The core commands: validate, tools, run; and the entry point."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.text import Text

from planlock.agent import run_sync
from planlock.cli import _render
from planlock.cli._app import (
    EXIT_APPROVAL,
    EXIT_USAGE,
    InputOpt,
    JournalOpt,
    JsonOpt,
    PolicyOpt,
    ToolsOpt,
    _approver,
    _endorsements,
    _fail,
    _inputs,
    _invalid,
    _load_plan,
    _model,
    _open_journal,
    _policy,
    _progress,
    _registry,
    app,
    err,
    out,
    report_result,
)
from planlock.errors import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequired,
    PlanInvalid,
    PlanlockError,
)
from planlock.validation import validate


@app.command("validate")
def validate_cmd(
    plan: Annotated[str, typer.Argument(help="Plan file (JSON), or - for standard input.")],
    tools: ToolsOpt,
    input_: InputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a plan against the tools; list every issue (exit 1) or say it is valid (exit 0),
    with any warning (a part of the goal no step seems to serve)."""
    registry = _registry(tools)
    parsed = _load_plan(plan, as_json)
    report = validate(parsed, registry, inputs=_inputs(input_) if input_ else None)
    if not report.ok:
        _invalid(PlanInvalid(report.issues), as_json)
    warnings = [w.to_json() for w in report.warnings]
    if as_json:
        print(
            json.dumps(
                {"valid": True, "plan_hash": report.plan_hash, "warnings": warnings}, indent=2
            )
        )
    else:
        out.print(
            f"[green]plan is valid[/]: {len(parsed.steps)} step(s), hash {report.plan_hash[:16]}"
        )
        for w in report.warnings:
            out.print(Text(f"⚠ {w.path}: {w.message}", style="yellow"))


@app.command("tools")
def tools_cmd(tools: ToolsOpt, as_json: JsonOpt = False) -> None:
    """List the tools in a registry with their effects and parameters."""
    registry = _registry(tools)
    if as_json:
        print(json.dumps(registry.catalogue(), indent=2))
    else:
        out.print(_render.tools_table(registry))


@app.command("run")
def run_cmd(
    plan: Annotated[str, typer.Argument(help="Plan file (JSON), or - for standard input.")],
    tools: ToolsOpt,
    input_: InputOpt = None,
    journal: JournalOpt = None,
    approve: Annotated[
        str | None,
        typer.Option(
            "--approve",
            help="auto: only read-only plans run; prompt: ask; all: approve. "
            "[default: prompt on a terminal, auto otherwise]",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Steps run at once, at most.", min=1)] = 16,
    policy: PolicyOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="LLM for the plan's quarantined llm steps and for replanning "
            "(local, openai:MODEL[@URL], anthropic:MODEL).",
        ),
    ] = None,
    max_replans: Annotated[
        int,
        typer.Option(
            "--max-replans",
            help="Revisions allowed after errors and checkpoints (needs --model; 0 disables).",
            min=0,
        ),
    ] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Validate, show, approve and execute a plan."""
    registry = _registry(tools)
    rules = _policy(policy, registry)
    parsed = _load_plan(plan, as_json)
    inputs = _inputs(input_)
    approver = _approver(approve)
    llm = _model(model) if model else None
    if llm is None and any(s.tool == "llm" for s in parsed.steps):
        _fail(EXIT_USAGE, "this plan has llm steps: give --model")
    j = _open_journal(journal)
    j.listeners.append(_progress(as_json))
    started: list[str] = []
    j.listeners.append(lambda e: started.append(e.run_id) if e.kind == "step_started" else None)
    if not as_json:
        err.print(_render.plan_table(parsed, registry))
    try:
        result = run_sync(
            parsed,
            registry,
            inputs=inputs,
            journal=j,
            approver=approver,
            policy=rules,
            concurrency=concurrency,
            llm=llm,
            replanner=llm if max_replans else None,
            max_replans=max_replans,
            endorsements=_endorsements(j),
        )
    except PlanInvalid as exc:
        _invalid(exc, as_json)
    except (ApprovalRequired, ApprovalDenied, ApprovalMismatch) as exc:
        if as_json:
            print(json.dumps({"status": "not_approved", "reason": str(exc)}, indent=2))
        ran = "some steps had already run" if started else "nothing was run"
        _fail(EXIT_APPROVAL, f"{exc} ({ran})")
    report_result(result, as_json)


def main() -> None:
    """Entry point: map library errors that escape to clear messages and exit codes."""
    try:
        app()
    except PlanlockError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(EXIT_USAGE)
