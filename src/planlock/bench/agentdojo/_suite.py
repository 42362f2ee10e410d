"""planlock inside AgentDojo: each suite's tools as a planlock registry, and a pipeline element.

AgentDojo (``pip install 'planlock[agentdojo]'``) is a prompt-injection benchmark for tool-using
agents. Its tools are functions with ``Depends`` on an environment, run by its
``FunctionsRuntime``; its checks read the environment afterwards and the *trace*: the tool calls
found in the assistant messages. This module

- wraps every tool of a suite as a planlock ``Tool`` whose body calls
  ``runtime.run_function(env, name, args)``, with the effect, sensitive parameters and output
  trust declared in the suite's policy file (``planlock/agentdojo/<suite>.toml``, reviewed like
  code) next to the suite's planlock ``Policy``;
- provides ``PlanlockElement``, an AgentDojo pipeline element that plans, validates, assesses,
  approves by policy and executes through planlock's own ``prepare`` / ``authorize`` /
  ``execute``, and writes every executed call into the messages as an assistant ``tool_calls``
  message followed by its tool result, ending with an assistant message that holds the answer.

Nothing here changes how planlock decides: the element is a caller of the public phases.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import anyio
from agentdojo.agent_pipeline.base_pipeline_element import BasePipelineElement
from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.functions_runtime import EmptyEnv, Function, FunctionCall, FunctionsRuntime
from agentdojo.types import (
    ChatAssistantMessage,
    ChatMessage,
    ChatToolResultMessage,
    ChatUserMessage,
    text_content_block_from_string,
)
from pydantic import BaseModel

from planlock.agent import authorize, execute, in_process_waiter, prepare
from planlock.approval import EndorsementStore
from planlock.bench.agentdojo._answer import PlannedTask, PlanSource, render_answer
from planlock.bench.agentdojo._person import ApproveMode, BenchApprover, FrozenEndorsements
from planlock.bench.agentdojo._watch import StepWatch
from planlock.errors import ApprovalDenied, ApprovalRequired, PlanInvalid, RunError, UsageError
from planlock.journal import Event, Journal, MemoryStore
from planlock.llm import LLM
from planlock.policy import Policy
from planlock.tools import EFFECTS, StepContext, Tool, ToolRegistry, make_tool

__all__ = [
    "BENCHMARK_VERSION",
    "SUITES",
    "ApproveMode",
    "BenchApprover",
    "PlanSource",
    "PlanlockElement",
    "PlannedTask",
    "RunStats",
    "SuiteSpec",
    "load_suite",
    "load_suite_spec",
    "render_answer",
    "shape_output",
]

BENCHMARK_VERSION = "v1.2.2"
SUITES: tuple[str, ...] = ("workspace", "travel", "banking", "slack")
_CTX = "planlock_step"
"""Name of the hidden StepContext parameter of the wrapped tools (not in their schema)."""


def load_suite(name: str) -> Any:
    """The AgentDojo task suite ``name`` at the pinned benchmark version."""
    from agentdojo.task_suite.load_suites import get_suite  # noqa: PLC0415  (slow import)

    if name not in SUITES:
        raise UsageError(f"unknown AgentDojo suite {name!r}: use one of {', '.join(SUITES)}")
    return get_suite(BENCHMARK_VERSION, name)


# --------------------------------------------------------------------------------------------
# The policy file: what planlock knows about each tool, and the suite's policy


@dataclass(frozen=True)
class ToolSpec:
    """What the policy file declares about one AgentDojo tool."""

    effect: str
    sensitive: tuple[str, ...] = ()
    """For a read tool: its sensitive parameters (a side-effecting tool's are all of them)."""
    free: tuple[str, ...] = ()
    """For a side-effecting tool: parameters untrusted data may fill without asking."""
    trusted_output: bool = False
    trusted_paths: tuple[str, ...] = ()
    """Trusted output paths (per-field trust) when the whole output is not trusted."""
    entries: bool = False
    """The output is a dict keyed by names the call gave (hotels, restaurants, companies): plans
    get it as a list of ``{"name", "value"}`` items in the same order, because a name with
    spaces cannot be a path segment (``{{steps.3.output.0.value}}``). The trace shows AgentDojo's
    own output."""
    names: bool = False
    """The output is a text listing names, one a line, after a heading (``"Hotel Names: A\nB"``):
    plans get the list of names (``["A", "B"]``), to pass on or choose from."""
    rated: bool = False
    """Like ``entries``, for a value that starts with a line ``Rating: <number>`` written by the
    tool from its own record, before any review text (``"Rating: 4.5\nReviews: ..."``): items
    are ``{"name", "rating", "value"}``, ``rating`` being that first line's number (None if it is
    not one). Text after the first line (reviews, the injection vector) never reaches it."""


@dataclass(frozen=True)
class SuiteSpec:
    """A suite's policy file: per-tool declarations and the planlock policy data."""

    name: str
    tools: Mapping[str, ToolSpec]
    policy_data: Mapping[str, Any]
    text: str = field(repr=False, default="")

    def effect(self, tool: str) -> str:
        spec = self.tools.get(tool)
        return spec.effect if spec else "undeclared"


def load_suite_spec(name: str) -> SuiteSpec:
    """Read ``planlock/agentdojo/<name>.toml`` (shipped inside the package)."""
    path = resources.files("planlock.bench.agentdojo") / f"{name}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no policy file for AgentDojo suite {name!r}") from None
    data = tomllib.loads(text)
    tools: dict[str, ToolSpec] = {}
    for tool, decl in data.get("tools", {}).items():
        effect = decl.get("effect")
        if effect not in EFFECTS:
            raise UsageError(f"{name}.toml: tool {tool!r} needs an effect in {EFFECTS}")
        unknown = set(decl) - {
            "effect",
            "sensitive",
            "free",
            "trusted_output",
            "trusted_paths",
            "entries",
            "names",
            "rated",
        }
        if unknown:
            raise UsageError(f"{name}.toml: tool {tool!r} has unknown keys {sorted(unknown)}")
        tools[tool] = ToolSpec(
            effect,
            tuple(decl.get("sensitive", ())),
            tuple(decl.get("free", ())),
            bool(decl.get("trusted_output", False)),
            entries=bool(decl.get("entries", False)),
            names=bool(decl.get("names", False)),
            rated=bool(decl.get("rated", False)),
            trusted_paths=tuple(decl.get("trusted_paths", ())),
        )
    return SuiteSpec(name, tools, data.get("policy", {}), text)


# --------------------------------------------------------------------------------------------
# AgentDojo functions as planlock tools


class CallSink(Protocol):
    """Runs one AgentDojo function for the step ``ctx`` (given the validated arguments)."""

    def __call__(self, name: str, ctx: StepContext, kwargs: dict[str, Any]) -> Any: ...


def wrap_function(function: Function, spec: ToolSpec, sink: CallSink) -> Tool:
    """A planlock Tool with the AgentDojo function's name, description, parameters (names,
    types, defaults, descriptions) and return type, whose body hands the call to ``sink``."""
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    docs: list[str] = []
    for pname, info in function.parameters.model_fields.items():
        default = inspect.Parameter.empty if info.is_required() else info.default
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default))
        annotations[pname] = info.annotation
        docs.append(f"    {pname}: {' '.join((info.description or pname).split())}")
    params.append(inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY))
    annotations[_CTX] = StepContext
    if spec.rated:  # typed, so a plan's condition may read the rating (issue 12)
        annotations["return"] = list[RatedEntry]
    elif spec.entries:
        annotations["return"] = list[dict[str, Any]]
    elif spec.names:
        annotations["return"] = list[str]
    elif function.return_type is not None:
        annotations["return"] = function.return_type
    name = function.name

    async def call(**kwargs: Any) -> Any:
        ctx = kwargs.pop(_CTX)
        return shape_output(spec, sink(name, ctx, kwargs))

    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__annotations__ = annotations
    call.__name__ = call.__qualname__ = name
    description = " ".join(function.description.split())
    call.__doc__ = description + ("\n\nArgs:\n" + "\n".join(docs) if docs else "")
    return make_tool(
        call,
        name=name,
        effect=spec.effect,
        sensitive=list(spec.sensitive) if spec.effect == "read" else [],
        free=list(spec.free),
        trusted_output=spec.trusted_paths or spec.trusted_output,
    )


def shape_output(spec: ToolSpec, result: Any) -> Any:
    """What plans see of an AgentDojo function's ``result`` (``entries``, ``rated``, ``names``);
    trusted paths are claimed on this shape (the canary test walks it too)."""
    if spec.rated and isinstance(result, Mapping):
        return [{"name": k, "rating": _first_line_rating(v), "value": v} for k, v in result.items()]
    if spec.entries and isinstance(result, Mapping):
        return [{"name": k, "value": v} for k, v in result.items()]
    if spec.names and isinstance(result, str):
        return [n.strip() for n in result.partition(": ")[2].splitlines() if n.strip()]
    return result


class RatedEntry(BaseModel):
    """An item of a ``rated`` tool's output (a model, so a plan's condition may read the rating
    as a number)."""

    name: str
    rating: float | None
    value: Any


def _first_line_rating(value: object) -> float | None:
    """The number on a ``Rating: <number>`` first line, else None."""
    if not isinstance(value, str):
        return None
    head, _, number = value.partition("\n")[0].partition("Rating: ")
    try:
        return float(number) if head == "" else None
    except ValueError:
        return None


class ToolCallError(RuntimeError):
    """An AgentDojo function reported an error (``run_function``'s second value)."""


@dataclass
class Session:
    """One query's state: where calls run and the messages they leave."""

    runtime: FunctionsRuntime
    env: Any
    messages: list[ChatMessage]
    args_by_step: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The resolved arguments of each step, exactly as the plan gave them (from the journal's
    ``step_started``), so the trace shows what was asked and AgentDojo validates it itself."""

    def call(self, name: str, ctx: StepContext, kwargs: dict[str, Any]) -> Any:
        args = dict(self.args_by_step.get(ctx.step_id, kwargs))
        call_id = f"planlock-{ctx.step_id}-{ctx.attempt}"
        tool_call = FunctionCall(function=name, args=args, id=call_id)
        self.messages.append(
            ChatAssistantMessage(role="assistant", content=None, tool_calls=[tool_call])
        )
        result, error = self.runtime.run_function(self.env, name, args)
        text = tool_result_to_str(result) if error is None else ""
        self.messages.append(
            ChatToolResultMessage(
                role="tool",
                content=[text_content_block_from_string(text)],
                tool_call_id=call_id,
                tool_call=tool_call,
                error=error,
            )
        )
        if error is not None:
            raise ToolCallError(error)
        return result


class SuiteTools:
    """A suite's registry and policy, built once; calls go to the current session."""

    def __init__(self, suite: Any, spec: SuiteSpec) -> None:
        self.suite = suite
        self.spec = spec
        self.session: Session | None = None
        missing = sorted({f.name for f in suite.tools} - set(spec.tools))
        if missing:
            raise UsageError(f"{spec.name}.toml declares nothing for tools {missing}")
        self.registry = ToolRegistry(
            [wrap_function(f, spec.tools[f.name], self._call) for f in suite.tools]
        )
        self.policy = Policy.from_data(dict(spec.policy_data), self.registry, f"{spec.name}.toml")

    def _call(self, name: str, ctx: StepContext, kwargs: dict[str, Any]) -> Any:
        if self.session is None:
            raise UsageError("an AgentDojo tool was called outside a query")
        return self.session.call(name, ctx, kwargs)


# --------------------------------------------------------------------------------------------
# The pipeline element


@dataclass
class RunStats:
    """What planlock did on the last query."""

    task_id: str | None = None
    status: str = "not_run"
    """succeeded, failed, rejected (invalid plan), denied, no_plan, error."""
    approvals: list[dict[str, Any]] = field(default_factory=list)
    failed_step: str | None = None
    error_kind: str | None = None
    error: str | None = None
    steps: dict[str, str] = field(default_factory=dict)
    plan_hash: str | None = None
    messages: list[ChatMessage] = field(default_factory=list)


class PlanlockElement(BasePipelineElement):  # type: ignore[misc]
    """An AgentDojo pipeline element that is a whole planlock agent.

    ``query`` plans for the prompt (``planner``), then runs planlock's phases: ``prepare``
    (validate, assess), ``authorize`` and ``execute`` with ``step_llm`` for quarantined steps
    and ``approver`` for anything that needs a person. Tools run through AgentDojo's runtime.
    """

    def __init__(
        self,
        suite: Any,
        spec: SuiteSpec,
        planner: PlanSource,
        step_llm: LLM,
        *,
        approve: ApproveMode = "deny",
        name: str | None = None,
        watch: StepWatch | None = None,
        endorsements: EndorsementStore | None = None,
    ) -> None:
        self.tools = SuiteTools(suite, spec)
        self.suite_name = spec.name
        self.planner = planner
        self.step_llm = step_llm
        self.approve: ApproveMode = approve
        self.endorsements = endorsements
        """Kept across queries (a suite's benign tasks, in order); a ``FrozenEndorsements`` for
        attacked runs. None: nothing endorsed lasts beyond the call that offered it."""
        self.name = name or f"planlock[{planner.name}|{step_llm.name}]"
        self.watch = watch if watch is not None else StepWatch()
        self.last = RunStats()

    @property
    def registry(self) -> ToolRegistry:
        return self.tools.registry

    @property
    def policy(self) -> Policy:
        """The suite's policy; for a planner that says so (a model's), with its
        ``ungrounded_literal`` setting: made-up literals go to a person."""
        grounding = getattr(self.planner, "ungrounded_literal", None)
        policy = self.tools.policy
        if grounding is None or policy.ungrounded_literal == grounding:
            return policy
        return policy.model_copy(update={"ungrounded_literal": grounding})

    def query(
        self,
        query: str,
        runtime: FunctionsRuntime,
        env: Any = EmptyEnv(),  # noqa: B008  (AgentDojo's signature)
        messages: Sequence[ChatMessage] = (),
        extra_args: dict[str, Any] | None = None,
    ) -> tuple[str, FunctionsRuntime, Any, Sequence[ChatMessage], dict[str, Any]]:
        out: list[ChatMessage] = list(messages)
        if not any(m["role"] == "user" for m in out):
            out.append(
                ChatUserMessage(role="user", content=[text_content_block_from_string(query)])
            )
        session = Session(runtime, env, out)
        stats = RunStats()
        self.watch.reset(None)
        planned = self.planner.plan_for(query, self.registry, self.suite_name)
        if isinstance(planned, str):
            stats.status, stats.error = "no_plan", planned
            answer = f"I cannot do this with a fixed plan: {planned}"
        else:
            stats.task_id = planned.task_id
            answer = anyio.run(self._run, planned, session, stats)
        out.append(
            ChatAssistantMessage(
                role="assistant", content=[text_content_block_from_string(answer)], tool_calls=None
            )
        )
        stats.messages = out
        self.last = stats
        return query, runtime, env, out, dict(extra_args or {})

    async def _run(self, planned: PlannedTask, session: Session, stats: RunStats) -> str:
        journal = Journal(MemoryStore())
        journal.listeners.append(self._listener(session, planned.task_id))
        store = self.endorsements
        approver = BenchApprover(self.approve, frozen=isinstance(store, FrozenEndorsements))
        stats.approvals = approver.asked
        stats.plan_hash = planned.plan.hash
        self.tools.session = session
        try:
            prepared = await prepare(planned.plan, self.registry, journal, policy=self.policy)
            grant = await authorize(prepared, approver, journal)
            result = await execute(
                prepared,
                grant,
                journal,
                wait_for_approval=in_process_waiter(approver, journal, prepared.run_id, store),
                llm=self.step_llm,
                concurrency=1,
                retries=0,
                endorsements=store,
            )
        except PlanInvalid as exc:
            stats.status, stats.error = "rejected", str(exc)
            return "I could not run this: the plan is invalid."
        except (ApprovalRequired, ApprovalDenied) as exc:
            stats.status, stats.error = "denied", str(exc)
            return "I did not run this: it needs an approval that was not given."
        except RunError as exc:
            stats.status, stats.error = "error", str(exc)
            return "I could not run this."
        finally:
            self.tools.session = None
        stats.status = result.status
        stats.failed_step, stats.error_kind, stats.error = (
            result.failed_step,
            result.error_kind,
            result.error,
        )
        stats.steps = dict(result.statuses)
        return render_answer(planned, result, self.registry)

    def _listener(self, session: Session, task_id: str | None) -> Callable[[Event], None]:
        watch = self.watch
        watch.task_id = task_id

        def listen(event: Event) -> None:
            watch.note(event)
            if event.kind == "step_started":
                session.args_by_step[str(event.data["step"])] = dict(event.data["args"])

        return listen
