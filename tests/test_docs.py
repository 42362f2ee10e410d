"""The README's examples run: each Python block alone, console sessions through the CLI."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
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


@pytest.mark.parametrize(
    "code", [code for _, code in python_blocks()], ids=[f"line{n}" for n, _ in python_blocks()]
)
def test_readme_python_example_runs_alone(code: str, tmp_path: Path) -> None:
    """A reader copies one block: it runs in a fresh interpreter, with nothing from the others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANLOCK_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


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
