"""``call_model``: one model call as a GenAI ``chat`` span (when spans are recorded).

Every place that asks a model (the planner, the replanner, the ReAct baseline, a quarantined
``llm`` step) calls it, so the span has the same attributes wherever it comes from.
"""

from __future__ import annotations

import json

from planlock import telemetry
from planlock.errors import LLMCutOff
from planlock.llm._base import LLM, LLMReply, LLMRequest

__all__ = ["call_model", "provider_and_model"]


def provider_and_model(name: str) -> tuple[str, str]:
    """A backend's name (``openai:gpt-4o@http://...``) as the GenAI provider and model names."""
    provider, _, model = name.partition(":")
    return provider, (model.split("@", 1)[0] or provider)


async def call_model(llm: LLM, request: LLMRequest) -> LLMReply:
    """``llm.complete(request)``, in a ``chat {model}`` span (``gen_ai.*`` attributes; messages
    only with content capture)."""
    if not telemetry.enabled():
        return await llm.complete(request)
    provider, model = provider_and_model(llm.name)
    attributes: dict[str, telemetry.Attr] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "gen_ai.output.type": "json" if request.json_schema is not None else "text",
        "planlock.purpose": request.purpose,
    }
    if request.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if telemetry.capture_content():
        messages = [
            {"role": m.role, "parts": [{"type": "text", "content": m.content}]}
            for m in request.messages
        ]
        attributes["gen_ai.input.messages"] = json.dumps(messages, ensure_ascii=False)
    with telemetry.span(f"chat {model}", attributes, kind="chat", client=True) as span:
        try:
            reply = await llm.complete(request)
        except LLMCutOff as exc:
            span.set(_usage(exc.model or model, exc.input_tokens, exc.output_tokens, exc.reason))
            raise
        span.set(_usage(reply.model, reply.input_tokens, reply.output_tokens, reply.finish_reason))
        if telemetry.capture_content():
            output = [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": reply.text}],
                    "finish_reason": reply.finish_reason,
                }
            ]
            span.set({"gen_ai.output.messages": json.dumps(output, ensure_ascii=False)})
        return reply


def _usage(model: str, input_tokens: int, output_tokens: int, finish: str) -> telemetry.Attributes:
    return {
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.response.finish_reasons": [finish],
    }
