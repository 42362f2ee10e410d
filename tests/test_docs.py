"""The README's examples run: each Python block alone, console sessions through the CLI."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fork_command, forkserver
from typer.testing import CliRunner

from planlock import demo
from planlock.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.DOTALL)


@pytest.fixture(autouse=True)
def fresh_desk() -> Iterator[None]:
    demo.desk.reset()
    yield
    demo.desk.reset()


def python_blocks() -> list[tuple[int, str]]:
    """Each ```python block of the README with the line its code starts on."""
    return [
        (README.count("\n", 0, m.start(1)) + 1, m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", README, flags=re.DOTALL)
    ]


def test_readme_has_its_python_examples() -> None:
    assert len(python_blocks()) >= 15


def _alone_env() -> dict[str, str]:
    """A reader's environment: none of the suite's settings, planlock importable from ``src``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANLOCK_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def imported_planlock() -> Iterator[Path]:
    """A fork server that has imported ``planlock`` (one per module and test process), in the
    reader's environment: every block imports planlock first, so a block forked from it starts
    where a fresh interpreter would be after that import, without its 0.5 s of CPU."""
    with forkserver("planlock", env=_alone_env()) as sock:
        yield sock


def run_forked(sock: Path, folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` as ``folder/example.py``, run there as ``python example.py`` would run it,
    forked from the fork server at ``sock``."""
    (folder / "example.py").write_text(code)
    return subprocess.run(
        fork_command(sock, "example.py"),
        check=False,
        cwd=folder,
        env=_alone_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "code", [code for _, code in python_blocks()], ids=[f"line{n}" for n, _ in python_blocks()]
)
def test_readme_python_example_runs_alone(
    code: str, tmp_path: Path, imported_planlock: Path
) -> None:
    """A reader copies one block into a file and runs it: a process of its own, with nothing
    from the others (each forked from the same fork server, which ran none of them)."""
    assert re.search(r"^(from|import) planlock\b", code, flags=re.MULTILINE), (
        "a block imports planlock"
    )
    done = run_forked(imported_planlock, tmp_path, code)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_forked_block_starts_from_nothing_of_the_others(
    tmp_path: Path, imported_planlock: Path
) -> None:
    """What the fork server has imported is not in a block's names, a block's failure is its
    exit status, and a module one block imports is not imported for the next."""

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return run_forked(imported_planlock, tmp_path, code)

    unimported = run("print(planlock.__name__)\n")
    assert unimported.returncode == 1
    assert "NameError: name 'planlock' is not defined" in unimported.stderr
    assert run("import sys\nsys.exit(3)\n").returncode == 3
    first = run("import sys\nimport planlock.testing\nprint('planlock.testing' in sys.modules)\n")
    second = run("import sys\nimport planlock\nprint('planlock.testing' in sys.modules)\n")
    assert (first.stdout, second.stdout) == ("True\n", "False\n")


def test_readme_console_sessions_match_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "seed_plan.json").write_text(
        (ROOT / "examples" / "seed_plan.json").read_text()
    )
    runner = CliRunner()
    sessions = [b for b in blocks("console") if "$ planlock" in b]
    assert sessions
    checked = 0
    for session in sessions:
        lines = session.strip().splitlines()
        i = 0
        while i < len(lines):
            command = lines[i]
            assert command.startswith("$ planlock "), command
            expected = []
            i += 1
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            result = runner.invoke(app, shlex.split(command[len("$ planlock ") :]))
            shown = [ln.strip() for ln in result.output.splitlines()]
            for want in expected:
                if want != "...":
                    assert want.strip() in shown, (
                        f"{command!r} did not print {want!r}:\n{result.output}"
                    )
                    checked += 1
    assert checked >= 3


def test_readme_documents_every_event_kind_and_exit_code() -> None:
    from planlock import EVENT_KINDS

    for kind in EVENT_KINDS:
        assert f"`{kind}`" in README, kind
    for code in range(5):
        assert f"**{code}**" in README


def test_the_testing_guide_names_every_marker_and_crash_setting() -> None:
    """docs/testing.md's table of tiers is pyproject's list of markers, and the settings it names
    for the crash suites are the ones the suites read."""
    guide = (ROOT / "docs" / "testing.md").read_text()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {m.split(":")[0] for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    tabled = set(re.findall(r"^\| `(\w+)` \|", guide, flags=re.MULTILINE))
    assert tabled == declared
    named = set(re.findall(r"`(PLANLOCK_\w+_KILLS)`", guide))
    assert len(named) == 3
    read = {
        v
        for f in ROOT.glob("tests/test_*crash*.py")
        for v in re.findall(r'environ\.get\("(PLANLOCK_\w+_KILLS)"', f.read_text())
    }
    assert named == read
    assert "docs/testing.md" in README
