"""The ``planlock`` command: a thin Typer + Rich layer over the library.

Exit codes: 0 ok, 1 invalid plan, 2 usage error, 3 approval required or denied, 4 a step failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from planlock import _render
from planlock._approval import ApprovalRequest, Decision, approve_all, auto_approve
from planlock._errors import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequired,
    LLMError,
    PlanInvalid,
    PlanlockError,
    ToolsNotFound,
    UsageError,
)
from planlock._execute import RunResult
from planlock._journal import Event, Journal
from planlock._journal_pg import is_dsn, redact
from planlock._loader import load_tools
from planlock._plan import Plan
from planlock._policy import Policy
from planlock._run import run_sync
from planlock._tools import ToolRegistry
from planlock._validate import validate

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_APPROVAL, EXIT_STEP = 0, 1, 2, 3, 4

app = typer.Typer(
    name="planlock",
    help="Plan-then-execute for LLM agents: validate, approve and run plans; audit the journal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
journal_app = typer.Typer(help="Read and verify the journal.", no_args_is_help=True)
app.add_typer(journal_app, name="journal")

out = Console()
err = Console(stderr=True)

ToolsOpt = Annotated[
    str,
    typer.Option("--tools", help="The tool registry: module.path:attr or path/to/file.py:attr."),
]
InputOpt = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="A trusted input as NAME=JSON (repeatable)."),
]
JournalOpt = Annotated[
    str | None,
    typer.Option(
        "--journal",
        help="Journal: an SQLite file or a postgresql:// DSN "
        "[default: $PLANLOCK_JOURNAL or ./planlock.db].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy file (TOML or YAML) [default: the built-in policy]."),
]


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _journal_spec(spec: str | Path | None) -> str | Path:
    """The journal named by --journal or $PLANLOCK_JOURNAL: a DSN, or else a file path."""
    spec = spec or os.environ.get("PLANLOCK_JOURNAL") or "planlock.db"
    return str(spec) if is_dsn(str(spec)) else Path(spec)


def _journal_path(path: str | Path | None) -> Path:
    spec = _journal_spec(path)
    if not isinstance(spec, Path):
        _fail(EXIT_USAGE, "this command needs a journal file, not a database URL")
    return spec


def _open_journal(spec: str | Path | None) -> Journal:
    try:
        return Journal.open(_journal_spec(spec))
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))


def _journal_missing(spec: str | Path) -> bool:
    return isinstance(spec, Path) and not spec.exists()


def _registry(spec: str) -> ToolRegistry:
    try:
        return load_tools(spec)
    except (ToolsNotFound, UsageError) as exc:
        _fail(EXIT_USAGE, str(exc))


def _policy(path: Path | None, registry: ToolRegistry) -> Policy:
    try:
        return Policy.load(path, registry) if path else Policy()
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))


def _model(spec: str | None) -> Any:
    from planlock._models import load_model  # noqa: PLC0415  (backends load lazily)

    try:
        return load_model(spec)
    except (UsageError, LLMError) as exc:
        _fail(EXIT_USAGE, str(exc))


def _inputs(pairs: list[str] | None, option: str = "--input") -> dict[str, Any]:
    """NAME=JSON pairs (``--input``, ``--context``) as a dict; a bad pair is a usage error."""
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name.isidentifier():
            _fail(EXIT_USAGE, f"{option} takes NAME=JSON, got {pair!r}")
        try:
            inputs[name] = json.loads(raw)
        except json.JSONDecodeError as exc:
            _fail(EXIT_USAGE, f"{option} {name}: not JSON ({exc})")
    return inputs


def _load_plan(path: str, as_json: bool) -> Plan:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot read plan {path}: {exc.strerror}")
    except UnicodeDecodeError:
        _invalid(PlanInvalid([_issue("not_json", "$", "plan file is not UTF-8 text")]), as_json)
    try:
        return Plan.parse(text)
    except PlanInvalid as exc:
        _invalid(exc, as_json)


def _issue(code: str, path: str, message: str) -> Any:
    from planlock._validate import Issue  # noqa: PLC0415

    return Issue(code, path, message)


def _invalid(exc: PlanInvalid, as_json: bool) -> NoReturn:
    if as_json:
        print(json.dumps({"valid": False, "issues": [i.to_json() for i in exc.issues]}, indent=2))
    else:
        err.print(_render.issues_table(exc.issues))
        err.print(f"[bold red]plan is invalid:[/] {len(exc.issues)} issue(s); nothing was run.")
    raise typer.Exit(EXIT_INVALID)


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
            f"[green]plan is valid[/]: {len(parsed.steps)} step(s), hash {report.plan_hash[:16]}"
        )


@app.command("tools")
def tools_cmd(tools: ToolsOpt, as_json: JsonOpt = False) -> None:
    """List the tools in a registry with their effects and parameters."""
    registry = _registry(tools)
    if as_json:
        print(json.dumps(registry.catalogue(), indent=2))
    else:
        out.print(_render.tools_table(registry))


class TerminalApprover:
    """Asks on the terminal, showing the plan, its effects and the exact arguments."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, request: ApprovalRequest) -> Decision:
        self.console.print(_render.approval_panel(request))
        who = os.environ.get("USER") or "terminal-user"
        question = "Approve this call?" if request.kind == "call" else "Approve and run this plan?"
        try:
            answer = typer.confirm(question, default=False)
        except (typer.Abort, EOFError):
            answer = False
        if answer:
            return request.approve(who, "terminal")
        return request.deny(who, "terminal", "declined at the terminal prompt")


def _approver(mode: str | None) -> Any:
    mode = mode or ("prompt" if sys.stdin.isatty() else "auto")
    if mode == "auto":
        return auto_approve
    if mode == "all":
        return approve_all(os.environ.get("USER") or "operator")
    if mode == "prompt":
        return TerminalApprover(err)
    _fail(EXIT_USAGE, f"--approve must be auto, prompt or all, not {mode!r}")


def _progress(as_json: bool) -> Any:
    def show(event: Event) -> None:
        if not as_json:
            line = _render.progress_line(event)
            if line:
                err.print(line, highlight=False)

    return show


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
        )
    except PlanInvalid as exc:
        _invalid(exc, as_json)
    except (ApprovalRequired, ApprovalDenied, ApprovalMismatch) as exc:
        if as_json:
            print(json.dumps({"status": "not_approved", "reason": str(exc)}, indent=2))
        ran = "some steps had already run" if started else "nothing was run"
        _fail(EXIT_APPROVAL, f"{exc} ({ran})")
    report_result(result, as_json)


def report_result(result: RunResult, as_json: bool, **extra: Any) -> None:
    """Print a finished run (JSON or a panel) and exit 3 if a person or policy stopped it, 4 if a
    step failed. ``extra`` fields (e.g. the plan) go into the JSON after the status."""
    if as_json:
        payload = {
            "run_id": result.run_id,
            "status": result.status,
            **extra,
            "plan_hash": result.plan_hash,
            "steps": result.statuses,
            "outputs": result.outputs,
            "failed_step": result.failed_step,
            "error_kind": result.error_kind,
            "error": result.error,
            "replans": result.replans,
        }
        print(json.dumps(payload, indent=2))
    else:
        out.print(_render.result_panel(result))
    if not result.ok:
        stopped = result.error_kind in ("denied", "approval_refused")
        raise typer.Exit(EXIT_APPROVAL if stopped else EXIT_STEP)


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
        out.print(f"[green]journal intact[/]: {report.count} event(s) verified in {where}")
    else:
        err.print(f"[bold red]journal tampered[/]: event {report.first_bad}: {report.reason}")
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)


def main() -> None:
    """Entry point: map library errors that escape to clear messages and exit codes."""
    try:
        app()
    except PlanlockError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(EXIT_USAGE)


from planlock import _cli_queue  # noqa: E402, F401  (registers submit/approvals/approve/deny/worker)

# isort: split
from planlock import _cli_plan  # noqa: E402,F401  (registers plan/ask/demo)

# isort: split
from planlock import _cli_bench  # noqa: E402,F401  (registers bench)

# isort: split
from planlock import _cli_serve  # noqa: E402,F401  (registers serve)

# isort: split
from planlock import _cli_durable  # noqa: E402,F401  (registers durable, worker --engine dbos)
