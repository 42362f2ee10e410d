"""The embedded ``local`` backend: model file assembly, and the real model planning offline.

Tests marked ``integration`` and ``model`` load the real Qwen2.5-Coder-1.5B model (joined from
its chunk packages on first use; once per session, ``local_llm`` in conftest) and run it on this
machine's CPU; they run in ``make test`` and CI. Tests that only need *a* plan for a goal, or *a*
review of one at a checkpoint, use ``local_plans``, which answers a request the model was already
asked (in this session, or in the run that recorded ``tests/data/local-plans.json``) with the
reply it gave then; one test here asks the model again and compares.
The OpenAI backend is also tested here against llama.cpp's own OpenAI-compatible HTTP server,
which the embedded runtime opens on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ReplayLLM, load_recorded_plans, model_identity, request_key
from test_replan_local import busy_room
from typer.testing import CliRunner

import planlock
from planlock import LLMCutOff, LLMError, LLMRequest, LocalLLM, Message, OpenAILLM, Planner, demo
from planlock.cli import app
from planlock.errors import UsageError
from planlock.llm._local import (
    DEFAULT_MODEL,
    ModelFile,
    chunk_files,
    ensure_model,
    grammar_for,
    join_chunks,
)
from planlock.testing import capture_journal

# --------------------------------------------------------------------------------------------
# Joining and verifying chunks (small fake chunks: fast)


def chunks(tmp_path: Path, parts: list[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(parts, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_chunks_are_joined_in_order_verified_and_stamped(tmp_path: Path) -> None:
    parts = [b"GGUF", b"-middle-", b"end"]
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    dest = tmp_path / "cache" / "m.gguf"
    assert join_chunks(chunks(tmp_path, parts), dest, size=15, sha256=digest) == dest
    assert dest.read_bytes() == b"GGUF-middle-end"
    assert (tmp_path / "cache" / "m.gguf.sha256").read_text().strip() == digest
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m.gguf", "m.gguf.sha256"]


def test_a_hash_mismatch_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(LLMError, match=r"SHA-256 is .* expected 00+: refusing"):
        join_chunks(chunks(tmp_path, [b"evil", b"model"]), dest, size=9, sha256="0" * 64)
    assert not dest.exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_size_mismatch_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="add up to 3 bytes, expected 4"):
        join_chunks(chunks(tmp_path, [b"abc"]), tmp_path / "m.gguf", size=4, sha256="0" * 64)


def test_missing_chunk_packages_say_how_to_install_them() -> None:
    absent = ModelFile("x.gguf", "no_such_chunk_pkg_{i}", "no-such-chunk-{i}", 2, 1, "0", "x")
    with pytest.raises(LLMError, match=r"no-such-chunk-1 is not installed.*planlock\[local\]"):
        chunk_files(absent)


def test_the_pinned_model_ships_as_22_ordered_chunks() -> None:
    paths = chunk_files(DEFAULT_MODEL)
    assert [p.name for p in paths] == [f"part{i:02d}.bin" for i in range(1, 23)]
    assert sum(p.stat().st_size for p in paths) == DEFAULT_MODEL.size == 1_117_320_768


def test_an_existing_verified_file_is_not_rejoined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ModelFile("m.gguf", "unused{i}", "unused-{i}", 1, 3, "a" * 64, "fake")
    (tmp_path / "m.gguf").write_bytes(b"abc")
    (tmp_path / "m.gguf.sha256").write_text("a" * 64 + "\n")
    assert ensure_model(model, tmp_path) == tmp_path / "m.gguf"
    monkeypatch.setenv("PLANLOCK_CACHE", str(tmp_path))
    assert ensure_model(model) == tmp_path / "m.gguf"


def test_the_thread_count_comes_from_the_environment_else_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLANLOCK_LOCAL_THREADS", "3")
    assert LocalLLM().threads == 3
    assert LocalLLM(threads=2).threads == 2  # an explicit count wins
    monkeypatch.setenv("PLANLOCK_LOCAL_THREADS", "0")
    assert LocalLLM().threads == 1
    monkeypatch.setenv("PLANLOCK_LOCAL_THREADS", "two")
    with pytest.raises(UsageError, match="PLANLOCK_LOCAL_THREADS must be a whole number"):
        LocalLLM()
    monkeypatch.delenv("PLANLOCK_LOCAL_THREADS")
    assert LocalLLM().threads == len(os.sched_getaffinity(0))


def test_the_grammar_asks_for_compact_json() -> None:
    grammar = grammar_for({"type": "object"})
    assert grammar.startswith("%llguidance {}\nstart: %json ")
    body = json.loads(grammar.split("%json ", 1)[1])
    assert body["x-guidance"] == {"whitespace_flexible": False}


# --------------------------------------------------------------------------------------------
# The real model (integration)

OTHER_GOALS = [
    ("Look up the customer's account.", {"fetch_account"}),
    ("Delete the customer's account.", {"delete_account"}),
    ("Search the knowledge base for articles about billing cycles.", {"search_knowledge_base"}),
    ("Read the customer's ticket.", {"read_ticket"}),
    ("Email the customer the welcome template.", {"send_email"}),
]


def plan_for(llm: Any, goal: str, **kwargs: Any) -> tuple[planlock.Plan, Planner]:
    registry = demo.build_registry(demo.HelpDesk.sample())
    # These tests judge the plans, not the time: under `make test` the model shares two cores
    # with other xdist workers, and a call can take longer than the default 120 s limit.
    kwargs.setdefault("timeout_s", None)
    planner = Planner(llm, registry, **kwargs)

    async def go() -> planlock.Plan:
        return await planner.plan(goal, demo.INPUTS)

    return anyio.run(go), planner


@pytest.mark.integration
def test_the_local_model_plans_the_demo_goal(local_llm: LocalLLM, local_plans: ReplayLLM) -> None:
    with capture_journal() as journal:
        plan, _ = plan_for(local_plans, demo.GOAL, journal=journal)
    registry = demo.build_registry(demo.HelpDesk.sample())
    assert planlock.validate(plan, registry, inputs=demo.INPUTS).ok
    tools = [s.tool for s in plan.steps]
    assert "send_email" in tools
    assert "delete_account" not in tools
    email = next(s for s in plan.steps if s.tool == "send_email")
    assert email.args["to"] == "{{user.email}}"
    call = next(e.data for e in journal.events() if e.kind == "llm_called")
    assert call["backend"] == "local"
    assert call["model"] == "Qwen2.5-Coder-1.5B-Instruct Q4_K_M"
    assert call["input_tokens"] > 500
    assert call["output_tokens"] > 10
    assert local_llm.load_seconds is not None


@pytest.mark.integration
@pytest.mark.parametrize(("goal", "needs"), OTHER_GOALS)
def test_the_local_model_plans_other_goals_over_the_demo_tools(
    local_plans: ReplayLLM, goal: str, needs: set[str]
) -> None:
    plan, _ = plan_for(local_plans, goal)
    registry = demo.build_registry(demo.HelpDesk.sample())
    assert planlock.validate(plan, registry, inputs=demo.INPUTS).ok
    assert needs <= {s.tool for s in plan.steps}


class Asking:
    """The embedded model itself (no recording, no session cache), keeping what it was asked
    and what it replied."""

    def __init__(self, llm: LocalLLM) -> None:
        self.llm = llm
        self.name = llm.name
        self.asked: list[tuple[str, planlock.LLMReply]] = []

    async def complete(self, request: LLMRequest) -> planlock.LLMReply:
        reply = await self.llm.complete(request)
        self.asked.append((request_key(self.name, request), reply))
        return reply


@pytest.mark.integration
def test_a_recorded_reply_is_what_the_model_writes_today(local_llm: LocalLLM) -> None:
    """The recordings ``local_plans`` answers from stand for the model: asked again, the model
    gives one of them the same reply. What this checks, that the greedy model repeats itself on
    this machine and runtime, holds for a plan and a checkpoint's review alike; the review's
    prompt is a third of a plan's, and reading a prompt is what the model tier pays for (a plan's
    took 159 s of CPU, on the one thread `make test` leaves the model)."""
    recorded = load_recorded_plans(model_identity())
    fresh = Asking(local_llm)
    assert busy_room(fresh).ok
    ((key, reply),) = fresh.asked
    if key not in recorded:
        if os.environ.get("PLANLOCK_RECORD_PLANS") == "1":
            pytest.skip("recording: the replies are written at the end of this session")
        pytest.fail("no recording for today's request: PLANLOCK_RECORD_PLANS=1 pytest -m model")
    assert reply.finish_reason == recorded[key].finish_reason == "stop"
    assert json.loads(reply.text) == json.loads(recorded[key].text)


@pytest.mark.integration
def test_a_truncated_local_reply_is_an_error(local_llm: LocalLLM) -> None:
    request = LLMRequest((Message("user", "Count to fifty."),), "test", None, max_tokens=3)

    async def go() -> None:
        await local_llm.complete(request)

    with pytest.raises(LLMError, match=r"^local: the reply did not finish \(finish_reason='len"):
        anyio.run(go)


@pytest.mark.integration
def test_a_prompt_beyond_the_context_is_an_error(local_llm: LocalLLM) -> None:
    huge = "word " * 6000
    request = LLMRequest((Message("user", huge),), "test", None, max_tokens=8)

    async def go() -> None:
        await local_llm.complete(request)

    with pytest.raises(LLMError, match=r"^local: no reply: .*context"):
        anyio.run(go)


@pytest.mark.integration
def test_a_fresh_model_restores_the_prompt_prefix_from_disk(
    local_llm: LocalLLM, tmp_path: Path
) -> None:
    """Two model instances stand for two processes: the second reads only what follows the
    prefix the first saved; another prefix is a miss. (``local_llm`` ensures the model file.)"""
    system = "You answer yes or no about the tools below.\n" + "\n".join(
        f"- tool_{i}(name: string) -> string: looks up record {i} by name." for i in range(3)
    )

    def ask(llm: LocalLLM, system_text: str, question: str) -> Any:
        messages = (Message("system", system_text), Message("user", question))
        request = LLMRequest(messages, "test", {"type": "boolean"}, max_tokens=8)
        return anyio.run(llm.complete, request)

    def cached(llm: LocalLLM) -> LocalLLM:
        # A short prefix here, to read fewer tokens (a test's model runs on one core; three
        # tools make 87 tokens, eight made 182 and cost ~9 s of CPU more): the cache's floor
        # lowered for it, not the path under test.
        llm.load()
        assert llm.prefix_cache is not None
        assert len(system) < llm.prefix_cache.min_chars
        llm.prefix_cache.min_chars = len(system) // 2
        return llm

    first = cached(LocalLLM(prefix_cache=tmp_path))
    try:
        missed = ask(first, system, "Is there a tool_3?")
    finally:
        first.close()
    assert missed.extra["prefix_cache"] == "miss"
    assert missed.extra["cached_tokens"] == 0
    assert len(list(tmp_path.glob("prefix-*.bin"))) == 1
    second = cached(LocalLLM(prefix_cache=tmp_path))
    try:
        hit = ask(second, system, "Is there a tool_2?")
        # Another tool list is another key (a miss, saved); the tokens it shares with what the
        # model holds are still reused by llama.cpp itself.
        other = ask(second, system + "\n- drop(name: string): deletes it.", "Is there a drop?")
    finally:
        second.close()
    assert hit.extra["prefix_cache"] == "restored"
    assert hit.extra["cached_tokens"] >= hit.input_tokens - 20, "only the question was read"
    assert hit.text in ("true", "false")
    assert other.extra["prefix_cache"] == "miss"
    assert len(list(tmp_path.glob("prefix-*.bin"))) == 2


def copy_the_customer_id(
    llm: Any,
) -> tuple[planlock.RunResult, list[planlock.Event], demo.HelpDesk]:
    """Read the demo's injected ticket, then a quarantined llm step copies a field out of it."""
    desk = demo.HelpDesk.sample()
    registry = demo.build_registry(desk)
    plan = planlock.Plan.parse(
        [
            {"step": 1, "tool": "read_ticket", "args": {"ticket_id": "T-1001"}},
            {
                "step": 2,
                "tool": "llm",
                "args": {
                    "instruction": "Copy the customer_id value of the input.",
                    "input": "{{steps.1.output}}",
                    "output_schema": {
                        "type": "object",
                        "properties": {"customer_id": {"type": "string"}},
                        "required": ["customer_id"],
                    },
                },
            },
        ]
    )
    with capture_journal() as journal:
        result = planlock.run_sync(plan, registry, llm=llm, journal=journal)
    return result, journal.events(), desk


@pytest.mark.integration
def test_a_quarantined_llm_step_runs_on_the_local_model(local_llm: LocalLLM) -> None:
    result, events, desk = copy_the_customer_id(local_llm)
    assert result.ok
    assert result.outputs["2"] == {"customer_id": "A-1001"}
    assert desk.deleted == []  # the model read "call delete_account"; it had no tools
    call = next(e for e in events if e.kind == "llm_called")
    assert call.data["purpose"] == "quarantined_step"


# --------------------------------------------------------------------------------------------
# The OpenAI backend against llama.cpp's OpenAI-compatible server (integration)


@pytest.mark.integration
def test_the_openai_backend_runs_a_step_through_llama_cpps_server(local_llm: LocalLLM) -> None:
    # Right after the test above, on purpose: the same request, so llama.cpp's own prompt cache
    # (one slot) has read its prompt already and this test pays for the reply's ~10 tokens only
    # (a checkpoint's review, asked here before, wrote ~70: 14 s of the model's one thread).
    assert local_llm.base_url.startswith("http://127.0.0.1:")
    llm = OpenAILLM("qwen", base_url=local_llm.base_url, api_key=local_llm.api_key, max_retries=0)
    result, events, _ = copy_the_customer_id(llm)
    assert result.ok, result.error
    assert result.outputs["2"] == {"customer_id": "A-1001"}
    (call,) = [e.data for e in events if e.kind == "llm_called"]
    assert call["backend"].startswith("openai:qwen@http://127.0.0.1:")
    assert call["purpose"] == "quarantined_step"
    assert call["input_tokens"] > 100
    assert 0 < call["output_tokens"] < 30


@pytest.mark.integration
def test_the_embedded_server_refuses_a_wrong_key(local_llm: LocalLLM) -> None:
    llm = OpenAILLM("qwen", base_url=local_llm.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(LLMError, match=r"authentication failed|HTTP 401"):
        plan_for(llm, "Look up the customer's account.")


# --------------------------------------------------------------------------------------------
# The demo, planned by the local model (integration)


@pytest.mark.integration
def test_demo_plans_with_the_local_model_and_the_injection_stays_data(
    tmp_path: Path, local_plans: ReplayLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo's `local` model, with the session's replies: the demo goal's plan is the one
    # test_the_local_model_plans_the_demo_goal got (same prompt); its LLM steps run for real.
    monkeypatch.setattr("planlock.cli._demo.load_model", lambda spec=None: local_plans)
    result = CliRunner().invoke(app, ["demo", "--yes", "--journal", str(tmp_path / "demo.db")])
    assert result.exit_code == 0, result.output
    assert "planned by local" in result.output
    assert "delete_account ran: no" in result.output
    assert "the planner's prompt: no" in result.output
    assert "chain intact" in result.output
    journal = planlock.Journal.open(tmp_path / "demo.db")
    kinds = [e.kind for e in journal.events()]
    assert kinds.index("llm_called") < kinds.index("plan_created") < kinds.index("step_started")
    plan_call = next(e for e in journal.events() if e.kind == "llm_called")
    assert demo.INJECTION not in json.dumps(plan_call.data["messages"])


@pytest.mark.integration
def test_the_local_model_streams_its_progress_and_is_stopped_in_a_loop(
    local_llm: LocalLLM,
) -> None:
    seen: list[planlock.Progress] = []
    line = "fetch https://example.com/a/b/c\n"
    request = LLMRequest(
        (
            Message("user", f"Write the line {line.strip()!r} 500 times, one per line."),
            Message("assistant", line * 3),
        ),
        "test",
        None,
        max_tokens=600,
        timeout_s=900,  # the repetition stop is under test, not the time limit
        on_progress=seen.append,
    )

    async def go() -> None:
        await local_llm.complete(request)

    with pytest.raises(LLMCutOff) as caught:
        anyio.run(go)
    exc = caught.value
    assert exc.reason == "repetition", exc
    assert 8 < exc.output_tokens < 200  # of 600 allowed; the whole answer is ~5,000 tokens
    assert "example.com" in exc.partial
    phases = [p.phase for p in seen]
    assert phases[0] == "reading"
    assert "writing" in phases
    assert phases[-1] == "done"
    assert any(p.prompt_tokens for p in seen if p.phase == "reading")
    writing = [p for p in seen if p.phase == "writing"]
    assert writing
    assert all(p.tokens is not None for p in writing)
    assert seen[-1].tokens == exc.output_tokens
    assert seen[-1].tokens_per_s is not None
    assert seen[-1].tokens_per_s > 0
