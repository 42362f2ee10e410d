"""The LLM backend protocol: chat messages in, text (or JSON text) out, with usage.

One method. Backends for OpenAI, Anthropic and an embedded local model plug in here; tests use
``planlock.testing.ScriptedLLM``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["LLM", "LLMReply", "LLMRequest", "Message", "Phase", "Progress", "ProgressCallback"]

Phase = Literal["loading", "reading", "writing", "repairing", "done"]
"""Where a call is: loading the model, reading the prompt, writing the reply, writing a repair
(set by the planner), done."""


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
    timeout_s: float | None = None
    """Wall-time limit of the call; past it the reply is cut off (``LLMCutOff``, ``timeout``)."""
    on_progress: ProgressCallback | None = field(default=None, compare=False, repr=False)
    """Called (in the caller's event loop) as the call progresses; backends that cannot say
    more report at least the phase and, when done, the usage."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a model call has got."""

    phase: Phase
    elapsed_s: float
    """Since the call started (model loading included)."""
    tokens: int | None = None
    """Reply tokens so far (None: the backend does not say until it is done)."""
    tokens_per_s: float | None = None
    """Reply tokens per second of writing."""
    prompt_tokens: int | None = None
    """The prompt's length in tokens, when known."""
    prompt_done: int | None = None
    """Prompt tokens read so far (cached ones included), while reading."""
    attempt: int | None = None
    """The planner's attempt (set by the planner)."""
    finish_reason: str | None = None
    """When done: ``stop``, or why the reply stopped early (``length``, ``timeout``,
    ``repetition``; ``error`` when the call failed)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"phase": self.phase, "elapsed_s": round(self.elapsed_s, 2)}
        for key in ("tokens", "prompt_tokens", "prompt_done", "attempt", "finish_reason"):
            if (value := getattr(self, key)) is not None:
                data[key] = value
        if self.tokens_per_s is not None:
            data["tokens_per_s"] = round(self.tokens_per_s, 2)
        return data


ProgressCallback = Callable[[Progress], None]


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
