"""The README's examples run: Python blocks in one namespace, console sessions through the CLI."""

from __future__ import annotations

import re
import shlex
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


def test_readme_python_examples_run() -> None:
    python = blocks("python")
    assert len(python) >= 4
    namespace: dict[str, object] = {"__name__": "readme"}
    for code in python:
        exec(compile(code, "README.md", "exec"), namespace)


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
