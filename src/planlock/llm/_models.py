"""Model selection by one string: ``--model local``, ``openai:gpt-4.1``, ...

=============================================  =============================================
spec                                           backend
=============================================  =============================================
``local``                                      the embedded default model (offline)
``local:/path/model.gguf``                     the embedded runtime with any GGUF file
``openai:gpt-4.1``                             OpenAI, key from ``$OPENAI_API_KEY``
``openai:qwen@http://127.0.0.1:8080/v1``       any OpenAI-compatible server (vLLM, Ollama, ...)
``anthropic:claude-sonnet-4-5``                Anthropic, key from ``$ANTHROPIC_API_KEY``
``anthropic:MODEL@http://host:port``           an Anthropic-compatible endpoint
=============================================  =============================================

``$PLANLOCK_MODEL`` sets the default (``local`` otherwise).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from planlock.errors import UsageError
from planlock.llm._base import LLM
from planlock.llm._local import LocalLLM

__all__ = ["DEFAULT_MODEL_SPEC", "load_model", "parse_model_spec"]

DEFAULT_MODEL_SPEC = "local"

_shared: dict[str, LocalLLM] = {}
_shared_lock = threading.Lock()


def parse_model_spec(spec: str) -> tuple[str, str, str | None]:
    """Split a spec into (backend, model, base_url). Raises UsageError if it is not one."""
    spec = spec.strip()
    backend, _, rest = spec.partition(":")
    if backend == "local":
        return "local", rest, None
    if backend not in ("openai", "anthropic"):
        msg = (
            f"unknown model {spec!r}: use local, local:/path/model.gguf, openai:MODEL, "
            "openai:MODEL@BASE_URL or anthropic:MODEL"
        )
        raise UsageError(msg)
    model, at, url = rest.partition("@")
    if not model:
        raise UsageError(f"model {spec!r} names no model: e.g. {backend}:MODEL")
    if at and not url.startswith(("http://", "https://")):
        raise UsageError(f"model {spec!r}: the part after @ must be an http(s) URL")
    return backend, model, url or None


def load_model(spec: str | None = None) -> LLM:
    """The backend a spec names (nothing is loaded or contacted until the first call).

    Local models are shared per file within a process: loading one takes seconds and a GB.
    """
    backend, model, url = parse_model_spec(spec or os.environ.get("PLANLOCK_MODEL") or "local")
    if backend == "local":
        key = str(Path(model).expanduser().resolve()) if model else ""
        with _shared_lock:
            if key not in _shared:
                _shared[key] = LocalLLM(Path(model).expanduser() if model else None)
            return _shared[key]
    if backend == "openai":
        from planlock.llm._openai import OpenAILLM  # noqa: PLC0415  (optional SDK)

        return OpenAILLM(model, base_url=url)
    from planlock.llm._anthropic import AnthropicLLM  # noqa: PLC0415  (optional SDK)

    return AnthropicLLM(model, base_url=url)
