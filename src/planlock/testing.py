"""Test doubles that ship with planlock: a scripted LLM, an in-memory journal, a capture helper.

from planlock.testing import ScriptedLLM, capture_journal

llm = ScriptedLLM(['{"result": "DE89 3704 0044 0532 0130 00"}'])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from planlock._errors import LLMError
from planlock._journal import Journal, MemoryStore
from planlock._llm import LLMReply, LLMRequest

__all__ = ["ScriptedLLM", "capture_journal", "memory_journal"]

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


def memory_journal() -> Journal:
    """A journal kept in memory."""
    return Journal(MemoryStore())


@contextmanager
def capture_journal() -> Iterator[Journal]:
    """A fresh in-memory journal whose chain is verified when the block ends."""
    journal = memory_journal()
    yield journal
    journal.verify().raise_if_bad()
