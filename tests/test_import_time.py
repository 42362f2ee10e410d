"""``import planlock`` and ``planlock --help`` stay light: heavy optional dependencies are imported
only when the feature that needs them runs (benchmarks/import_time.py measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import planlock

SRC = Path(planlock.__file__).resolve().parents[1]
HEAVY = (
    "fastapi",  # planlock serve
    "uvicorn",
    "starlette",
    "httpx",  # webhooks
    "openai",  # --model openai:...
    "anthropic",
    "xllamacpp",  # the local model
    "llama_cpp",
    "dbos",  # --engine dbos
    "psycopg",  # postgresql:// journals
    "agentdojo",  # planlock bench
    "pydantic_ai",
    "jsonschema",  # validation, on first use
    "yaml",  # YAML policies
    "asyncio",  # run_sync, on first use (anyio imports it when a run starts)
)


def imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    modules = json.loads(done.stdout.splitlines()[-1])
    assert "planlock" in modules
    return [m for m in modules if m.split(".")[0] in HEAVY]


@pytest.mark.parametrize(
    "code",
    [
        "import planlock",
        "import planlock.cli",  # what `planlock --help` imports
        (
            "import sys; from planlock.cli import main; sys.argv[1:] = ['--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass"
        ),
    ],
    ids=["import planlock", "import planlock.cli", "planlock --help"],
)
def test_heavy_dependencies_are_not_imported_up_front(code: str) -> None:
    assert imported_after(code) == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: a webhook notification imports httpx."""
    code = (
        "from planlock.queue._notify import WebhookNotifier\n"
        "try:\n    WebhookNotifier('http://127.0.0.1:9/', timeout=0.01).notify({})\n"
        "except Exception:\n    pass"
    )
    assert "httpx" in imported_after(code)
