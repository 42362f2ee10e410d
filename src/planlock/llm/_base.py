"""The LLM backend protocol: chat messages in, text (or JSON text) out, with usage.

One method. Backends for OpenAI, Anthropic and an embedded local model plug in here; tests use
``planlock.testing.ScriptedLLM``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["LLM", "LLMReply", "LLMRequest", "Message"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """What a backend is asked."""

    messages: tuple[Message, ...]
    """The conversation, system message first."""
    purpose: str
    """Why the call is made (``plan``, ``quarantined_step``, ...); journaled with it."""
    json_schema: dict[str, Any] | None = None
    """When set, the reply must be JSON valid against this schema."""
    max_tokens: int | None = None
    temperature: float | None = None
    """Sampling temperature; None leaves it to the backend (planlock's backends default to 0)."""


@dataclass(frozen=True, slots=True)
class LLMReply:
    """What a backend answered."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LLM(Protocol):
    """An LLM backend."""

    name: str
    """Backend and model, e.g. ``openai:gpt-4.1``; named in errors and the journal."""

    async def complete(self, request: LLMRequest) -> LLMReply:
        """Answer the request; raise ``LLMError`` on failure."""
        ...
