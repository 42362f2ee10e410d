"""``@registry.tool`` keeps the decorated function's type for type checkers (mypy, run here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

import planlock

SRC = Path(planlock.__file__).resolve().parents[1]

SNIPPET = """
from planlock.tools import ToolRegistry

registry = ToolRegistry()


@registry.tool
def add(a: int, b: int = 0) -> int:
    return a + b


@registry.tool(effect="send", sensitive=["to"])
async def send(to: str, *, body: str) -> bool:
    return True


reveal_type(add)
reveal_type(send)
total: int = add(1, 2)
add("two")
pending = send("x", body=3)
"""

# Only planlock.tools is analysed (everything it imports is skipped), so this takes seconds,
# not the minute a whole-project check takes.
CONFIG = """
[mypy]
strict = True
incremental = False
follow_imports = skip
warn_unused_configs = False

[mypy-planlock.tools,planlock.tools._registry]
follow_imports = silent
"""


def test_decorated_tools_keep_their_signatures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET)
    (tmp_path / "mypy.ini").write_text(CONFIG)
    monkeypatch.setenv("MYPYPATH", str(SRC))  # this checkout's planlock, not an installed one
    monkeypatch.chdir(tmp_path)
    stdout, stderr, _ = api.run(["--config-file", "mypy.ini", "snippet.py"])
    assert stderr == ""
    lines = stdout.splitlines()
    assert 'snippet.py:17: note: Revealed type is "def (a: int, b: int =) -> int"' in lines
    assert (
        'snippet.py:18: note: Revealed type is "def (to: str, *, body: str) -> '
        'typing.Coroutine[Any, Any, bool]"'
    ) in lines
    errors = [line for line in lines if ": error:" in line]
    assert [e.split(":")[1] for e in errors] == ["20", "21"], stdout  # the wrong calls only
    assert 'Argument 1 to "add" has incompatible type "str"; expected "int"' in errors[0]
    assert 'Argument "body" to "send" has incompatible type "int"; expected "str"' in errors[1]
