"""MCP tools against a real MCP server (tests/data/mcp_notes_server.py, the official SDK),
started as a subprocess over stdio and over streamable HTTP on 127.0.0.1: pins, rug pulls,
undeclared effects and lying annotations.

Each load and each run starts the server (the calls of a run share it), so these tests are
``slow``. Over stdio, a server is started by ``tests/data/fork_launch.py`` and forked from
``tests/data/forkserver.py``, which has imported the SDK once: still a process of its own per
start, on the pipes planlock opened, without the 1.7 s of CPU a new interpreter pays for the
imports. The README's example and the HTTP tests start the server with a new interpreter.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from conftest import FORKSERVER, fork_command
from conftest import forkserver as fork_server
from typer.testing import CliRunner

from planlock import Journal, Plan, Policy, approve_all, run_sync
from planlock.cli import _app as cli_app
from planlock.cli import app
from planlock.errors import ApprovalRequired, ToolPinMismatch, ToolsNotFound
from planlock.testing import memory_journal
from planlock.tools import McpToolset, load_toolset, mcp_tools

pytestmark = pytest.mark.slow

SERVER = Path(__file__).parent / "data" / "mcp_notes_server.py"
runner = CliRunner()

DECLARED = """
[servers.notes.tools.read_note]
effect = "read"
idempotent = true

[servers.notes.tools.add]
effect = "read"

[servers.notes.tools.fail_always]
effect = "read"
"""


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "hello.txt").write_text("hi there")
    return folder


@pytest.fixture(scope="module")
def forkserver() -> Iterator[Path]:
    """The socket of a fork server that has imported the MCP SDK (one per module and process)."""
    with fork_server("anyio", "mcp.server.mcpserver", "mcp.server.stdio", "mcp.types") as sock:
        yield sock


@pytest.fixture
def stdio_file(tmp_path: Path, notes: Path, forkserver: Path) -> Callable[..., Path]:
    """Writes ``tools.toml`` for the notes server over stdio (plus ``extra``); its path."""

    def write(extra: str = "") -> Path:
        path = tmp_path / "tools.toml"
        command, *args = fork_command(forkserver, SERVER)
        path.write_text(
            "[servers.notes]\n"
            f"command = {json.dumps(command)}\n"
            f"args = {json.dumps(args)}\n"
            f"env = {{ NOTES_DIR = {json.dumps(str(notes))} }}\n" + DECLARED + extra
        )
        return path

    return write


def http_file(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(f"[servers.notes]\nurl = {json.dumps(url)}\n" + DECLARED + extra)
    return path


def calls(notes: Path) -> list[str]:
    log = notes / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def plan(*steps: dict[str, object]) -> Plan:
    return Plan.parse(json.dumps(list(steps)))


# --- stdio --------------------------------------------------------------------------------------


def test_unpinned_tools_are_refused_and_listing_shows_the_untrusted_hints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdio_file: Callable[..., Path]
) -> None:
    tools = stdio_file()
    with pytest.raises(ToolPinMismatch) as info:
        mcp_tools(tools)
    assert {name for name, _ in info.value.problems} == {
        "read_note",
        "add",
        "fail_always",
        "delete_note",
    }
    assert "--pin" in str(info.value)

    # The review step works without pins: it shows the server's hints and each pin's status.
    listed = runner.invoke(app, ["tools", "--tools", str(tools), "--json"])
    assert listed.exit_code == 0, listed.output
    by_name = {t["name"]: t for t in json.loads(listed.stdout)}
    assert by_name["delete_note"]["effect"] == "undeclared"
    assert by_name["delete_note"]["origin"]["annotations"] == {"readOnlyHint": True}
    assert by_name["delete_note"]["pin"] == "unpinned"
    assert by_name["read_note"]["effect"] == "read"
    monkeypatch.setattr(cli_app.out, "width", 200)
    table = runner.invoke(app, ["tools", "--tools", str(tools)])
    assert table.exit_code == 0
    row = next(ln for ln in table.output.splitlines() if "delete_note" in ln)
    assert "undeclared" in row
    assert "readOnly" in row
    assert "unpinned" in row

    # And a run refuses before anything starts: exit 1, naming the tool.
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps([{"step": 1, "tool": "add", "args": {"a": 1}}]))
    ran = runner.invoke(
        app, ["run", str(plan_file), "--tools", str(tools), "--journal", str(tmp_path / "j.db")]
    )
    assert ran.exit_code == 1, ran.output
    assert "add: not pinned (notes/add)" in ran.output
    assert not (tmp_path / "j.db").exists() or Journal.open(tmp_path / "j.db").runs() == []


def test_pin_then_run_records_the_definition_and_the_hints_in_the_journal(
    tmp_path: Path, stdio_file: Callable[..., Path]
) -> None:
    tools = stdio_file()
    pinned = runner.invoke(app, ["tools", "--tools", str(tools), "--pin"])
    assert pinned.exit_code == 0, pinned.output
    lock = json.loads((tmp_path / "tools.toml.lock").read_text())
    assert set(lock["pins"]) == {
        "notes/read_note",
        "notes/add",
        "notes/fail_always",
        "notes/delete_note",
    }
    assert len(lock["pins"]["notes/add"]["sha256"]) == 64

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            [
                {"step": "r", "tool": "read_note", "args": {"name": "hello"}},
                {"step": "s", "tool": "add", "args": {"a": 40}},
            ]
        )
    )
    db = tmp_path / "j.db"
    ran = runner.invoke(
        app,
        ["run", str(plan_file), "--tools", str(tools), "--journal", str(db), "--approve", "auto"],
    )
    assert ran.exit_code == 0, ran.output
    events = Journal.open(db).events()
    finished = {e.data["step"]: e.data for e in events if e.kind == "step_finished"}
    assert finished["r"]["output"] == {"result": "hi there"}  # the structured content
    assert finished["s"]["output"] == {"result": 42}
    validated = next(e for e in events if e.kind == "plan_validated")
    origin = validated.data["tools"]["read_note"]
    assert origin["kind"] == "mcp"
    assert origin["sha256"] == lock["pins"]["notes/read_note"]["sha256"]
    assert origin["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
    assert origin["definition"]["description"] == "Read a note."
    assert "delete_note" not in validated.data["tools"]  # only the tools the plan uses


def starts(notes: Path) -> int:
    log = notes / "starts.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_the_calls_of_one_run_share_one_server_and_two_runs_do_not(
    notes: Path, stdio_file: Callable[..., Path]
) -> None:
    tools = stdio_file()
    load_toolset(tools).pin()
    registry = mcp_tools(tools)  # loading lists the tools on a server of its own
    three = plan(
        {"step": 1, "tool": "read_note", "args": {"name": "hello"}},
        {"step": 2, "tool": "add", "args": {"a": 40}},
        {"step": 3, "tool": "read_note", "args": {"name": "{{steps.1.output.result}}"}},
    )
    before = starts(notes)
    first = run_sync(three, registry, approver=approve_all(), journal=memory_journal())
    assert first.ok, first.error
    assert first.outputs["2"] == {"result": 42}
    assert starts(notes) == before + 1  # three calls (each listing the tools first), one server
    second = run_sync(three, registry, approver=approve_all(), journal=memory_journal())
    assert second.ok, second.error
    assert starts(notes) == before + 2  # a run of its own, a server of its own
    pids = (notes / "starts.log").read_text().split()
    assert len(set(pids)) == len(pids)  # a process of its own per start
    for pid in pids:  # every server stopped with its run (a live pid may be another's: reused)
        proc = Path(f"/proc/{pid}")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            status = (proc / "status").read_text().lower()
            cmdline = (proc / "cmdline").read_bytes()  # a forked server's is the fork server's
            assert "zombie" in status or FORKSERVER.name.encode() not in cmdline, pid


def test_a_server_claiming_read_only_on_a_destructive_tool_gets_no_auto_approval(
    notes: Path, stdio_file: Callable[..., Path]
) -> None:
    tools = stdio_file()  # delete_note: readOnlyHint=true, no declared effect
    load_toolset(tools).pin()
    registry = mcp_tools(tools)
    assert registry["delete_note"].effect == "undeclared"
    assert registry["delete_note"].sensitive == frozenset({"name"})
    # Even a policy that allows everything it can lets no undeclared tool run unasked.
    permissive = Policy.from_data(
        {
            "effects": dict.fromkeys(("read", "write", "delete", "send", "pay"), "allow"),
            "untrusted_to_sensitive": "allow",
            "rules": [{"tool": "delete_note", "action": "allow"}],
        },
        registry,
    )
    deletion = plan({"step": 1, "tool": "delete_note", "args": {"name": "hello"}})
    with pytest.raises(ApprovalRequired):
        run_sync(deletion, registry, journal=memory_journal(), policy=permissive)
    assert calls(notes) == []
    assert (notes / "hello.txt").exists()
    # Declared as a delete: still a person's decision under the default policy.
    declared = stdio_file('\n[servers.notes.tools.delete_note]\neffect = "delete"\n')
    with pytest.raises(ApprovalRequired):
        run_sync(deletion, mcp_tools(declared), journal=memory_journal())
    assert calls(notes) == []
    # A person approves: it runs, through the same executor.
    result = run_sync(
        deletion, mcp_tools(declared), journal=memory_journal(), approver=approve_all()
    )
    assert result.ok, result.error
    assert calls(notes) == ["delete_note hello"]


def test_rug_pull_after_pinning_is_refused_before_anything_runs(
    tmp_path: Path, notes: Path, stdio_file: Callable[..., Path]
) -> None:
    tools = stdio_file()
    assert runner.invoke(app, ["tools", "--tools", str(tools), "--pin"]).exit_code == 0
    (notes / "variant").write_text("rugpull")  # the server now describes delete_note otherwise
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps([{"step": 1, "tool": "read_note", "args": {"name": "x"}}]))
    db = tmp_path / "j.db"
    ran = runner.invoke(
        app,
        ["run", str(plan_file), "--tools", str(tools), "--journal", str(db), "--approve", "all"],
    )
    assert ran.exit_code == 1, ran.output
    assert "delete_note" in ran.output
    assert "description, inputSchema changed since it was pinned" in ran.output
    assert calls(notes) == []
    assert not db.exists() or Journal.open(db).runs() == []
    # validate refuses too (the same loader), and re-pinning is the person's explicit act.
    assert runner.invoke(app, ["validate", str(plan_file), "--tools", str(tools)]).exit_code == 1
    assert runner.invoke(app, ["tools", "--tools", str(tools), "--pin"]).exit_code == 0
    assert "delete_note" in mcp_tools(tools)


def test_rug_pull_between_loading_and_the_call_is_refused_at_the_call(
    notes: Path, stdio_file: Callable[..., Path]
) -> None:
    tools = stdio_file('\n[servers.notes.tools.delete_note]\neffect = "delete"\n')
    load_toolset(tools).pin()
    registry = mcp_tools(tools)  # pinned and matching now
    (notes / "variant").write_text("rugpull")  # the server changes before the call
    deletion = plan({"step": 1, "tool": "delete_note", "args": {"name": "hello"}})
    result = run_sync(deletion, registry, journal=memory_journal(), approver=approve_all())
    assert not result.ok
    assert "description, inputSchema changed since it was pinned" in (result.error or "")
    assert calls(notes) == []
    assert (notes / "hello.txt").exists()


def test_a_tool_error_fails_the_step_and_outputs_are_untrusted(
    stdio_file: Callable[..., Path],
) -> None:
    tools = stdio_file()
    load_toolset(tools).pin()
    registry = mcp_tools(tools)
    assert registry["read_note"].trusted_output is False
    assert registry["read_note"].trusted_paths == ()
    result = run_sync(
        plan({"step": 1, "tool": "fail_always", "args": {"reason": "no"}}),
        registry,
        journal=memory_journal(),
    )
    assert result.status == "failed"
    assert "refused: no" in (result.error or "")


def test_declaring_a_tool_the_server_does_not_offer_is_an_error(
    stdio_file: Callable[..., Path],
) -> None:
    tools = stdio_file('\n[servers.notes.tools.send_money]\neffect = "pay"\n')
    with pytest.raises(ToolsNotFound, match="offers no tool 'send_money'"):
        mcp_tools(tools)


# --- streamable HTTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(notes: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        env={"NOTES_DIR": str(notes), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the MCP HTTP server did not start")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_streamable_http_pin_run_and_rug_pull(
    tmp_path: Path, notes: Path, http_server: str
) -> None:
    tools = http_file(tmp_path, http_server)
    toolset = anyio.run(McpToolset.load, tools)
    assert {t.status for t in toolset.tools} == {"unpinned"}
    assert next(t for t in toolset.tools if t.mcp_name == "delete_note").annotations == {
        "readOnlyHint": True
    }
    toolset.pin()
    registry = mcp_tools(tools)
    result = run_sync(
        plan({"step": 1, "tool": "add", "args": {"a": 1, "b": 5}}),
        registry,
        journal=memory_journal(),
    )
    assert result.ok, result.error
    assert result.outputs["1"] == {"result": 6}
    # The same server name, now answering with other definitions (a new server behind the URL).
    (notes / "variant").write_text("rugpull")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        env={"NOTES_DIR": str(notes), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        tools = http_file(tmp_path, f"http://127.0.0.1:{port}/mcp")
        with pytest.raises(ToolPinMismatch) as info:
            mcp_tools(tools)
        assert [name for name, _ in info.value.problems] == ["delete_note"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert calls(notes) == []


# --- the README's example -----------------------------------------------------------------------


def test_readme_mcp_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shlex

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"```shell\n(planlock tools --tools examples/mcp.*?)```", readme, re.DOTALL)
    assert block is not None
    shutil.copytree(root / "examples" / "mcp", tmp_path / "examples" / "mcp")
    toml = tmp_path / "examples" / "mcp" / "tools.toml"
    toml.write_text(toml.read_text().replace('"python"', json.dumps(sys.executable)))
    monkeypatch.chdir(tmp_path)
    commands = [ln.split("#")[0].strip() for ln in block.group(1).strip().splitlines()]
    # Before the pin, the run is refused; after it, the read runs without asking anyone.
    refused = runner.invoke(app, shlex.split(commands[2])[1:])
    assert refused.exit_code == 1, refused.output
    for command in commands:
        result = runner.invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, f"{command}\n{result.output}"
    assert "Hello from a note." in result.output
    listed = json.loads(
        runner.invoke(app, ["tools", "--tools", "examples/mcp/tools.toml", "--json"]).stdout
    )
    assert {t["name"]: (t["effect"], t["pin"]) for t in listed} == {
        "read_note": ("read", "pinned"),
        "delete_note": ("undeclared", "pinned"),
    }
