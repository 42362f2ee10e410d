"""The ``anthropic`` backend: the official ``anthropic`` SDK, Messages API.

Structured output is a forced tool call: the request offers one tool, ``answer``, whose
``input_schema`` is the requested JSON Schema, and ``tool_choice`` forces it; the tool call's
input is the reply. The key comes from ``api_key`` or ``$ANTHROPIC_API_KEY``. A reply cut at
``max_tokens``, one that ended otherwise than asked (no answer tool call), and a call past the
request's ``timeout_s`` are ``LLMCutOff``; progress reports
the phase and, when done, the usage.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from typing import Any

import anyio

from planlock.errors import LLMError
from planlock.llm._base import LLMReply, LLMRequest
from planlock.llm._stream import Meter

__all__ = ["AnthropicLLM"]

ANSWER_TOOL = "answer"


class AnthropicLLM:
    """An Anthropic (Claude) model."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_tokens: int = 1024,
        temperature: float | None = None,
        client: Any = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.name = f"anthropic:{model}" + (f"@{base_url}" if base_url else "")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._options: dict[str, Any] = {}
        if client is None:
            if importlib.util.find_spec("anthropic") is None:
                msg = "the anthropic backend needs its SDK: pip install 'planlock[anthropic]'"
                raise LLMError(self.name, msg) from None
            key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if key is None:
                raise LLMError(self.name, "no API key: set ANTHROPIC_API_KEY")
            self._options = {
                "api_key": key,
                "base_url": base_url,
                "timeout": timeout,
                "max_retries": max_retries,
            }
        self.client = client
        """An SDK client given by the caller (used as is); else one is made for each call."""

    def build_request(self, request: LLMRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if system:
            body["system"] = system
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            body["extra_body"] = {"temperature": temperature}
        if request.json_schema is not None:
            body["tools"] = [
                {
                    "name": ANSWER_TOOL,
                    "description": "Give your answer. Its input is the whole reply.",
                    "input_schema": _object_schema(request.json_schema),
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        return body

    async def complete(self, request: LLMRequest) -> LLMReply:
        import anthropic  # noqa: PLC0415

        body = self.build_request(request)
        meter = Meter(self.name, request, max_tokens=body["max_tokens"], streams=False)
        meter.enter("writing")  # the server reads and writes; it says nothing until done
        meter.report(force=True)
        left = meter.remaining_s()
        try:
            with anyio.move_on_after(math.inf if left is None else left) as scope:
                if self.client is not None:
                    response = await self.client.messages.create(**body)
                else:
                    # A client per call: its connections belong to this call's event loop and
                    # are closed with it (the CLI runs each planner call in its own loop).
                    async with anthropic.AsyncAnthropic(**self._options) as client:
                        response = await client.messages.create(**body)
        except anthropic.APITimeoutError:
            meter.finish(reason="timeout")
            raise meter.cut_off("timeout", detail="the request timed out") from None
        except anthropic.APIConnectionError as exc:
            raise LLMError(self.name, f"cannot reach the server: {exc}") from None
        except anthropic.AuthenticationError as exc:
            raise LLMError(self.name, f"authentication failed (check the API key): {exc}") from None
        except anthropic.APIStatusError as exc:
            raise LLMError(self.name, f"HTTP {exc.status_code}: {exc.message}") from None
        except anthropic.AnthropicError as exc:
            raise LLMError(self.name, f"{type(exc).__name__}: {exc}") from None
        if scope.cancelled_caught:
            meter.finish(reason="timeout")
            raise meter.cut_off("timeout", detail="the request timed out")
        stop = str(getattr(response, "stop_reason", None))
        blocks = list(getattr(response, "content", None) or [])
        usage = response.usage
        input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
        model = str(getattr(response, "model", None) or self.model)
        meter.finish(output_tokens, {"max_tokens": "length"}.get(stop, stop))
        if stop == "max_tokens":
            meter.parts = [_partial(blocks)]
            raise meter.cut_off(
                "length",
                input_tokens=input_tokens,
                model=model,
                detail=f"stop_reason='max_tokens': the token limit of {body['max_tokens']}",
            )
        done = ("tool_use",) if request.json_schema is not None else ("end_turn", "stop_sequence")
        if stop not in done:
            meter.parts = [_partial(blocks)]
            detail = f"stop_reason={stop!r}"
            raise meter.cut_off(stop, input_tokens=input_tokens, model=model, detail=detail)
        if request.json_schema is not None:
            calls = [b for b in blocks if getattr(b, "type", None) == "tool_use"]
            if not calls or calls[0].name != ANSWER_TOOL:
                raise LLMError(self.name, "malformed reply: no call of the answer tool")
            payload = calls[0].input
            if request.json_schema.get("type") != "object" and isinstance(payload, dict):
                payload = payload.get("value", payload)
            text = json.dumps(payload, ensure_ascii=False)
        else:
            text = "".join(getattr(b, "text", "") for b in blocks if b.type == "text")
        return LLMReply(
            text=text,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=meter.elapsed_s,
            finish_reason=stop,
            extra={"cached_tokens": int(getattr(usage, "cache_read_input_tokens", 0) or 0)},
        )


def _partial(blocks: list[Any]) -> str:
    """What a cut-off reply holds: its text, or the (partial) input of its tool call."""
    parts: list[str] = []
    for block in blocks:
        if getattr(block, "type", None) == "tool_use":
            parts.append(json.dumps(getattr(block, "input", None), ensure_ascii=False))
        else:
            parts.append(str(getattr(block, "text", "") or ""))
    return "".join(parts)


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's input is an object: wrap any other schema as ``{"value": ...}``."""
    if schema.get("type") == "object":
        return schema
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"value": {k: v for k, v in schema.items() if k != "$defs"}},
        "required": ["value"],
    }
    if "$defs" in schema:
        wrapped["$defs"] = schema["$defs"]
    return wrapped
