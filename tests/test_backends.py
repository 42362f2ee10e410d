"""Model selection, and the OpenAI and Anthropic backends against real local HTTP servers.

The servers here are small stdlib HTTP servers on 127.0.0.1 speaking each API's wire format:
canned Chat Completions replies for OpenAI (the real llama.cpp server is used in
test_local_model.py), and recorded Messages API exchanges replayed for Anthropic. Nothing here
leaves the machine: pytest-socket allows loopback only.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import anyio
import pytest

import planlock
from planlock import (
    AnthropicLLM,
    CannotPlan,
    LLMError,
    LLMRequest,
    LocalLLM,
    Message,
    OpenAILLM,
    Planner,
    ToolRegistry,
    UsageError,
    load_model,
)
from planlock.llm._models import parse_model_spec
from planlock.testing import capture_journal

EXCHANGES = json.loads((Path(__file__).parent / "data" / "anthropic_exchanges.json").read_text())[
    "exchanges"
]
KEY = "sk-test-key"
GOAL = "Look up account A-1 and email them the welcome template."
CONTEXT = {"user": {"account_id": "A-1"}}

Handler = Callable[[str, dict[str, str], dict[str, Any]], tuple[int, dict[str, Any]]]


class StubServer:
    """An HTTP server on 127.0.0.1 that answers POSTs with ``handler`` and keeps every request."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        stub = self

        class _H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                stub.requests.append((self.path, headers, body))
                status, payload = handler(self.path, headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, per test
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(llm: Any, schema: dict[str, Any] | None = None) -> planlock.LLMReply:
    request = LLMRequest(
        (Message("system", "Be brief."), Message("user", "Say hi as JSON.")), "test", schema
    )

    async def go() -> planlock.LLMReply:
        reply: planlock.LLMReply = await llm.complete(request)
        return reply

    return anyio.run(go)


def plan_with(llm: Any, registry: ToolRegistry, goal: str = GOAL, **kw: Any) -> planlock.Plan:
    async def go() -> planlock.Plan:
        return await Planner(llm, registry, **kw).plan(goal, CONTEXT)

    return anyio.run(go)


# --------------------------------------------------------------------------------------------
# Model selection by one string


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("local", ("local", "", None)),
        ("local:/models/x.gguf", ("local", "/models/x.gguf", None)),
        ("openai:gpt-4.1", ("openai", "gpt-4.1", None)),
        (
            "openai:qwen@http://127.0.0.1:8080/v1",
            ("openai", "qwen", "http://127.0.0.1:8080/v1"),
        ),
        ("anthropic:claude-sonnet-4-5", ("anthropic", "claude-sonnet-4-5", None)),
    ],
)
def test_model_specs_parse(spec: str, parsed: tuple[str, str, str | None]) -> None:
    assert parse_model_spec(spec) == parsed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt-4.1", "unknown model"),
        ("openai:", "names no model"),
        ("openai:qwen@127.0.0.1:8080", r"http\(s\) URL"),
    ],
)
def test_bad_model_specs_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_model_spec(spec)


def test_load_model_builds_each_backend_without_contacting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-y")
    openai_llm = load_model("openai:gpt-4.1")
    assert isinstance(openai_llm, OpenAILLM)
    assert openai_llm.name == "openai:gpt-4.1"
    local_server = load_model("openai:qwen@http://127.0.0.1:8080/v1")
    assert local_server.name == "openai:qwen@http://127.0.0.1:8080/v1"
    assert isinstance(load_model("anthropic:claude-sonnet-4-5"), AnthropicLLM)
    local = load_model("local:/nowhere/model.gguf")
    assert isinstance(local, LocalLLM)
    assert local.name == "local:/nowhere/model.gguf"
    assert not local.loaded
    assert load_model("local:/nowhere/model.gguf") is local  # shared per file
    monkeypatch.setenv("PLANLOCK_MODEL", "openai:gpt-4.1-mini")
    assert load_model().name == "openai:gpt-4.1-mini"


def test_missing_api_keys_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMError, match=r"^openai:gpt-4.1: no API key: set OPENAI_API_KEY"):
        load_model("openai:gpt-4.1")
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
        load_model("anthropic:claude-sonnet-4-5")
    # A local OpenAI-compatible server needs no key.
    assert load_model("openai:qwen@http://127.0.0.1:9/v1").name.startswith("openai:qwen@")


def test_a_local_model_file_that_does_not_exist_is_an_error_naming_the_backend() -> None:
    llm = LocalLLM("/nowhere/model.gguf")
    with pytest.raises(LLMError, match=r"^local:/nowhere/model.gguf: no model file"):
        ask(llm)


# --------------------------------------------------------------------------------------------
# OpenAI wire format


def completion(content: str | None, finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen-test",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": 812,
            "completion_tokens": 64,
            "total_tokens": 876,
            "prompt_tokens_details": {"cached_tokens": 800},
        },
    }


PLAN = {
    "steps": [
        {"id": "1", "tool": "fetch_account", "args": {"account_id": "{{user.account_id}}"}},
        {
            "id": "2",
            "tool": "send_email",
            "args": {"to": "{{steps.1.output.email}}", "template": "welcome"},
        },
    ]
}


def openai_handler(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    if headers.get("authorization") != f"Bearer {KEY}":
        error = {"message": "Incorrect API key", "type": "invalid_request_error"}
        return 401, {"error": {**error, "code": "invalid_api_key"}}
    if path != "/v1/chat/completions":
        return 404, {"error": {"message": "not found"}}
    model = body["model"]
    if model == "truncated":
        return 200, completion('{"steps": [', "length")
    if model == "malformed":
        return 200, {"id": "x", "object": "chat.completion", "model": "m", "choices": []}
    if model == "broken":
        return 500, {"error": {"message": "the server fell over"}}
    return 200, completion(json.dumps(PLAN))


@pytest.fixture
def openai_server() -> Iterator[StubServer]:
    with StubServer(openai_handler) as server:
        yield server


def openai_llm(server: StubServer, model: str = "qwen", key: str = KEY) -> OpenAILLM:
    return OpenAILLM(model, base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=10)


def test_openai_backend_plans_through_a_compatible_server(
    openai_server: StubServer, registry: ToolRegistry
) -> None:
    with capture_journal() as journal:
        plan = plan_with(openai_llm(openai_server), registry, journal=journal)
    assert [s.tool for s in plan.steps] == ["fetch_account", "send_email"]
    (path, _, body) = openai_server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "qwen"
    assert body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][1]["content"].startswith(f"Goal: {GOAL}")
    rf = body["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["name"] == "plan"
    assert rf["json_schema"]["schema"] == planlock.plan_schema(
        registry, max_steps=20, coverage=True, context=CONTEXT
    )
    call = next(e.data for e in journal.events() if e.kind == "llm_called")
    assert call["backend"] == f"openai:qwen@{openai_server.url}/v1"
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (812, 64, 800)


@pytest.mark.parametrize(
    ("model", "key", "message"),
    [
        ("qwen", "sk-wrong", "authentication failed"),
        ("truncated", KEY, "did not finish (finish_reason='length')"),
        ("malformed", KEY, "malformed reply: no choices"),
        ("broken", KEY, "HTTP 500"),
    ],
)
def test_openai_backend_errors_are_llm_errors_naming_the_backend(
    openai_server: StubServer, model: str, key: str, message: str
) -> None:
    llm = openai_llm(openai_server, model, key)
    with pytest.raises(LLMError) as caught:
        ask(llm, {"type": "object"})
    assert message in str(caught.value)
    assert caught.value.backend == f"openai:{model}@{openai_server.url}/v1"


def test_openai_backend_with_the_server_down() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    llm = OpenAILLM("qwen", base_url=url, api_key=KEY, max_retries=0, timeout=5)
    with pytest.raises(LLMError, match="cannot reach the server"):
        ask(llm)


def test_openai_backend_times_out() -> None:
    slow = threading.Event()

    def handler(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        slow.wait(3)
        return 200, completion("{}")

    with StubServer(handler) as server:
        llm = OpenAILLM("q", base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=0.3)
        with pytest.raises(LLMError, match="timed out"):
            ask(llm)
        slow.set()


# --------------------------------------------------------------------------------------------
# Anthropic wire format: recorded exchanges, replayed


def anthropic_handler(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    # The SDK sends the key as x-api-key or (newer versions) as a bearer token.
    if KEY not in (
        headers.get("x-api-key"),
        headers.get("authorization", "").removeprefix("Bearer "),
    ):
        error = {"type": "authentication_error", "message": "invalid x-api-key"}
        return 401, {"type": "error", "error": error}
    if path != "/v1/messages":
        return 404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
    last_user = body["messages"][-1]["content"].splitlines()[0]
    tool = (body.get("tool_choice") or {}).get("name")
    for exchange in EXCHANGES:
        match = exchange["match"]
        if (match["model"], match["tool"], match["user"]) == (body["model"], tool, last_user):
            return exchange["status"], exchange["response"]
    error = {"type": "invalid_request_error", "message": "no recorded exchange"}
    return 400, {"type": "error", "error": error}


@pytest.fixture
def anthropic_server() -> Iterator[StubServer]:
    with StubServer(anthropic_handler) as server:
        yield server


def anthropic_llm(
    server: StubServer, model: str = "claude-sonnet-4-6", key: str = KEY
) -> AnthropicLLM:
    return AnthropicLLM(model, base_url=server.url, api_key=key, max_retries=0, timeout=10)


def test_anthropic_backend_plans_through_a_forced_tool_call(
    anthropic_server: StubServer, registry: ToolRegistry
) -> None:
    with capture_journal() as journal:
        plan = plan_with(anthropic_llm(anthropic_server), registry, journal=journal)
    assert [s.tool for s in plan.steps] == ["fetch_account", "send_email"]
    (path, headers, body) = anthropic_server.requests[0]
    assert path == "/v1/messages"
    assert headers["anthropic-version"]
    assert body["system"].startswith("You are the planner")
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["tool_choice"] == {"type": "tool", "name": "answer"}
    (tool,) = body["tools"]
    assert tool["input_schema"] == planlock.plan_schema(
        registry, max_steps=20, coverage=True, context=CONTEXT
    )
    assert tool["input_schema"]["type"] == "object"
    call = next(e.data for e in journal.events() if e.kind == "llm_called")
    assert call["model"] == "claude-sonnet-4-6"
    assert (call["input_tokens"], call["output_tokens"]) == (1322, 118)


def test_anthropic_backend_relays_cannot_plan(
    anthropic_server: StubServer, registry: ToolRegistry
) -> None:
    with pytest.raises(CannotPlan, match="None of the tools can book travel"):
        plan_with(
            anthropic_llm(anthropic_server), registry, "Book a flight to Paris for the customer."
        )


@pytest.mark.parametrize(
    ("model", "key", "message"),
    [
        ("claude-sonnet-4-6", "sk-wrong", "authentication failed"),
        ("claude-unknown", KEY, "HTTP 400"),
    ],
)
def test_anthropic_backend_errors_are_llm_errors_naming_the_backend(
    anthropic_server: StubServer, registry: ToolRegistry, model: str, key: str, message: str
) -> None:
    with capture_journal() as journal, pytest.raises(LLMError) as caught:
        plan_with(anthropic_llm(anthropic_server, model, key), registry, journal=journal)
    assert message in str(caught.value)
    assert caught.value.backend == f"anthropic:{model}@{anthropic_server.url}"
    assert [e.kind for e in journal.events()] == ["planning_progress", "llm_called"]
    progress = journal.events()[0].data
    assert {k: v for k, v in progress.items() if k != "elapsed_s"} == {
        "by": "planner",
        "phase": "writing",
        "attempt": 1,
    }
    assert message in journal.events()[1].data["error"]


def test_anthropic_backend_with_the_server_down() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    llm = AnthropicLLM("claude-sonnet-4-6", base_url=url, api_key=KEY, max_retries=0, timeout=5)
    with pytest.raises(LLMError, match="cannot reach the server"):
        ask(llm, {"type": "object"})


def test_anthropic_wraps_a_non_object_schema() -> None:
    llm = AnthropicLLM("m", api_key=KEY)
    request = LLMRequest((Message("user", "hi"),), "quarantined_step", {"type": "string"})
    tool = llm.build_request(request)["tools"][0]
    assert tool["input_schema"] == {
        "type": "object",
        "properties": {"value": {"type": "string"}},
        "required": ["value"],
    }


def test_the_network_beyond_loopback_is_blocked() -> None:
    with pytest.raises(Exception, match=r"(?i)socket|blocked|host"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


# --------------------------------------------------------------------------------------------
# Cut-off replies and time limits: repaired by the planner, journaled with the partial reply


def exchange(model: str) -> dict[str, Any]:
    response: dict[str, Any] = next(
        e["response"] for e in EXCHANGES if e["match"]["model"] == model
    )
    return response


def test_an_anthropic_reply_cut_at_max_tokens_is_repaired(registry: ToolRegistry) -> None:
    def handler(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        repair = body["messages"][-1]["content"].startswith("Your reply was cut off")
        return 200, exchange("claude-sonnet-4-6" if repair else "claude-haiku-4-5")

    with StubServer(handler) as server, capture_journal() as journal:
        llm = anthropic_llm(server, "claude-haiku-4-5")
        plan = plan_with(llm, registry, journal=journal)
    assert [s.tool for s in plan.steps] == ["fetch_account", "send_email"]
    first = next(e.data for e in journal.events() if e.kind == "llm_called")
    assert json.loads(first["reply"]) == {"steps": [{"id": "1", "tool": "fetch_account"}]}
    assert (first["finish_reason"], first["output_tokens"]) == ("length", 16)
    assert "stop_reason='max_tokens'" in first["error"]
    repair = server.requests[1][2]["messages"][-1]["content"]
    assert "cut off at 16 tokens (the limit is 1024)" in repair


def test_an_openai_reply_cut_at_the_length_limit_is_repaired(registry: ToolRegistry) -> None:
    def handler(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        if len(body["messages"]) == 2:
            return 200, completion('{"steps": [{"id": "1"', "length")
        return 200, completion(json.dumps(PLAN))

    seen: list[planlock.Progress] = []
    with StubServer(handler) as server, capture_journal() as journal:
        llm = openai_llm(server)
        planner = Planner(llm, registry, journal=journal, on_progress=seen.append)

        async def go() -> planlock.Plan:
            return await planner.plan(GOAL, CONTEXT)

        plan = anyio.run(go)
    assert len(plan.steps) == 2
    first = next(e.data for e in journal.events() if e.kind == "llm_called")
    assert (first["reply"], first["finish_reason"]) == ('{"steps": [{"id": "1"', "length")
    assert [a.finish_reason for a in planner.attempts] == ["length", "stop"]
    # A remote backend reports the phase, then the usage when done.
    assert [(p.attempt, p.phase, p.tokens) for p in seen] == [
        (1, "writing", None),
        (1, "done", 64),
        (2, "repairing", None),
        (2, "done", 64),
    ]


def test_a_remote_call_past_the_time_limit_is_cut_off(registry: ToolRegistry) -> None:
    release = threading.Event()

    def handler(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        release.wait(5)
        return 200, completion(json.dumps(PLAN))

    with StubServer(handler) as server:
        llm = openai_llm(server)  # the client's own timeout is 10 s
        started = time.monotonic()
        with pytest.raises(planlock.PlanningFailed) as caught:
            plan_with(llm, registry, max_attempts=1, timeout_s=0.3)
        took = time.monotonic() - started
        release.set()
    assert took < 3
    (attempt,) = caught.value.attempts
    assert attempt.finish_reason == "timeout"
    assert attempt.issues[0].code == "timed_out"
    assert "a longer time limit (--timeout or timeout_s=; now 0.3 s)" in str(caught.value)


def test_an_anthropic_reply_without_the_answer_tool_call_ends_in_planning_failed(
    anthropic_server: StubServer, registry: ToolRegistry
) -> None:
    llm = anthropic_llm(anthropic_server, "claude-opus-4-7")
    with capture_journal() as journal, pytest.raises(planlock.PlanningFailed) as caught:
        plan_with(llm, registry, journal=journal, max_attempts=1)
    (attempt,) = caught.value.attempts
    assert attempt.finish_reason == "end_turn"
    assert attempt.reply == "I would first fetch the account, then send the email."
    call = next(e.data for e in journal.events() if e.kind == "llm_called")
    assert call["reply"] == attempt.reply
    assert "did not finish (finish_reason='end_turn') after 14 tokens" in call["error"]
    assert "stop_reason='end_turn'" in call["error"]
