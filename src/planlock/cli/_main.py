"""The core commands: validate, tools, run; the options every command shares (``--version``,
``-v``/``-q``); and the entry point."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import logging
import signal
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
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    InputOpt,
    JournalOpt,
    JsonOpt,
    PolicyOpt,
    ToolsOpt,
    _approver,
    _close_opened,
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
    DatabaseUnavailable,
    PlanInvalid,
    PlanlockError,
    ToolsNotFound,
    UsageError,
)
from planlock.tools import ToolRegistry, load_toolset
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
    ctx.call_on_close(_close_opened)  # runs first (last in, first out): logging still on


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
            Text.assemble(
                ("plan is valid", "green"),
                f": {len(parsed.steps)} step(s), hash {report.plan_hash[:16]}",
            )
        )
        for w in report.warnings:
            out.print(Text(f"⚠ {w.path}: {w.message}", style="yellow"))


@app.command("tools")
def tools_cmd(
    tools: ToolsOpt,
    as_json: JsonOpt = False,
    pin: Annotated[
        bool,
        typer.Option(
            "--pin",
            help="MCP tools file: pin every tool's definition as the servers give it now "
            "(after you reviewed them), in FILE.lock.",
        ),
    ] = False,
) -> None:
    """List the tools in a registry with their effects and parameters; for an MCP tools file,
    also the server's hints and each tool's pin."""
    if not tools.endswith(".toml"):
        if pin:
            _fail(EXIT_USAGE, "--pin is for an MCP tools file (.toml)")
        registry = _registry(tools)
        if as_json:
            print(json.dumps(registry.catalogue(), indent=2))
        else:
            out.print(_render.tools_table(registry))
        return
    try:
        toolset = load_toolset(tools)
        registry = ToolRegistry([t.tool for t in toolset.tools])
    except (ToolsNotFound, UsageError) as exc:
        _fail(EXIT_USAGE, str(exc))
    status = {t.tool.name: t.status for t in toolset.tools}
    if as_json:
        listed = [{**t, "pin": status[t["name"]]} for t in registry.catalogue()]
        print(json.dumps(listed, indent=2))
    else:
        out.print(_render.tools_table(registry, status))
    if pin:
        changed = [t.tool.name for t in toolset.tools if t.status != "pinned"]
        lock = toolset.pin()
        err.print(
            f"pinned {len(toolset.tools)} tool(s) in {lock}"
            + (f" (new or changed: {', '.join(changed)})" if changed else ""),
            highlight=False,
        )
    else:
        for name, what in toolset.problems():
            err.print(Text.assemble(("not pinned", "yellow"), f": {name}: {what}"), highlight=False)


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
    _threads_on_sigusr1()
    try:
        app(prog_name="planlock")
    except DatabaseUnavailable as exc:
        err.print(Text.assemble(("error:", "bold red"), f" {exc}"))
        sys.exit(EXIT_UNAVAILABLE)
    except PlanlockError as exc:
        err.print(Text.assemble(("error:", "bold red"), f" {exc}"))
        sys.exit(EXIT_USAGE)


def _threads_on_sigusr1() -> None:
    """``kill -USR1 PID`` writes the stack of every thread of a planlock process to its stderr,
    and the process goes on: how to see what a worker or a server that does not stop is
    waiting for. (Python's faulthandler, in C: it works while the interpreter is stuck.)"""
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is None:  # pragma: no cover - Windows
        return
    with contextlib.suppress(AttributeError, ValueError, RuntimeError, io.UnsupportedOperation):
        faulthandler.register(usr1, file=sys.stderr, all_threads=True)
