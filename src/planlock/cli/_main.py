"""The core commands: validate, tools, run, journal show/verify; the options every command
shares (``--version``, ``-v``/``-q``); and the entry point."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.text import Text

from planlock._version import __version__
from planlock.agent import run_sync
from planlock.cli import _render
from planlock.cli._app import (
    EXIT_APPROVAL,
    EXIT_INVALID,
    EXIT_OK,
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
    _journal_missing,
    _journal_spec,
    _load_plan,
    _model,
    _open_journal,
    _policy,
    _progress,
    _registry,
    app,
    err,
    journal_app,
    out,
    report_result,
)
from planlock.db import redact
from planlock.errors import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequired,
    PlanInvalid,
    PlanlockError,
)
from planlock.validation import validate


class _StderrHandler(logging.Handler):
    """Writes log records to the standard error of the moment (a test runner may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Show the ``planlock`` loggers' records on stderr: warnings by default, info with -v,
    debug with -vv, errors only with -q (verbosity -1). Returns what undoes it."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger("planlock")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before)

    return undo


def _show_version(value: bool) -> None:
    if value:
        out.print(f"planlock {__version__}", highlight=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Log more to stderr: -v what planlock does (info), -vv every detail (debug).",
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Log only errors (no warnings).")
    ] = False,
    version: Annotated[  # noqa: ARG001  (its eager callback prints it and exits)
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Plan-then-execute for LLM agents: validate, approve and run plans; audit the journal."""
    ctx.call_on_close(configure_logging(-1 if quiet else verbose))


@app.command("validate")
def validate_cmd(
    plan: Annotated[str, typer.Argument(help="Plan file (JSON), or - for standard input.")],
    tools: ToolsOpt,
    input_: InputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a plan against the tools; list every issue (exit 1) or say it is valid (exit 0)."""
    registry = _registry(tools)
    parsed = _load_plan(plan, as_json)
    report = validate(parsed, registry, inputs=_inputs(input_) if input_ else None)
    if not report.ok:
        _invalid(PlanInvalid(report.issues), as_json)
    if as_json:
        print(json.dumps({"valid": True, "plan_hash": report.plan_hash}, indent=2))
    else:
        out.print(
            Text.assemble(
                ("plan is valid", "green"),
                f": {len(parsed.steps)} step(s), hash {report.plan_hash[:16]}",
            )
        )


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


@journal_app.command("show")
def journal_show(
    journal: JournalOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's events.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the journal's events (all runs, or one)."""
    path = _journal_spec(journal)
    if _journal_missing(path):
        _fail(EXIT_USAGE, f"no journal at {path}")
    events = _open_journal(path).events(run_id=run)
    if run and not events:
        _fail(EXIT_USAGE, f"no run {run} in {redact(path) if isinstance(path, str) else path}")
    if as_json:
        print(json.dumps([e.model_dump() for e in events], indent=2))
    else:
        out.print(_render.events_table(events))
        out.print(_render.journal_summary(events))


@journal_app.command("verify")
def journal_verify(journal: JournalOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute the hash chain: exit 0 if intact, 1 if any event was altered."""
    path = _journal_spec(journal)
    if _journal_missing(path):
        _fail(EXIT_USAGE, f"no journal at {path}")
    report = _open_journal(path).verify()
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "events": report.count,
                    "first_bad": report.first_bad,
                    "reason": report.reason,
                }
            )
        )
    elif report.ok:
        where = redact(path) if isinstance(path, str) else path
        out.print(
            Text.assemble(
                ("journal intact", "green"), f": {report.count} event(s) verified in {where}"
            )
        )
    else:
        err.print(
            Text.assemble(
                ("journal tampered", "bold red"), f": event {report.first_bad}: {report.reason}"
            )
        )
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)


def main() -> None:
    """Entry point: map library errors that escape to clear messages and exit codes."""
    try:
        app(prog_name="planlock")
    except PlanlockError as exc:
        err.print(Text.assemble(("error:", "bold red"), f" {exc}"))
        sys.exit(EXIT_USAGE)
