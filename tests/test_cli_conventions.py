"""The command line meets the conventions users' tools expect: ``--version``, ``python -m``,
readable ``--help``, text printed as written (never read as Rich markup), one name for trusted
inputs, a failed step's message, and ``-v``/``-q`` logging."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import planlock
from planlock import demo
from planlock.cli import app
from planlock.testing import ScriptedLLM

runner = CliRunner()
TOOLS = "planlock.demo:registry"
SRC = Path(planlock.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_desk() -> Iterator[None]:
    demo.desk.reset()
    yield
    demo.desk.reset()


def flat(output: str) -> str:
    """Help output with the boxes and line wrapping taken out, words separated by one space."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def every_command() -> list[list[str]]:
    """The argv of every command and group, e.g. ["journal", "show"]."""
    found: list[list[str]] = [[]]

    def walk(group: Any, path: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            found.append([*path, name])
            walk(command, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


# --- --version and python -m planlock --------------------------------------------------------


def test_version_flag_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"planlock {planlock.__version__}"


def test_python_dash_m_planlock_is_the_cli() -> None:
    env = {"PYTHONPATH": str(SRC), "COLUMNS": "120", "PATH": "/usr/bin:/bin"}
    version = subprocess.run(
        [sys.executable, "-m", "planlock", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"planlock {planlock.__version__}"
    helped = subprocess.run(
        [sys.executable, "-m", "planlock", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert helped.returncode == 0
    assert "Usage: planlock [OPTIONS] COMMAND" in helped.stdout  # not "python -m planlock"


def test_sigusr1_writes_every_threads_stack_and_the_process_goes_on(tmp_path: Path) -> None:
    """``kill -USR1`` on a planlock process (here a queue worker, which runs until SIGTERM):
    the stacks of its threads on stderr, and it goes on running."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    journal = tmp_path / "j.db"
    argv = ["worker", "--tools", "planlock.demo:registry", "--journal", str(journal)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "planlock", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not journal.exists():  # the worker has started (main() sets the handler first)
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert proc.poll() is None, "SIGUSR1 stopped the worker"
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    current = r"^Current thread 0x[0-9a-f]+ \(most recent call first\):$"
    assert re.search(current, stderr, re.MULTILINE), stderr
    assert re.search(r'planlock/cli/_main\.py", line \d+ in main$', stderr, re.MULTILINE), stderr


# --- --help: readable types, brackets kept ------------------------------------------------------


@pytest.mark.parametrize("argv", every_command(), ids=lambda a: " ".join(a) or "planlock")
def test_help_shows_no_python_types(argv: list[str]) -> None:
    result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    leaked = re.findall(r"<(?:str|int|float|bool|path|list\[[a-z]+\])>", result.output)
    assert not leaked, f"planlock {' '.join(argv)} --help shows {leaked}"


def test_help_names_option_types_in_words() -> None:
    shown = flat(runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output)
    assert "--tools MODULE:ATTR" in shown
    assert "--input,--context -i,-c NAME=JSON" in shown
    assert "--concurrency INTEGER [x>=1]" in shown
    assert "--policy PATH" in shown
    assert "--json Print machine-readable JSON." in shown  # a flag: no type
    assert "Usage: planlock run [OPTIONS] {PLAN}" in shown


def test_help_keeps_text_in_brackets() -> None:
    submit = flat(runner.invoke(app, ["submit", "--help"], env={"COLUMNS": "200"}).output)
    assert "Who submits [default: $USER]." in submit
    assert "[default: $PLANLOCK_JOURNAL or ./planlock.db]" in submit
    assert "[default: $PLANLOCK_WEBHOOK_URL]" in submit
    serve = flat(runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output)
    assert "[default: goals are refused]" in serve
    worker = flat(runner.invoke(app, ["worker", "--help"], env={"COLUMNS": "200"}).output)
    assert "[default: host:pid]" in worker


def test_install_hint_keeps_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if planlock[server] were missing
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("")
    result = runner.invoke(app, ["serve", "--tools", TOOLS, "--tokens", str(tokens)])
    assert result.exit_code == 2
    assert "pip install 'planlock[server]'" in flat(result.output)


# --- output: text is printed as written ----------------------------------------------------------

MARKUP_TOOLS = """
from planlock import ToolRegistry

registry = ToolRegistry()


@registry.tool(effect="write")
def shout(text: str) -> str:
    return "[bold]" + text + "[/]"


@registry.tool(effect="read")
def explode(text: str) -> str:
    raise ValueError("no such [red]account[/red] [/] " + text)
"""


@pytest.fixture
def markup_tools(tmp_path: Path) -> str:
    path = tmp_path / "markup_tools.py"
    path.write_text(MARKUP_TOOLS)
    return f"{path}:registry"


def plan_file(tmp_path: Path, *steps: dict[str, Any]) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"goal": "say [bold]hi[/] [/]", "steps": list(steps)}))
    return str(path)


def test_tool_output_and_goal_with_markup_print_literally(
    tmp_path: Path, markup_tools: str
) -> None:
    plan = plan_file(tmp_path, {"id": "s1", "tool": "shout", "args": {"text": "[/]"}})
    db = str(tmp_path / "j.db")
    result = runner.invoke(
        app,
        ["run", plan, "--tools", markup_tools, "--approve", "all", "--journal", db],
        env={"COLUMNS": "200", "USER": "[bold]ops[/]"},
    )
    assert result.exit_code == 0, result.output
    assert "[bold][/][/]" in result.output  # the tool's output, brackets and all
    assert "say [bold]hi[/] [/]" in result.output  # the goal, in the plan's title
    assert "approved by [bold]ops[/] via" in result.output  # a name, in a progress line


def test_a_failed_steps_message_is_shown_as_written(tmp_path: Path, markup_tools: str) -> None:
    plan = plan_file(tmp_path, {"id": "s1", "tool": "explode", "args": {"text": "[bold]x"}})
    db = str(tmp_path / "j.db")
    result = runner.invoke(
        app,
        ["run", plan, "--tools", markup_tools, "--approve", "auto", "--journal", db],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 4
    shown = flat(result.output)
    message = "no such [red]account[/red] [/] [bold]x"
    assert f"step s1 failed: tool_error: {message}" in shown  # the progress line (stderr)
    assert f"step s1 failed: {message}" in shown  # under the result table (stdout)


def test_ask_shows_a_failed_steps_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plan = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "nobody"}}]}
    monkeypatch.setattr("planlock.cli._plan.load_model", lambda spec=None: ScriptedLLM([plan]))
    result = runner.invoke(
        app,
        [
            *["ask", "Look up nobody", "--tools", TOOLS, "--max-replans", "0"],
            *["--journal", str(tmp_path / "j.db")],
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 4
    shown = flat(result.output)
    assert "step 1 failed: tool_error: 'nobody'" in shown  # progress: the KeyError's message
    assert "step 1 failed: 'nobody'" in shown  # under the result table


def test_error_messages_with_markup_print_literally(tmp_path: Path) -> None:
    plan = plan_file(tmp_path, {"id": "s1", "tool": "shout", "args": {"text": "x"}})
    result = runner.invoke(app, ["validate", plan, "--tools", "no/such[/]dir/t.py:registry"])
    assert result.exit_code == 2
    assert "error: no such file: no/such[/]dir/t.py" in result.output
    bad = runner.invoke(app, ["run", plan, "--tools", TOOLS, "--input", "[bold]=1"])
    assert bad.exit_code == 2
    assert "--input takes NAME=JSON, got '[bold]=1'" in bad.output


def test_a_model_name_with_markup_does_not_break_planning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "A-1001"}}]}
    llm = ScriptedLLM([plan], name="evil[/]model")
    monkeypatch.setattr("planlock.cli._plan.load_model", lambda spec=None: llm)
    result = runner.invoke(app, ["plan", "Look up [/] A-1001", "--tools", TOOLS])
    assert result.exit_code == 0, result.output
    assert "Look up [/] A-1001" in result.output


def test_queue_worker_shows_a_failed_steps_message(tmp_path: Path, markup_tools: str) -> None:
    plan = plan_file(tmp_path, {"id": "s1", "tool": "explode", "args": {"text": "q"}})
    db = str(tmp_path / "j.db")
    submitted = runner.invoke(app, ["submit", plan, "--tools", markup_tools, "--journal", db])
    assert submitted.exit_code == 0, submitted.output
    worked = runner.invoke(
        app,
        ["worker", "--tools", markup_tools, "--journal", db, "--once"],
        env={"COLUMNS": "250"},
    )
    assert worked.exit_code == 0, worked.output
    assert "step s1 failed: tool_error: no such [red]account[/red] [/] q" in flat(worked.output)


# --- one name for trusted inputs ------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--input", "-i", "--context", "-c"])
def test_every_command_takes_input_and_its_context_alias(option: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(demo.PLAN))
    given = [a for k, v in demo.INPUTS.items() for a in (option, f"{k}={json.dumps(v)}")]
    for command in ("validate", "assess"):
        result = runner.invoke(app, [command, str(path), "--tools", TOOLS, *given])
        assert result.exit_code == 0, (command, result.output)
        # the option is read: with one input missing, the plan names an input nobody gave
        short = runner.invoke(app, [command, str(path), "--tools", TOOLS, *given[:-2]])
        assert short.exit_code == 1, (command, short.output)
    for argv in (["run"], ["ask"], ["plan"], ["submit"], ["durable", "submit"]):
        shown = flat(runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "200"}).output)
        assert "--input,--context -i,-c NAME=JSON" in shown, argv


def test_ask_takes_input_like_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plan = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "{{user.id}}"}}]}
    monkeypatch.setattr("planlock.cli._plan.load_model", lambda spec=None: ScriptedLLM([plan]))
    result = runner.invoke(
        app,
        [
            *["ask", "Look me up", "--tools", TOOLS, "--input", 'user={"id": "A-1001"}'],
            *["--journal", str(tmp_path / "j.db"), "--approve", "auto", "--json"],
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["1"]["name"] == "Dana Reyes"


# --- logging -------------------------------------------------------------------------------------


def test_verbose_logs_what_planlock_does_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(demo.PLAN))
    db = tmp_path / "j.db"
    given = [a for k, v in demo.INPUTS.items() for a in ("--input", f"{k}={json.dumps(v)}")]
    argv = ["run", str(path), "--tools", TOOLS, "--journal", str(db), "--approve", "all", *given]
    quiet = runner.invoke(app, argv)
    assert "INFO" not in quiet.stderr
    assert "DEBUG" not in quiet.stderr
    verbose = runner.invoke(app, ["-v", *argv])
    assert "INFO planlock.tools: tools: 5 from planlock.demo:registry" in verbose.stderr
    assert f"INFO planlock.journal: journal: {db}" in verbose.stderr
    assert re.search(r"INFO planlock.journal: run \S+ #\d+ run_started", verbose.stderr)
    assert "DEBUG" not in verbose.stderr
    assert "INFO" not in verbose.stdout  # logs go to stderr only
    debug = runner.invoke(app, ["-vv", *argv])
    assert re.search(r"DEBUG planlock.journal: run \S+ #\d+ plan_validated", debug.stderr)
    silenced = runner.invoke(app, ["-q", "-v", *argv])
    assert "INFO" not in silenced.stderr
    # each invocation undoes its logging set-up: only the library's NullHandler is left
    assert [type(h) for h in logging.getLogger("planlock").handlers] == [logging.NullHandler]


def test_library_code_never_prints() -> None:
    """Only the front ends (cli/, bench/) print; the library logs (the ``planlock`` logger)."""
    import ast

    offenders = []
    for path in sorted((SRC / "planlock").rglob("*.py")):
        rel = path.relative_to(SRC / "planlock").as_posix()
        if rel.startswith(("cli/", "bench/")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [
            f"{rel}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
        ]
    assert not offenders, offenders
    assert len(list((SRC / "planlock").rglob("*.py"))) > 50  # the walk saw the package
