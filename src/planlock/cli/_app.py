"""What every ``planlock`` command shares: the Typer app, consoles, options, exit codes and
helpers. Command modules import from here; nothing here imports a command module.

Exit codes: 0 ok, 1 invalid plan, 2 usage error, 3 approval required or denied, 4 a step failed.

No text is ever read as Rich markup: the consoles have markup off (a goal, a tool's output or an
error message containing ``[bold]`` or ``[/]`` prints as written), styles are given with
``rich.text.Text``, and help texts are escaped once when a command is built (``_types``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from planlock.approval import (
    ApprovalRequest,
    Decision,
    SQLEndorsements,
    approve_all,
    auto_approve,
)
from planlock.cli import _render
from planlock.cli._types import PlanlockTyper
from planlock.core import Issue, Plan
from planlock.db import is_dsn
from planlock.errors import (
    LLMError,
    PlanInvalid,
    ToolPinMismatch,
    ToolsNotFound,
    UsageError,
)
from planlock.execution import RunResult
from planlock.journal import Event, Journal
from planlock.llm import load_model
from planlock.policy import Policy
from planlock.tools import ToolRegistry, load_tools

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_APPROVAL, EXIT_STEP = 0, 1, 2, 3, 4
EXIT_UNAVAILABLE = 5
"""The database could not be reached within the reconnect wait (``DatabaseUnavailable``)."""

app = PlanlockTyper(
    name="planlock",
    help="Plan-then-execute for LLM agents: validate, approve and run plans; audit the journal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
journal_app = PlanlockTyper(help="Read and verify the journal.", no_args_is_help=True)
app.add_typer(journal_app, name="journal")

out = Console(markup=False)
err = Console(stderr=True, markup=False)

ToolsOpt = Annotated[
    str,
    typer.Option(
        "--tools",
        metavar="MODULE:ATTR|FILE.toml",
        help="The tool registry: module.path:attr or path/to/file.py:attr, or an MCP tools file "
        "(.toml).",
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
        help="A trusted input as NAME=JSON (repeatable; --context is the same option).",
    ),
]
JournalOpt = Annotated[
    str | None,
    typer.Option(
        "--journal",
        metavar="FILE|DSN",
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
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
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
    """The journal, anchoring as the environment says; closed (and so anchored, when events
    were recorded) when the command ends."""
    try:
        journal = Journal.open(_journal_spec(spec))
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    _opened.append(journal)
    return journal


_opened: list[Journal] = []
"""Journals a command opened: closed (and anchored) when the command ends, however it ends."""


def _close_opened() -> None:
    """Close (and anchor) the journals the command opened; the root callback registers it."""
    while _opened:
        _opened.pop().close()


def _endorsements(journal: Journal) -> SQLEndorsements:
    """The endorsements kept beside the journal (saved payees, known contacts)."""
    try:
        return SQLEndorsements.beside(journal)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))


def _journal_missing(spec: str | Path) -> bool:
    return isinstance(spec, Path) and not spec.exists()


def _registry(spec: str) -> ToolRegistry:
    """The tools; an MCP tool that does not match its pin is refused before anything runs
    (exit 1)."""
    try:
        return load_tools(spec)
    except ToolPinMismatch as exc:
        _fail(EXIT_INVALID, str(exc))
    except (ToolsNotFound, UsageError) as exc:
        _fail(EXIT_USAGE, str(exc))


def _policy(path: Path | None, registry: ToolRegistry) -> Policy:
    try:
        return Policy.load(path, registry) if path else Policy()
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))


def _model(spec: str | None) -> Any:
    try:
        return load_model(spec)
    except (UsageError, LLMError) as exc:
        _fail(EXIT_USAGE, str(exc))


def _inputs(pairs: list[str] | None, option: str = "--input") -> dict[str, Any]:
    """NAME=JSON pairs (``--input``, alias ``--context``) as a dict; a bad one is a usage error."""
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
    return Issue(code, path, message)


def _invalid(exc: PlanInvalid, as_json: bool) -> NoReturn:
    if as_json:
        print(json.dumps({"valid": False, "issues": [i.to_json() for i in exc.issues]}, indent=2))
    else:
        err.print(_render.issues_table(exc.issues))
        err.print(
            Text.assemble(
                ("plan is invalid:", "bold red"), f" {len(exc.issues)} issue(s); nothing was run."
            )
        )
    raise typer.Exit(EXIT_INVALID)


class TerminalApprover:
    """Asks on the terminal, showing the plan, its effects and the exact arguments."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, request: ApprovalRequest) -> Decision:
        self.console.print(_render.approval_panel(request))
        who = os.environ.get("USER") or "terminal-user"
        if request.kind == "call" and request.endorsable:
            return self._ask_call(request, who)
        question = "Approve this call?" if request.kind == "call" else "Approve and run this plan?"
        try:
            answer = typer.confirm(question, default=False)
        except (typer.Abort, EOFError):
            answer = False
        if answer:
            return request.approve(who, "terminal")
        return request.deny(who, "terminal", "declined at the terminal prompt")

    def _ask_call(self, request: ApprovalRequest, who: str) -> Decision:
        """A call held up by untrusted data in a sensitive parameter: approve it once, deny it,
        or endorse the value (approve it, and let the same value from the same source through
        without asking from now on)."""
        question = "Approve this call? [y]es, [n]o, [e]ndorse this value"
        try:
            answer = typer.prompt(question, default="n", show_default=True).strip().lower()
            labels: dict[str, str] = {}
            if answer in ("e", "endorse"):
                for param in dict.fromkeys(o.param for o in request.endorsable):
                    shown = [
                        v
                        for n, v, _ in _render.call_arguments(request)
                        if n == param or n.endswith(f": {param}")
                    ]
                    value = ", ".join(json.dumps(v, ensure_ascii=False) for v in shown)
                    label = typer.prompt(
                        f"What is {param} = {value}? A label, e.g. landlord "
                        "(empty: do not endorse it)",
                        default="",
                        show_default=False,
                    )
                    if label.strip():
                        labels[param] = label.strip()
        except (typer.Abort, EOFError):
            answer = "n"
        if answer in ("e", "endorse") and labels:
            return request.endorse(who, "terminal", labels)
        if answer in ("y", "yes", "e", "endorse"):
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
