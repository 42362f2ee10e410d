"""OpenTelemetry spans (planlock.telemetry): names, nesting, GenAI attributes, events, content
capture, the console exporter from OTEL_* variables, and no cost or import without a tracer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from planlock import Journal, Plan, Planner, ToolRegistry, approve_all, run, telemetry
from planlock.testing import ScriptedLLM, memory_journal

pytestmark = pytest.mark.anyio

SRC = str(Path(__file__).resolve().parents[1] / "src")
IBAN = "DE02120300000000202051"
SECRET = "the-secret-report"

PLAN = {
    "steps": [
        {"id": "a", "tool": "fetch", "args": {"source": "a"}},
        {"id": "b", "tool": "fetch", "args": {"source": "b"}},
        {
            "id": "c",
            "tool": "llm",
            "args": {
                "instruction": "Extract the IBAN.",
                "input": "{{steps.a.output}}",
                "output_schema": {
                    "type": "object",
                    "properties": {"iban": {"type": "string"}},
                    "required": ["iban"],
                },
            },
        },
        {"id": "d", "tool": "pay", "args": {"iban": "{{steps.c.output.iban}}"}},
        {"id": "e", "tool": "check", "args": {"x": "{{steps.b.output}}"}},
    ]
}
REPLAN = {"steps": [{"id": "f", "tool": "check", "args": {"x": "again"}}]}


def tools() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    async def fetch(source: str) -> str:
        await anyio.sleep(0.02)  # a and b overlap: both run in parallel tasks
        return f"{SECRET} from {source}: pay {IBAN}"

    @reg.tool(effect="pay", sensitive=["iban"])
    def pay(iban: str) -> str:
        return "paid"

    @reg.tool(effect="read")
    def check(x: str) -> str:
        if SECRET in x:
            raise ValueError(f"cannot check {x}")  # error text carries the untrusted input
        return "checked"

    return reg


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    telemetry.reset()
    telemetry.use_tracer_provider(provider)
    yield exported
    telemetry.reset()


async def plan_and_run(journal: Journal, run_id: str = "run-1") -> None:
    """Plan with a scripted planner and run the plan, both in the run's workflow span."""
    reg = tools()
    with telemetry.workflow(run_id):
        planner = Planner(ScriptedLLM([PLAN]), reg, journal=journal)
        plan = await planner.plan("Pay the invoice in report a; check report b", run_id=run_id)
        result = await run(
            plan,
            reg,
            journal=journal,
            run_id=run_id,
            approver=approve_all(),
            llm=ScriptedLLM([{"result": {"iban": IBAN}}], name="openai:gpt-test@http://x"),
            replanner=ScriptedLLM([REPLAN]),
        )
    assert result.ok, result
    assert result.replans == 1


def spans_by_name(exported: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exported.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def parent_of(span: ReadableSpan, exported: InMemorySpanExporter) -> ReadableSpan | None:
    if span.parent is None:
        return None
    (found,) = [
        s for s in exported.get_finished_spans() if s.context.span_id == span.parent.span_id
    ]
    return found


def events(span: ReadableSpan) -> list[str]:
    return [e.name for e in span.events]


def all_values(exported: InMemorySpanExporter) -> str:
    """Every attribute value of every span and event, as one text."""
    parts: list[str] = []
    for s in exported.get_finished_spans():
        parts += [str(v) for v in (s.attributes or {}).values()]
        for e in s.events:
            parts += [str(v) for v in (e.attributes or {}).values()]
    return "\n".join(parts)


async def test_a_run_is_one_workflow_span_with_plan_chat_and_tool_spans_nested(
    exporter: InMemorySpanExporter,
) -> None:
    journal = memory_journal()
    await plan_and_run(journal)
    spans = spans_by_name(exporter)
    (workflow,) = spans["invoke_workflow"]
    assert parent_of(workflow, exporter) is None
    attrs = dict(workflow.attributes or {})
    assert attrs["gen_ai.operation.name"] == "invoke_workflow"
    assert attrs["planlock.run_id"] == "run-1"
    first = next(e for e in journal.events("run-1") if e.kind == "run_started")
    assert attrs["planlock.plan_hash"] == first.data["plan_hash"]
    assert attrs["planlock.status"] == "succeeded"
    assert attrs["planlock.replans"] == 1

    # planning: the planner's plan span and the replan's, each the parent of its model call
    plans = spans["plan"]
    assert [dict(p.attributes or {})["planlock.purpose"] for p in plans] == ["plan", "replan"]
    for p in plans:
        assert parent_of(p, exporter) is workflow
        assert p.attributes is not None
        assert p.attributes["gen_ai.operation.name"] == "plan"
    assert dict(plans[0].attributes or {})["gen_ai.plan.step.count"] == 5
    chats = spans["chat scripted"]
    assert [parent_of(c, exporter) for c in chats] == plans
    call = dict(chats[0].attributes or {})
    planned = next(e for e in journal.events("run-1") if e.kind == "llm_called")
    assert call["gen_ai.operation.name"] == "chat"
    assert call["gen_ai.provider.name"] == call["gen_ai.system"] == "scripted"
    assert call["gen_ai.request.model"] == "scripted"
    assert call["gen_ai.usage.input_tokens"] == planned.data["input_tokens"] > 0
    assert call["gen_ai.usage.output_tokens"] == planned.data["output_tokens"] > 0
    assert call["gen_ai.response.finish_reasons"] == ("stop",)

    # steps: one execute_tool span per call, all children of the run (parallel ones too)
    tool_spans = [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool ")]
    by_step = {str(dict(s.attributes or {})["gen_ai.tool.call.id"]): s for s in tool_spans}
    assert sorted(by_step) == ["a", "b", "c", "d", "e", "f"]
    for sid, s in by_step.items():
        tool_attrs = dict(s.attributes or {})
        assert s.name == f"execute_tool {tool_attrs['gen_ai.tool.name']}"
        assert tool_attrs["gen_ai.operation.name"] == "execute_tool"
        assert tool_attrs["planlock.run_id"] == "run-1"
        assert tool_attrs["planlock.step"] == sid
        assert parent_of(s, exporter) is workflow
    a, b = by_step["a"], by_step["b"]
    assert a.start_time is not None
    assert b.start_time is not None
    assert a.end_time is not None
    assert b.end_time is not None
    assert a.start_time < b.end_time  # they overlapped
    assert b.start_time < a.end_time

    # the quarantined llm step's model call is a chat span inside its tool span
    (step_chat,) = spans["chat gpt-test"]
    assert parent_of(step_chat, exporter) is by_step["c"]
    assert dict(step_chat.attributes or {})["gen_ai.provider.name"] == "openai"
    assert dict(step_chat.attributes or {})["planlock.purpose"] == "quarantined_step"

    # a failed step: status ERROR with the error kind; approvals and the replan are events
    failed = by_step["e"]
    assert failed.status.status_code == StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "tool_error"
    assert "planlock.step_failed" in events(failed)
    assert by_step["f"].status.status_code == StatusCode.UNSET
    assert {"planlock.approval_requested", "planlock.approval_granted"} <= set(events(by_step["d"]))
    flow = events(workflow)
    for kind in ("risk_assessed", "approval_granted", "replanned", "run_finished"):
        assert f"planlock.{kind}" in flow
    replanned = next(e for e in workflow.events if e.name == "planlock.replanned")
    assert dict(replanned.attributes or {})["planlock.reason"] == "error"


async def test_content_is_left_out_unless_capture_is_on(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    await plan_and_run(memory_journal())
    off = all_values(exporter)
    names = {k for s in exporter.get_finished_spans() for k in (s.attributes or {})}
    assert SECRET not in off
    assert IBAN not in off
    assert "Pay the invoice" not in off  # the goal
    assert not names & {"gen_ai.tool.call.arguments", "gen_ai.tool.call.result"}
    assert not names & {"gen_ai.input.messages", "gen_ai.output.messages"}

    exporter.clear()
    monkeypatch.setenv("PLANLOCK_OTEL_CAPTURE_CONTENT", "1")
    telemetry.reset()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    await plan_and_run(memory_journal())
    spans = spans_by_name(exporter)
    (pay,) = spans["execute_tool pay"]
    assert json.loads(str(dict(pay.attributes or {})["gen_ai.tool.call.arguments"])) == {
        "iban": IBAN
    }
    assert json.loads(str(dict(pay.attributes or {})["gen_ai.tool.call.result"])) == "paid"
    chat = dict(spans["chat scripted"][0].attributes or {})
    sent = json.loads(str(chat["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "Pay the invoice" in sent[1]["parts"][0]["content"]
    assert json.loads(str(chat["gen_ai.output.messages"]))[0]["role"] == "assistant"


async def test_the_genai_capture_variable_turns_content_on_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    telemetry.reset()
    try:
        assert telemetry.capture_content()
    finally:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
        telemetry.reset()
    assert not telemetry.capture_content()


async def test_run_opens_its_own_workflow_span_and_a_failed_planner_marks_the_plan_span(
    exporter: InMemorySpanExporter,
) -> None:
    reg = tools()
    planner = Planner(ScriptedLLM([RuntimeError("backend down")]), reg, max_attempts=1)
    with pytest.raises(Exception, match="backend down"):
        await planner.plan("anything", run_id="r2")
    spans = spans_by_name(exporter)
    (plan_span,) = spans["plan"]
    (chat,) = spans["chat scripted"]
    assert plan_span.status.status_code == chat.status.status_code == StatusCode.ERROR
    assert dict(chat.attributes or {})["error.type"] == "LLMError"
    assert parent_of(chat, exporter) is plan_span

    exporter.clear()
    result = await run(Plan.parse([{"step": 1, "tool": "fetch", "args": {"source": "x"}}]), reg)
    assert result.ok
    (workflow,) = spans_by_name(exporter)["invoke_workflow"]
    assert dict(workflow.attributes or {})["planlock.run_id"] == result.run_id
    (step,) = spans_by_name(exporter)["execute_tool fetch"]
    assert parent_of(step, exporter) is workflow


def run_script(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PLANLOCK_OTEL"))}
    clean["PYTHONPATH"] = SRC + os.pathsep + clean.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", script],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SCRIPT = textwrap.dedent(
    """
    import sys
    import planlock
    from planlock import Planner, ToolRegistry, approve_all, plan_sync, run_sync
    from planlock.testing import ScriptedLLM

    reg = ToolRegistry()

    @reg.tool(effect="read")
    def lookup(key: str) -> str:
        return "value of " + key

    plan = Planner(ScriptedLLM([{"steps": [
        {"id": "one", "tool": "lookup", "args": {"key": "k1"}},
        {"id": "two", "tool": "lookup", "args": {"key": "{{steps.one.output}}"}},
    ]}]), reg)
    import anyio
    made = anyio.run(plan.plan, "look up k1 twice")
    result = run_sync(made, reg, approver=approve_all())
    print(result.status, result.run_id)
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    print("otel-modules", len(loaded))
"""
)


def console_spans(text: str) -> list[dict[str, Any]]:
    """The console exporter's output: one JSON object per span."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (start := text.find("{", at)) != -1:
        obj, at = decoder.raw_decode(text, start)
        found.append(obj)
    return found


def test_console_exporter_from_otel_variables_prints_the_spans() -> None:
    done = run_script(SCRIPT, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="planlock-test")
    assert done.returncode == 0, done.stderr
    status, run_id = done.stdout.split()[:2]
    assert status == "succeeded"
    assert "{" not in done.stdout  # spans go to stderr: a command's --json output stays clean
    spans = console_spans(done.stderr)
    names = sorted(s["name"] for s in spans)
    assert names == sorted(
        ["plan", "chat scripted", "invoke_workflow", "execute_tool lookup", "execute_tool lookup"]
    )
    by_id = {s["context"]["span_id"]: s for s in spans}
    (workflow,) = [s for s in spans if s["name"] == "invoke_workflow"]
    assert workflow["parent_id"] is None
    assert workflow["attributes"]["planlock.run_id"] == run_id
    assert len(workflow["attributes"]["planlock.plan_hash"]) == 64
    assert workflow["resource"]["attributes"]["service.name"] == "planlock-test"
    for s in spans:
        if s["name"].startswith("execute_tool"):
            assert by_id[s["parent_id"]] is workflow
            assert s["attributes"]["gen_ai.tool.name"] == "lookup"
        if s["name"] == "chat scripted":
            assert by_id[s["parent_id"]]["name"] == "plan"
            assert s["kind"] == "SpanKind.CLIENT"
    events = [e["name"] for e in workflow["events"]]
    assert "planlock.approval_granted" in events


def test_without_a_tracer_nothing_of_opentelemetry_is_imported() -> None:
    done = run_script(
        SCRIPT + "\nprint('noop', planlock.telemetry.tracer() is None)",
    )
    assert done.returncode == 0, done.stderr
    assert "otel-modules 0" in done.stdout
    assert "noop True" in done.stdout
    assert done.stderr == ""


def test_an_exporter_that_is_not_installed_is_reported_and_the_run_goes_on() -> None:
    # planlock logs it (the library's loggers stay silent until the application configures
    # logging, as the CLI's -v does); the script configures logging like an application would.
    configured = SCRIPT.replace(
        "import sys\n", "import sys\nimport logging\nlogging.basicConfig()\n", 1
    )
    done = run_script(configured, OTEL_TRACES_EXPORTER="no-such-exporter")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("succeeded")
    assert "could not be configured" in done.stderr
    assert "no-such-exporter" in done.stderr


async def test_each_item_of_a_for_each_step_is_its_own_tool_call(
    exporter: InMemorySpanExporter,
) -> None:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def names() -> list[str]:
        return ["x", "y", "z"]

    @reg.tool(effect="read")
    def upper(name: str) -> str:
        return name.upper()

    plan = Plan.parse(
        [
            {"step": "1", "tool": "names"},
            {
                "step": "2",
                "tool": "upper",
                "for_each": "{{steps.1.output}}",
                "max_items": 5,
                "args": {"name": "{{item}}"},
            },
        ]
    )
    assert (await run(plan, reg)).ok
    calls = [dict(s.attributes or {}) for s in spans_by_name(exporter)["execute_tool upper"]]
    assert sorted(str(c["gen_ai.tool.call.id"]) for c in calls) == ["2#0", "2#1", "2#2"]
    assert sorted(int(c["planlock.item"]) for c in calls) == [0, 1, 2]  # type: ignore[arg-type]


def test_the_cli_traces_to_stderr_and_keeps_json_on_stdout(tmp_path: Path) -> None:
    root = Path(SRC).parent
    cli = """
import sys
from planlock.cli import main
sys.argv = ["planlock", *sys.argv[1:]]
main()
"""
    user = '{"account_id": "A-1001", "email": "dana@example.com"}'
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PLANLOCK_"))}
    args = ["run", str(root / "examples" / "seed_plan.json"), "--tools", "planlock.demo:registry"]
    args += ["--approve", "all", "--json", "--input", f"user={user}"]
    args += ["--journal", str(tmp_path / "j.db")]
    done = subprocess.run(
        [sys.executable, "-c", cli, *args],
        env=clean | {"PYTHONPATH": SRC, "OTEL_TRACES_EXPORTER": "console"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    spans = console_spans(done.stderr[done.stderr.find("{") :])
    assert sorted(s["name"] for s in spans) == [
        "execute_tool fetch_account",
        "execute_tool search_knowledge_base",
        "execute_tool send_email",
        "invoke_workflow",
    ]


def test_a_queue_worker_runs_a_claimed_run_in_its_workflow_span(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    from planlock import demo
    from planlock.queue._queue import ApprovalQueue

    registry = demo.build_registry(demo.HelpDesk.sample())
    queue = ApprovalQueue(Journal.open(tmp_path / "q.db"))

    async def go() -> int:
        sub = await queue.submit(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, by="sam")
        assert sub.approval_id is not None
        queue.decide(sub.approval_id, approve=True, by="alice", reason="ok")
        return await queue.work(registry, "w1", once=True, poll=0.01)

    assert anyio.run(go) == 1
    spans = spans_by_name(exporter)
    (workflow,) = spans["invoke_workflow"]
    tool_spans = [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool ")]
    assert len(tool_spans) == len(demo.PLAN["steps"])
    assert all(parent_of(s, exporter) is workflow for s in tool_spans)
    assert dict(workflow.attributes or {})["planlock.status"] == "succeeded"
