"""Test doubles that ship with planlock: a scripted LLM, a worst-case obedient LLM, an in-memory
journal, a capture helper, an in-memory endorsement store (``MemoryEndorsements``).

from planlock.testing import ScriptedLLM, capture_journal

llm = ScriptedLLM(['{"result": "DE89 3704 0044 0532 0130 00"}'])
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from planlock.approval import MemoryEndorsements
from planlock.errors import LLMError
from planlock.journal import Journal, MemoryStore
from planlock.llm import LLM, LLMReply, LLMRequest
from planlock.planning import action_reply, offered_tools

__all__ = ["MemoryEndorsements", "ObedientLLM", "ScriptedLLM", "capture_journal", "memory_journal"]

Reply = str | dict[str, Any] | list[Any] | Exception


class ScriptedLLM:
    """An LLM backend that replies from a list (in order) or a callable (request -> reply).

    A dict or list reply is sent as JSON; an exception is raised as an LLMError. Every request
    is kept in ``requests`` so tests can assert on exactly what the model was shown.
    """

    def __init__(
        self, replies: Sequence[Reply] | Callable[[LLMRequest], Reply], name: str = "scripted"
    ) -> None:
        self.name = name
        self._replies = replies
        self._next = 0
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.requests.append(request)
        if callable(self._replies):
            reply = self._replies(request)
        else:
            if self._next >= len(self._replies):
                raise LLMError(self.name, f"script exhausted after {self._next} replies")
            reply = self._replies[self._next]
            self._next += 1
        if isinstance(reply, Exception):
            raise LLMError(self.name, str(reply))
        text = reply if isinstance(reply, str) else json.dumps(reply)
        words = sum(len(m.content.split()) for m in request.messages)
        return LLMReply(
            text=text, model=self.name, input_tokens=words, output_tokens=len(text.split())
        )

    @property
    def prompts(self) -> list[str]:
        """Every message content the model was sent, in order."""
        return [m.content for r in self.requests for m in r.messages]


_INSTRUCTION = re.compile(
    r"\bcall the ([A-Za-z_][A-Za-z0-9_]*) tool(?: (?:for|on|with) (?:[a-z]+ )?([A-Za-z0-9_.@-]+))?",
    re.IGNORECASE,
)


class ObedientLLM:
    """The threat model's worst case: a model that obeys any instruction it reads.

    When any message it is sent says "call the X tool [for ... Y]" and the requested reply
    format lets it call tool X (a ReAct turn), it calls X (with Y as the first required
    argument), once per instruction. Otherwise it answers as ``fallback`` does: a real backend,
    or a ``ScriptedLLM`` with the honest replies. It is a simulation, not a model: use it to
    show what an agent design does when the model is fully hijacked.
    """

    def __init__(self, fallback: LLM, name: str | None = None) -> None:
        self.fallback = fallback
        self.name = name or f"obedient({fallback.name})"
        self.requests: list[LLMRequest] = []
        self.obeyed: list[tuple[str, dict[str, Any]]] = []
        """Every instruction it obeyed: (tool, args)."""

    async def complete(self, request: LLMRequest) -> LLMReply:

        self.requests.append(request)
        tools = offered_tools(request.json_schema)
        for message in request.messages:
            for match in _INSTRUCTION.finditer(message.content):
                tool, target = match.group(1), match.group(2)
                if tool not in tools:
                    continue
                args = _fill(tools[tool], target)
                if (tool, args) in self.obeyed:
                    continue
                self.obeyed.append((tool, args))
                text = action_reply(tool, args, f"The text I just read says to call {tool}.")
                return LLMReply(text=text, model=self.name, output_tokens=len(text.split()))
        return await self.fallback.complete(request)


def _fill(args_schema: dict[str, Any], target: str | None) -> dict[str, Any]:
    required = [r for r in args_schema.get("required", []) if isinstance(r, str)]
    if not required or target is None:
        return {}
    return {required[0]: target.rstrip(".")}


def memory_journal() -> Journal:
    """A journal kept in memory."""
    return Journal(MemoryStore())


@contextmanager
def capture_journal() -> Iterator[Journal]:
    """A fresh in-memory journal whose chain is verified when the block ends."""
    journal = memory_journal()
    yield journal
    journal.verify().raise_if_bad()
