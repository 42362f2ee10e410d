"""Test doubles that ship with planlock: a scripted LLM, a worst-case obedient LLM, an in-memory
journal, a capture helper, an in-memory endorsement store (``MemoryEndorsements``).

from planlock.testing import ScriptedLLM, capture_journal

llm = ScriptedLLM(['{"result": "DE89 3704 0044 0532 0130 00"}'])

A scripted reply may also be ``Streamed``: sent piece by piece through the same bounded decoding
as the embedded model (token limit, time limit, repetition check, progress reports), so a reply
that is cut off or loops can be scripted: ``Streamed('{"steps": [', finish_reason="length")``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from planlock.approval import MemoryEndorsements
from planlock.errors import LLMError
from planlock.journal import Journal, MemoryStore
from planlock.llm import LLM, LLMReply, LLMRequest, Meter
from planlock.planning import action_reply, offered_tools

__all__ = [
    "MemoryEndorsements",
    "ObedientLLM",
    "ScriptedLLM",
    "Streamed",
    "capture_journal",
    "memory_journal",
]


@dataclass(frozen=True)
class Streamed:
    """A scripted reply sent as a stream of tokens, under the request's limits.

    ``text`` is split into tokens of ``chars_per_token`` characters (a dict or list is sent as
    JSON); one is sent every ``delay_s`` seconds. The request's ``max_tokens`` cuts it off
    (``length``), its ``timeout_s`` stops it (``timeout``), and degenerate repetition stops it
    (``repetition``), each an ``LLMCutOff`` carrying what was sent. ``finish_reason="length"``
    makes a reply that ends as if the token limit was hit right after ``text``.
    """

    text: str | dict[str, Any] | list[Any]
    finish_reason: str = "stop"
    chars_per_token: int = 4
    delay_s: float = 0.0
    prompt_tokens: int = 100


Reply = str | dict[str, Any] | list[Any] | Exception | Streamed


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
        if isinstance(reply, Streamed):
            return await self._stream(request, reply)
        text = reply if isinstance(reply, str) else json.dumps(reply)
        words = sum(len(m.content.split()) for m in request.messages)
        return LLMReply(
            text=text, model=self.name, input_tokens=words, output_tokens=len(text.split())
        )

    async def _stream(self, request: LLMRequest, reply: Streamed) -> LLMReply:
        limit = request.max_tokens or 1024
        meter = Meter(self.name, request, max_tokens=limit)
        meter.prompt(reply.prompt_tokens, 0)
        meter.report(force=True)
        text = reply.text if isinstance(reply.text, str) else json.dumps(reply.text)
        size = max(1, reply.chars_per_token)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        finish = reply.finish_reason
        for n, piece in enumerate(pieces, 1):
            if reply.delay_s:
                await anyio.sleep(reply.delay_s)
            if meter.feed(piece):
                break
            meter.report()
            if n >= limit and n < len(pieces):
                finish = "length"
                break
        meter.check_time()
        meter.finish(reason=finish)
        if meter.stop_reason is not None or finish != "stop":
            raise meter.cut_off(meter.stop_reason or finish, input_tokens=reply.prompt_tokens)
        return LLMReply(
            text=text,
            model=self.name,
            input_tokens=reply.prompt_tokens,
            output_tokens=meter.tokens,
            latency_s=meter.elapsed_s,
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
