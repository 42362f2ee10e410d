"""The ReAct baseline on AgentDojo, driven by the same worst-case model.

planlock's own ReAct loop (``planlock.planning.react``) over the same registry and runtime, with a
scripted model that is as capable as the oracle and as obedient as the worst case: it makes the
user task's ground-truth calls one per turn and ends with the ground-truth answer, but once any
message it was shown holds injected text, it first makes the injection task's ground-truth calls
(what the attacker asked for). This is what the same tasks and attacks do to an agent whose model
picks each next tool after reading tool outputs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from agentdojo.functions_runtime import EmptyEnv, FunctionsRuntime
from agentdojo.types import (
    ChatAssistantMessage,
    ChatMessage,
    ChatUserMessage,
    text_content_block_from_string,
)

from planlock.bench.agentdojo._checks import AttackInfo
from planlock.bench.agentdojo._suite import Session, SuiteSpec, SuiteTools
from planlock.bench.agentdojo._taint import holds_injection
from planlock.journal import Event, Journal, MemoryStore
from planlock.llm import LLMReply, LLMRequest
from planlock.planning import action_reply, react

__all__ = ["ReactBaseline", "ScriptedWorstReact"]


@dataclass
class ScriptedWorstReact:
    """A ReAct model: the user's ground truth, hijacked by any injected text it reads."""

    user_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    injection_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answer: str = "Done."
    attack: AttackInfo | None = None
    hijacked: int = 0
    name: str = "worst-case-react"

    async def complete(self, request: LLMRequest) -> LLMReply:
        if self.attack is not None and self.injection_calls and self._injected(request):
            tool, args = self.injection_calls.pop(0)
            self.hijacked += 1
            return LLMReply(action_reply(tool, args, "The data says to do this first."), self.name)
        if self.user_calls:
            tool, args = self.user_calls.pop(0)
            return LLMReply(action_reply(tool, args, "Next step of the task."), self.name)
        text = '{"thought": "done", "final_answer": ' + _json(self.answer) + "}"
        return LLMReply(text, self.name)

    def _injected(self, request: LLMRequest) -> bool:
        # Where the harness put the injection, not whether its wording is recognisable.
        assert self.attack is not None
        seen = [_observed(m.content) for m in request.messages[2:]]
        return holds_injection(seen, self.attack.needles)


def _observed(content: str) -> Any:
    """A tool's output as the ReAct loop showed it (``Result of <tool>: <JSON>``), decoded, so
    that the injected text is compared as placed, not JSON-escaped; other turns as they are."""
    head, sep, rest = content.partition(": ")
    if sep and head.startswith("Result of "):
        with contextlib.suppress(ValueError):
            return json.loads(rest)
    return content


def _json(text: str) -> str:
    return json.dumps(text)


class ReactBaseline:
    """An AgentDojo pipeline element: planlock's ReAct loop with ``ScriptedWorstReact``.

    The runner sets ``user_task``, ``injection_task`` and ``model.attack`` before each pair.
    """

    def __init__(self, suite: Any, spec: SuiteSpec) -> None:
        self.tools = SuiteTools(suite, spec)
        self.name = "react-baseline[worst-case]"
        self.model = ScriptedWorstReact()
        self.user_task: Any = None
        self.injection_task: Any = None
        self.last_messages: list[ChatMessage] = []

    def query(
        self,
        query: str,
        runtime: FunctionsRuntime,
        env: Any = EmptyEnv(),  # noqa: B008  (AgentDojo's signature)
        messages: Sequence[ChatMessage] = (),
        extra_args: dict[str, Any] | None = None,
    ) -> tuple[str, FunctionsRuntime, Any, Sequence[ChatMessage], dict[str, Any]]:
        out: list[ChatMessage] = list(messages)
        out.append(ChatUserMessage(role="user", content=[text_content_block_from_string(query)]))
        model = self.model
        model.user_calls = _calls(self.user_task.ground_truth(env.model_copy(deep=True)))
        model.answer = self.user_task.GROUND_TRUTH_OUTPUT or "Done."
        model.injection_calls = (
            _calls(self.injection_task.ground_truth(env.model_copy(deep=True)))
            if self.injection_task is not None
            else []
        )
        session = Session(runtime, env, out)
        journal = Journal(MemoryStore())

        def listen(event: Event) -> None:
            if event.kind == "step_started":
                session.args_by_step[str(event.data["step"])] = dict(event.data["args"])

        journal.listeners.append(listen)
        turns = len(model.user_calls) + len(model.injection_calls) + 3
        self.tools.session = session
        try:

            async def go() -> Any:
                return await react(
                    query, self.tools.registry, model, max_turns=turns, journal=journal
                )

            result = anyio.run(go)
        finally:
            self.tools.session = None
        answer = result.final_answer or "I could not finish."
        out.append(
            ChatAssistantMessage(
                role="assistant", content=[text_content_block_from_string(answer)], tool_calls=None
            )
        )
        self.last_messages = out
        return query, runtime, env, out, dict(extra_args or {})


def _calls(calls: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function, dict(c.args)) for c in calls]
