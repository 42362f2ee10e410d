"""docs/agentdojo-results.md's recipe for a planner behind an API key (``openai:MODEL``), run
through the CLI against an OpenAI-compatible HTTP server on 127.0.0.1.

The test needs *a* plan for its task, not a new one: the server replays the embedded model's
answer to this exact request (the HTTP body, keyed by a hash of the request's path and JSON),
recorded from llama.cpp's own OpenAI-compatible server with the model writing the plan. So the
recipe's whole path runs (the ``openai:MODEL@URL`` spec, the key from the environment, the
OpenAI SDK on the wire, validation, the plan record, the priced planner row) in the fast tier,
without the ~900 prompt tokens the model would read (about 45 s of CPU on 2 cores, the largest
single cost of the model tier). A change to the request (the planner's prompt, its schema, the
suite's tools) fails here until it is recorded again (this loads the model; a few minutes):
``PLANLOCK_RECORD_PLANS=1 pytest tests/test_agentdojo_openai_recipe.py``.
The OpenAI backend against llama.cpp's live server is ``test_local_model.py``'s
``test_the_openai_backend_runs_a_step_through_llama_cpps_server``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import model_identity
from test_backends import StubServer
from typer.testing import CliRunner

from planlock.cli import app

RECORDED = Path(__file__).resolve().parent / "data" / "openai-recipe.json"
"""The recorded exchanges: ``{"identity": model_identity(), "exchanges": {key: {"status",
"body"}}}``; recorded under another model or runtime, they are not used."""

RECORDING = os.environ.get("PLANLOCK_RECORD_PLANS") == "1"


def exchange_key(path: str, body: dict[str, Any]) -> str:
    """The request's path and JSON body, whitespace and key order aside."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


def load_exchanges(identity: str) -> dict[str, dict[str, Any]]:
    if not RECORDED.exists():
        return {}
    data = json.loads(RECORDED.read_text())
    return dict(data["exchanges"]) if data["identity"] == identity else {}


class ReplayServer(StubServer):
    """Answers a POST with the recorded exchange for its key; a request with no recording is
    forwarded to ``upstream`` (and recorded) if there is one, else answered 500 naming it.
    Requests must carry ``Authorization: Bearer <api_key>``, as a real server would check."""

    def __init__(
        self, exchanges: dict[str, dict[str, Any]], api_key: str, upstream: str | None = None
    ) -> None:
        super().__init__(self.answer)
        self.exchanges, self.api_key, self.upstream = exchanges, api_key, upstream
        self.used: set[str] = set()
        self.missed: list[str] = []
        self.url = f"{self.url}/v1"

    def answer(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        auth = headers.get("authorization")
        if auth != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}
        key = exchange_key(path, body)
        if key not in self.exchanges:
            if self.upstream is None:
                self.missed.append(key)
                return 500, {"error": {"message": f"no recorded exchange {key}"}}
            root = self.upstream.removesuffix("/v1")
            got = httpx.post(root + path, json=body, headers={"authorization": auth}, timeout=None)
            self.exchanges[key] = {"status": got.status_code, "body": got.json()}
        self.used.add(key)
        recorded = self.exchanges[key]
        return int(recorded["status"]), recorded["body"]


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    """The recorded exchanges; with ``PLANLOCK_RECORD_PLANS=1``, the embedded model's llama.cpp
    server behind them, and the exchanges used written back (only those)."""
    identity = model_identity()
    if not RECORDING:
        with ReplayServer(load_exchanges(identity), "sk-recorded") as server:
            yield server
        return
    from planlock import LocalLLM
    from planlock.llm._models import load_model

    llm = load_model("local")
    assert isinstance(llm, LocalLLM)
    try:
        with ReplayServer({}, llm.api_key, upstream=llm.base_url) as server:
            yield server
    finally:
        llm.close()
    kept = {k: server.exchanges[k] for k in sorted(server.used)}
    body = {"identity": identity, "exchanges": kept}
    RECORDED.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


def test_the_frontier_recipe_plans_agentdojo_through_an_openai_compatible_server(
    replay: ReplayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planlock.bench.agentdojo import load_suite

    monkeypatch.setenv("OPENAI_API_KEY", replay.api_key)
    args = ["bench", "agentdojo", "--planner", f"openai:qwen@{replay.url}", "-s", "slack"]
    # One attempt: the recipe's path is under test, not the small model's repairs. Slack's
    # tool list is the shortest prompt (~1,600 tokens), user_task_0 ("Read the content on
    # webpage ...") one of its shortest plans (what recording costs).
    args += ["-o", str(tmp_path), "--user-task", "user_task_0", "--plan-only"]
    args += ["--price", "2", "8", "--max-attempts", "1"]
    result = CliRunner().invoke(app, args)
    assert not replay.missed, (
        "the recipe's request changed: "
        "PLANLOCK_RECORD_PLANS=1 pytest tests/test_agentdojo_openai_recipe.py"
    )
    assert result.exit_code == 0, result.output
    assert len(replay.used) == 1
    (row,) = json.loads((tmp_path / "agentdojo.json").read_text())["planner"]
    assert row["tasks"] == 1
    assert row["input_tokens"] > 1000, "the suite's tools were in the prompt"
    assert row["cost_usd"] == round((2 * row["input_tokens"] + 8 * row["output_tokens"]) / 1e6, 4)
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "plans").glob("*.json")]
    assert record["outcome"] in ("plan", "cannot_plan", "invalid"), record["detail"]
    if record["valid"]:  # a plan over the suite's own tools (which ones is the model's call)
        tools = {s["tool"] for s in record["plan"]["steps"]}
        assert tools
        assert tools <= {*(f.name for f in load_suite("slack").tools), "llm"}, tools


def test_the_replay_server_checks_the_key_and_names_a_request_it_has_not_recorded() -> None:
    body = b'{"model": "qwen", "messages": []}'
    key = exchange_key("/v1/chat/completions", json.loads(body))
    recorded = {key: {"status": 200, "body": {"ok": True}}}
    with ReplayServer(recorded, "sk-a") as server:

        def post(raw: bytes, api_key: str = "sk-a") -> httpx.Response:
            auth = {"authorization": f"Bearer {api_key}"}
            return httpx.post(f"{server.url}/chat/completions", content=raw, headers=auth)

        assert post(b'{"messages":[],  "model":"qwen"}').json() == {"ok": True}  # same JSON
        assert post(body, api_key="x").status_code == 401
        assert post(b'{"model": "x"}').status_code == 500
    assert server.used == {key}
    assert server.missed == [exchange_key("/v1/chat/completions", {"model": "x"})]
