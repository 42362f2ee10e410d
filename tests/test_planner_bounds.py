"""Bounded, readable planning: token and time limits, degenerate-repetition stops, repairs after a
cut-off, the partial reply in the journal, ``PlanningFailed`` advice, progress reports and
``planning_progress`` events; the local backend's streaming with a fake llama.cpp server; the
CLI's progress lines and ``--quiet``. No model: scripted replies (``Streamed``) and stubs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

import planlock
from planlock import (
    LLMCutOff,
    LLMRequest,
    LocalLLM,
    Message,
    Planner,
    PlanningFailed,
    Progress,
    ToolRegistry,
    demo,
)
from planlock.cli import app
from planlock.llm import degenerate
from planlock.testing import ScriptedLLM, Streamed, capture_journal

GOOD = {
    "steps": [
        {"id": "1", "tool": "read_ticket", "args": {"ticket_id": "{{ticket.id}}"}},
        {"id": "2", "tool": "fetch_account", "args": {"account_id": "{{user.account_id}}"}},
        {
            "id": "3",
            "tool": "send_email",
            "args": {"to": "{{user.email}}", "template": "cancellation_confirmation"},
        },
    ]
}
CUT = '{"steps":[{"id":"1","tool":"read_ticket","args":{"ticket_id":"{{ticket.id}}"}},{"id":"2"'
LOOP = '{"steps":[{"id":"1","tool":"llm","args":{"instruction":"' + "Check the page again. " * 300


def ntok(text: str, per: int = 4) -> int:
    """Tokens in a Streamed reply of ``per`` characters per token."""
    return -(-len(text) // per)


def plan_with(planner: Planner, goal: str = demo.GOAL) -> planlock.Plan:
    async def go() -> planlock.Plan:
        return await planner.plan(goal, demo.INPUTS, run_id="r1")

    return anyio.run(go)


def kinds(journal: planlock.Journal) -> list[str]:
    return [e.kind for e in journal.events()]


def calls(journal: planlock.Journal) -> list[dict[str, Any]]:
    return [e.data for e in journal.events() if e.kind == "llm_called"]


# --------------------------------------------------------------------------------------------
# Degenerate repetition


def test_a_line_repeated_many_times_is_degenerate() -> None:
    text = '{"steps":[{"id":"1","tool":"llm","args":{"instruction":"' + "fetch the url\n" * 20
    why = degenerate(text)
    assert why is not None
    assert "repeated" in why
    assert "'fetch the url\\n'" in why or "fetch the url" in why


def test_a_whitespace_run_is_degenerate() -> None:
    assert degenerate('{"steps":[{"id":"1","tool":"x","args":{"q":"a' + " " * 60) is not None
    assert degenerate('{"a": "b' + " " * 40 + '"}') is None


def test_the_same_character_over_and_over_is_degenerate() -> None:
    assert degenerate('{"url":"https://example.com/' + "a" * 250) is not None


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        json.dumps(GOOD, indent=2),
        # similar steps that differ (ids, pages) are a plan, not a loop
        json.dumps(
            {
                "steps": [
                    {"id": str(i), "tool": "fetch", "args": {"url": f"https://x.test/page/{i}"}}
                    for i in range(1, 21)
                ]
            }
        ),
    ],
)
def test_real_plans_are_not_degenerate(text: str) -> None:
    assert degenerate(text) is None


# --------------------------------------------------------------------------------------------
# Cut-off replies are repaired, and journaled with what they said


def test_a_reply_cut_off_at_the_token_limit_is_repaired(registry: ToolRegistry) -> None:
    model = ScriptedLLM([Streamed(CUT, finish_reason="length"), GOOD])
    with capture_journal() as journal:
        plan = plan_with(Planner(model, registry, journal=journal))
    assert [s.tool for s in plan.steps] == ["read_ticket", "fetch_account", "send_email"]
    first, second = calls(journal)
    # The partial reply is journaled (not null), with why it stopped and the error.
    assert first["reply"] == CUT
    assert first["finish_reason"] == "length"
    assert first["output_tokens"] == ntok(CUT)
    assert "finish_reason='length'" in first["error"]
    assert second["finish_reason"] == "stop"
    assert kinds(journal)[-4:] == ["llm_called", "plan_rejected", "llm_called", "plan_created"]
    rejected = next(e.data for e in journal.events() if e.kind == "plan_rejected")
    assert rejected["issues"][0]["code"] == "cut_off"
    # The repair says what happened; the cut-off text is not sent back.
    repair = model.requests[1].messages[-1]
    assert repair.role == "user"
    assert f"cut off at {ntok(CUT)} tokens (the limit is 1024)" in repair.content
    assert "shorter plan" in repair.content
    assert CUT not in [m.content for m in model.requests[1].messages]
    # The model never finished a reply: the repair may still answer cannot_plan.
    assert model.requests[1].json_schema == model.requests[0].json_schema


def test_the_token_limit_cuts_a_long_reply(registry: ToolRegistry) -> None:
    model = ScriptedLLM([Streamed(GOOD), Streamed(GOOD, chars_per_token=100)])
    planner = Planner(model, registry, max_tokens=10)
    plan = plan_with(planner)
    assert len(plan.steps) == 3
    first = planner.attempts[0]
    assert (first.finish_reason, first.output_tokens) == ("length", 10)
    assert first.reply == json.dumps(GOOD)[:40]
    assert model.requests[0].max_tokens == 10


def test_repetition_stops_the_stream_early(registry: ToolRegistry) -> None:
    model = ScriptedLLM([Streamed(LOOP), GOOD])
    with capture_journal() as journal:
        planner = Planner(model, registry, journal=journal)
        plan_with(planner)
    first = planner.attempts[0]
    assert first.finish_reason == "repetition"
    total = len(LOOP) // 4
    assert first.output_tokens < 120 < total  # stopped long before the end (~1,700 tokens)
    assert first.issues[0].code == "degenerate"
    assert "Check the page again." in calls(journal)[0]["reply"]
    assert calls(journal)[0]["finish_reason"] == "repetition"
    repair = model.requests[1].messages[-1].content
    assert "kept repeating" in repair
    assert "without repeating" in repair


def test_the_time_limit_stops_a_slow_reply(registry: ToolRegistry) -> None:
    slow = Streamed(GOOD, chars_per_token=1, delay_s=0.02)  # ~7 s if left to finish
    model = ScriptedLLM([slow, GOOD])
    planner = Planner(model, registry, timeout_s=0.3)
    started = time.monotonic()
    plan_with(planner)
    assert time.monotonic() - started < 3
    first = planner.attempts[0]
    assert first.finish_reason == "timeout"
    assert first.issues[0].code == "timed_out"
    assert 0 < first.output_tokens < 60
    assert first.latency_s < 2
    assert "time limit (0.3 s)" in model.requests[1].messages[-1].content
    assert model.requests[0].timeout_s == 0.3


def test_after_the_last_attempt_planning_fails_with_advice(registry: ToolRegistry) -> None:
    model = ScriptedLLM([Streamed(CUT, finish_reason="length")] * 2 + [Streamed(LOOP)])
    with capture_journal() as journal, pytest.raises(PlanningFailed) as caught:
        plan_with(Planner(model, registry, journal=journal))
    exc = caught.value
    assert not isinstance(exc, LLMCutOff)
    assert [a.finish_reason for a in exc.attempts] == ["length", "length", "repetition"]
    message = str(exc)
    assert "no valid plan after 3 attempt(s)" in message
    assert "3 replies were cut off or stopped" in message
    assert "a shorter, simpler goal" in message
    assert "--max-tokens" in message
    assert "now 1024" in message
    assert "a frontier model" in message
    assert exc.advice is not None
    assert message.endswith(exc.advice)
    assert all(c["reply"] for c in calls(journal))


def test_an_invalid_plan_alone_gives_no_cut_off_advice(registry: ToolRegistry) -> None:
    bad = {"steps": [{"id": "1", "tool": "refund_customer", "args": {}}]}
    with pytest.raises(PlanningFailed) as caught:
        plan_with(Planner(ScriptedLLM([bad] * 3), registry))
    assert caught.value.advice is None
    assert "cut off" not in str(caught.value)


def test_planner_limits_must_make_sense(registry: ToolRegistry) -> None:
    with pytest.raises(planlock.UsageError, match="max_tokens"):
        Planner(ScriptedLLM([]), registry, max_tokens=0)
    with pytest.raises(planlock.UsageError, match="timeout_s"):
        Planner(ScriptedLLM([]), registry, timeout_s=0)


# --------------------------------------------------------------------------------------------
# Progress: the callback and the journal


def test_progress_reports_phases_tokens_and_attempts(registry: ToolRegistry) -> None:
    seen: list[Progress] = []
    model = ScriptedLLM([Streamed(CUT, finish_reason="length"), Streamed(GOOD)])
    with capture_journal() as journal:
        plan_with(
            Planner(model, registry, journal=journal, on_progress=seen.append, progress_every_s=60)
        )
    phases = [(p.attempt, p.phase) for p in seen]
    assert phases[0] == (1, "reading")
    assert (1, "writing") in phases
    assert (2, "repairing") in phases
    assert (2, "writing") not in phases
    assert phases[-1] == (2, "done")
    done = seen[-1]
    assert done.tokens == ntok(json.dumps(GOOD))
    assert done.tokens_per_s is not None
    assert done.tokens_per_s > 0
    writing = [p for p in seen if p.phase == "writing"]
    assert all(p.tokens is not None for p in writing)
    # The journal: one event per phase change (no "done": llm_called closes each call).
    events = [e.data for e in journal.events() if e.kind == "planning_progress"]
    assert [(d["attempt"], d["phase"]) for d in events] == [
        (1, "reading"),
        (1, "writing"),
        (2, "reading"),
        (2, "repairing"),
    ]
    assert events[0]["prompt_tokens"] == 100
    assert set(events[1]) >= {"by", "phase", "attempt", "tokens", "elapsed_s"}


def test_progress_events_are_throttled(registry: ToolRegistry) -> None:
    slow = Streamed(GOOD, chars_per_token=2, delay_s=0.01)  # ~150 tokens, ~1.5 s or more
    with capture_journal() as journal:
        plan_with(Planner(ScriptedLLM([slow]), registry, journal=journal, progress_every_s=0.4))
    events = [e.data for e in journal.events() if e.kind == "planning_progress"]
    writing = [d for d in events if d["phase"] == "writing"]
    assert 2 <= len(writing) <= 1 + writing[-1]["elapsed_s"] / 0.4 + 1
    tokens = [d["tokens"] for d in writing]
    assert tokens == sorted(tokens)
    assert tokens[-1] > tokens[0]


# --------------------------------------------------------------------------------------------
# The local backend's streaming, with a fake llama.cpp server (no model)


class FakeServer:
    """Answers handle_chat_completions like xllamacpp does when streaming: one chunk per token
    to the callback, which returns True to stop."""

    def __init__(self, tokens: list[str], finish: str = "stop", delay_s: float = 0.0) -> None:
        self.tokens = tokens
        self.finish = finish
        self.delay_s = delay_s
        self.bodies: list[dict[str, Any]] = []
        self.sent = 0
        self.stopped = threading.Event()

    def handle_chat_completions(self, body: dict[str, Any], cb: Callable[[Any], bool]) -> None:
        self.bodies.append(body)
        base = {"object": "chat.completion.chunk", "model": "m.gguf"}
        if cb({**base, "choices": [], "prompt_progress": {"total": 50, "processed": 50}}):
            return
        for token in self.tokens:
            if self.delay_s:
                time.sleep(self.delay_s)
            self.sent += 1
            chunk = {**base, "choices": [{"delta": {"content": token}, "finish_reason": None}]}
            if cb(chunk):
                self.stopped.set()
                return
        cb({**base, "choices": [{"delta": {}, "finish_reason": self.finish}]})
        usage = {"prompt_tokens": 50, "completion_tokens": len(self.tokens)}
        cb({**base, "choices": [], "usage": usage})


def local_with(server: FakeServer) -> LocalLLM:
    llm = LocalLLM("/nonexistent/fake.gguf")
    llm._server = server
    return llm


def ask_local(llm: LocalLLM, **kw: Any) -> planlock.LLMReply:
    request = LLMRequest((Message("user", "plan"),), "plan", {"type": "object"}, **kw)

    async def go() -> planlock.LLMReply:
        return await llm.complete(request)

    return anyio.run(go)


def test_the_local_backend_streams_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps(GOOD)
    server = FakeServer([text[i : i + 3] for i in range(0, len(text), 3)])
    seen: list[Progress] = []
    reply = ask_local(local_with(server), on_progress=seen.append)
    assert reply.text == text
    n = len(server.tokens)
    assert (reply.input_tokens, reply.output_tokens, reply.finish_reason) == (50, n, "stop")
    body = server.bodies[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["return_progress"] is True
    assert seen[0].phase == "reading"
    assert seen[-1].phase == "done"
    assert seen[-1].tokens == n


def test_the_local_backend_stops_a_loop_while_streaming() -> None:
    server = FakeServer(['{"url":"https://a.test/'] + ["a/b/"] * 2000)
    with pytest.raises(LLMCutOff) as caught:
        ask_local(local_with(server))
    exc = caught.value
    assert exc.reason == "repetition"
    assert server.stopped.is_set()  # llama.cpp was told to stop
    assert server.sent < 100
    assert exc.partial.startswith('{"url":"https://a.test/a/b/')
    assert exc.output_tokens == server.sent
    assert str(exc).startswith("local:/nonexistent/fake.gguf: the reply did not finish")


def test_the_local_backend_reports_a_cut_off_with_the_partial_reply() -> None:
    server = FakeServer(['{"steps":', "[{", '"id"'], finish="length")
    with pytest.raises(LLMCutOff) as caught:
        ask_local(local_with(server), max_tokens=3)
    assert (caught.value.reason, caught.value.partial) == ("length", '{"steps":[{"id"')
    assert caught.value.output_tokens == 3
    assert "the token limit of 3" in str(caught.value)


def test_the_local_backend_stops_at_the_time_limit() -> None:
    server = FakeServer(["x"] * 400, delay_s=0.01)  # ~4 s
    started = time.monotonic()
    with pytest.raises(LLMCutOff) as caught:
        ask_local(local_with(server), timeout_s=0.3)
    assert time.monotonic() - started < 2
    assert caught.value.reason == "timeout"
    assert 0 < caught.value.output_tokens < 200
    assert server.stopped.wait(2)  # the next token told llama.cpp to stop


def test_the_local_backend_relays_a_server_error() -> None:
    class Refusing(FakeServer):
        def handle_chat_completions(self, body: dict[str, Any], cb: Callable[[Any], bool]) -> None:
            cb({"error": {"code": 400, "message": "the request exceeds the available context"}})

    with pytest.raises(planlock.LLMError, match=r"no reply: .*context") as caught:
        ask_local(local_with(Refusing([])))
    assert not isinstance(caught.value, LLMCutOff)


# --------------------------------------------------------------------------------------------
# The CLI: progress lines, --quiet, the limits


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Any]], ScriptedLLM]:
    def use(replies: list[Any]) -> ScriptedLLM:
        model = ScriptedLLM(replies)
        monkeypatch.setattr("planlock.cli._plan.load_model", lambda spec=None: model)
        return model

    return use


def plan_args(*extra: str) -> list[str]:
    context = [a for k, v in demo.INPUTS.items() for a in ("--context", f"{k}={json.dumps(v)}")]
    return ["plan", demo.GOAL, "--tools", "planlock.demo:registry", *context, *extra]


def test_plan_shows_progress_and_the_cut_off_attempt(
    scripted: Callable[[list[Any]], ScriptedLLM],
) -> None:
    scripted([Streamed(CUT, finish_reason="length"), Streamed(GOOD)])
    result = CliRunner().invoke(app, plan_args())
    assert result.exit_code == 0, result.output
    assert "scripted reading the prompt · 0/100 prompt tokens" in result.output
    assert "scripted writing the plan · " in result.output
    assert "scripted repairing the plan (attempt 2/3) · " in result.output
    assert f"scripted attempt 1/3: cut off at the token limit: {ntok(CUT)} tokens in " in (
        result.output
    )
    assert f"scripted attempt 2/3: {ntok(json.dumps(GOOD))} tokens in " in result.output
    assert "plan is valid" in result.output


def test_plan_quiet_shows_no_progress(scripted: Callable[[list[Any]], ScriptedLLM]) -> None:
    scripted([Streamed(CUT, finish_reason="length"), Streamed(GOOD)])
    result = CliRunner().invoke(app, plan_args("--quiet"))
    assert result.exit_code == 0, result.output
    assert "reading the prompt" not in result.output
    assert "attempt 1/3" not in result.output
    assert "plan is valid" in result.output


def test_plan_passes_the_limits_and_fails_with_advice(
    scripted: Callable[[list[Any]], ScriptedLLM], tmp_path: Path
) -> None:
    model = scripted([Streamed(GOOD)] * 2)
    db = tmp_path / "j.db"
    args = plan_args("--max-tokens", "5", "--timeout", "30", "--max-attempts", "2", "-q")
    result = CliRunner().invoke(app, [*args, "--journal", str(db)])
    assert result.exit_code == 1
    assert [r.max_tokens for r in model.requests] == [5, 5]
    assert [r.timeout_s for r in model.requests] == [30, 30]
    assert "cut off at 5 tokens" in result.output
    assert "a bigger token limit (--max-tokens or max_tokens=; now 5)" in result.output
    assert "nothing was run" in result.output
    journal = planlock.Journal.open(db)
    replies = [e.data["reply"] for e in journal.events() if e.kind == "llm_called"]
    assert replies == [json.dumps(GOOD)[:20]] * 2


def test_timeout_zero_means_no_time_limit(scripted: Callable[[list[Any]], ScriptedLLM]) -> None:
    model = scripted([Streamed(GOOD)])
    result = CliRunner().invoke(app, plan_args("--timeout", "0", "-q"))
    assert result.exit_code == 0, result.output
    assert model.requests[0].timeout_s is None


def test_on_a_terminal_progress_is_one_live_status_line() -> None:
    from io import StringIO

    from rich.console import Console

    from planlock.cli._plan_progress import PlanProgress

    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    shown = PlanProgress(console, "local", 3)
    with shown:
        assert shown._status is not None
        assert shown._status.console is console
        shown(Progress("reading", 2.0, prompt_tokens=880, prompt_done=512, attempt=1))
        assert "reading the prompt · 512/880 prompt tokens · 2 s" in str(shown._status.status)
        shown(Progress("writing", 41.0, tokens=312, tokens_per_s=9.8, attempt=1))
        status = str(shown._status.status)
        assert status == "planning with local: writing the plan · 312 tokens · 9.8 tok/s · 41 s"
        shown(
            Progress("done", 120.0, tokens=26, tokens_per_s=1.0, attempt=1, finish_reason="timeout")
        )
    assert not shown.__dict__["_status"]  # stopped
    printed = buffer.getvalue()
    assert "attempt 1/3: stopped at the time limit: 26 tokens in 120 s (1.0 tok/s)" in printed
    quiet = PlanProgress(Console(file=StringIO(), force_terminal=True), "local", 3, enabled=False)
    with quiet:
        assert quiet._status is None
        quiet(Progress("done", 1.0, tokens=3, attempt=1))


def test_ask_shows_planning_progress_unless_quiet(
    scripted: Callable[[list[Any]], ScriptedLLM], tmp_path: Path
) -> None:
    read_only = {"steps": [{"id": "1", "tool": "fetch_account", "args": {"account_id": "A-1001"}}]}
    args = plan_args("--approve", "auto", "--journal", str(tmp_path / "j.db"))
    args[:2] = ["ask", "Look up the customer's account."]  # a read-only plan serves this goal
    scripted([Streamed(read_only)])
    loud = CliRunner().invoke(app, args)
    assert loud.exit_code == 0, loud.output
    assert "scripted writing the plan" in loud.output
    scripted([Streamed(read_only)])
    quiet = CliRunner().invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "writing the plan" not in quiet.output
    journal = planlock.Journal.open(tmp_path / "j.db")
    assert "planning_progress" in [e.kind for e in journal.events()]  # journaled either way


def test_a_failing_progress_callback_stops_the_local_generation() -> None:
    server = FakeServer(["x"] * 400, delay_s=0.01)  # ~4 s

    def broken(progress: Progress) -> None:
        if progress.phase == "writing":
            raise RuntimeError("display broke")

    with pytest.raises(RuntimeError, match="display broke"):
        ask_local(local_with(server), on_progress=broken)
    assert server.stopped.wait(2)  # llama.cpp was told to stop at its next token
    assert server.sent < 200


def test_demo_shows_planning_progress_unless_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ScriptedLLM([Streamed(demo.PLAN)] * 2)
    monkeypatch.setattr("planlock.cli._demo.load_model", lambda spec=None: model)
    loud = CliRunner().invoke(app, ["demo", "--yes"])
    assert loud.exit_code == 0, loud.output
    assert "scripted writing the plan" in loud.output
    assert "scripted attempt 1/3: " in loud.output
    quiet = CliRunner().invoke(app, ["demo", "--yes", "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "writing the plan" not in quiet.output
    assert "planned by scripted" in quiet.output
