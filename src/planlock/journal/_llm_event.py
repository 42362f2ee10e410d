"""The data of an ``llm_called`` journal event: one builder for every place that asks a model.

The planner, the replanner, the ReAct baseline and the executor's quarantined ``llm`` steps all
journal their model calls through ``llm_called``, so the event has the same fields wherever it
comes from (R10).
"""

from __future__ import annotations

from typing import Any

from planlock.core import canonical_json, sha256_hex
from planlock.errors import UsageError
from planlock.llm import LLM, LLMReply, LLMRequest

__all__ = ["llm_called"]


def llm_called(
    purpose: str,
    llm: LLM | str,
    request: LLMRequest,
    reply: LLMReply | None = None,
    *,
    error: BaseException | str | None = None,
    latency_s: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The data of the ``llm_called`` event for one model call.

    Always: ``purpose``, ``backend`` (the backend's name), the exact ``messages`` sent and
    ``json_schema_sha256`` (the SHA-256 of the requested reply schema's canonical JSON). With a
    ``reply``: its text (``reply``), ``model``, ``input_tokens``, ``output_tokens``,
    ``cached_tokens`` (None when the backend does not report it), ``finish_reason`` and
    ``latency_s`` (the reply's, unless ``latency_s`` is given), and ``prefix_cache`` when the
    backend has one (``restored``, ``miss``, ...). With an ``error``: its text, and
    ``latency_s`` when given. ``extra`` adds the caller's context (``step``, ``attempt``,
    ``turn``, ...); it may not replace any of the fields above.
    """
    data: dict[str, Any] = {
        "purpose": purpose,
        "backend": llm if isinstance(llm, str) else llm.name,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "json_schema_sha256": sha256_hex(canonical_json(request.json_schema)),
    }
    if reply is not None:
        data |= {
            "reply": reply.text,
            "model": reply.model,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cached_tokens": reply.extra.get("cached_tokens"),
            "finish_reason": reply.finish_reason,
        }
        if "prefix_cache" in reply.extra:  # the embedded model's on-disk prefix cache
            data["prefix_cache"] = reply.extra["prefix_cache"]
        if latency_s is None:
            latency_s = reply.latency_s
    if error is not None:
        data["error"] = str(error)
    if latency_s is not None:
        data["latency_s"] = round(latency_s, 4)
    clash = data.keys() & extra.keys()
    if clash:
        raise UsageError(f"llm_called: {', '.join(sorted(clash))} cannot be given as extra fields")
    return data | extra
