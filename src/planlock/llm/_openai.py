"""The ``openai`` backend: the official ``openai`` SDK, Chat Completions.

With ``base_url`` it also serves any OpenAI-compatible server: vLLM, Ollama, llama.cpp's server
(``--model openai:qwen@http://127.0.0.1:8080/v1``). Structured output uses ``response_format``
with a JSON Schema. The key comes from ``api_key`` or ``$OPENAI_API_KEY``; a server that needs no
key (a local one) gets a placeholder.

A reply that did not stop normally (``finish_reason`` ``length`` at ``max_tokens``, or another
reason) and a call past the request's ``timeout_s`` (or the client's timeout) are ``LLMCutOff``;
progress reports the phase and, when done, the usage.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import anyio

from planlock.errors import LLMError
from planlock.llm._base import LLMReply, LLMRequest
from planlock.llm._stream import Meter

__all__ = ["OpenAILLM"]


class OpenAILLM:
    """An OpenAI (or OpenAI-compatible) chat model."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_tokens: int = 1024,
        temperature: float | None = 0.0,
        client: Any = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.name = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._options: dict[str, Any] = {}
        if client is None:
            if importlib.util.find_spec("openai") is None:
                msg = "the openai backend needs the openai SDK: pip install 'planlock[openai]'"
                raise LLMError(self.name, msg) from None
            key = api_key or os.environ.get("OPENAI_API_KEY")
            if key is None and base_url is None:
                raise LLMError(self.name, "no API key: set OPENAI_API_KEY")
            self._options = {
                "api_key": key or "unused",
                "base_url": base_url,
                "timeout": timeout,
                "max_retries": max_retries,
            }
        self.client = client
        """An SDK client given by the caller (used as is); else one is made for each call."""

    def build_request(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens or self.max_tokens,
        }
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            body["temperature"] = temperature
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(request.purpose),
                    "schema": request.json_schema,
                },
            }
        return body

    async def complete(self, request: LLMRequest) -> LLMReply:
        import openai  # noqa: PLC0415

        body = self.build_request(request)
        meter = Meter(self.name, request, max_tokens=body["max_tokens"], streams=False)
        meter.enter("writing")  # the server reads and writes; it says nothing until done
        meter.report(force=True)
        left = meter.remaining_s()
        try:
            with anyio.move_on_after(math.inf if left is None else left) as scope:
                if self.client is not None:
                    response = await self.client.chat.completions.create(**body)
                else:
                    # A client per call: its connections belong to this call's event loop and
                    # are closed with it (the CLI runs each planner call in its own loop).
                    async with openai.AsyncOpenAI(**self._options) as client:
                        response = await client.chat.completions.create(**body)
        except openai.APITimeoutError:
            meter.finish(reason="timeout")
            raise meter.cut_off("timeout", detail="the request timed out") from None
        except openai.APIConnectionError as exc:
            raise LLMError(self.name, f"cannot reach the server: {exc}") from None
        except openai.AuthenticationError as exc:
            raise LLMError(self.name, f"authentication failed (check the API key): {exc}") from None
        except openai.APIStatusError as exc:
            raise LLMError(self.name, f"HTTP {exc.status_code}: {exc.message}") from None
        except openai.OpenAIError as exc:
            raise LLMError(self.name, f"{type(exc).__name__}: {exc}") from None
        if scope.cancelled_caught:
            meter.finish(reason="timeout")
            raise meter.cut_off("timeout", detail="the request timed out")
        choices = getattr(response, "choices", None)
        if not choices:
            raise LLMError(self.name, "malformed reply: no choices")
        choice = choices[0]
        finish = str(choice.finish_reason)
        text = choice.message.content if choice.message is not None else None
        usage = response.usage
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        meter.parts = [text or ""]
        meter.finish(output_tokens, finish)
        model = str(response.model or self.model)
        if finish != "stop":  # length, content_filter, ...: an incomplete reply
            raise meter.cut_off(finish, input_tokens=input_tokens, model=model)
        if not isinstance(text, str):
            refusal = getattr(choice.message, "refusal", None)
            raise LLMError(self.name, f"no text in the reply{f': {refusal}' if refusal else ''}")
        details = getattr(usage, "prompt_tokens_details", None)
        return LLMReply(
            text=text,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=meter.elapsed_s,
            finish_reason=finish,
            extra={"cached_tokens": int(getattr(details, "cached_tokens", 0) or 0)},
        )


def _schema_name(purpose: str) -> str:
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in purpose)
    return name[:64] or "reply"
