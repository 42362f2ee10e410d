"""planlock.llm: LLM backends behind one small protocol: OpenAI-compatible, Anthropic, the embedded
local model.
"""

from planlock.llm._anthropic import AnthropicLLM
from planlock.llm._base import LLM, LLMReply, LLMRequest, Message, Phase, Progress, ProgressCallback
from planlock.llm._local import LocalLLM
from planlock.llm._models import load_model
from planlock.llm._openai import OpenAILLM
from planlock.llm._stream import Meter, degenerate
from planlock.llm._traced import call_model, provider_and_model

__all__ = [
    "LLM",
    "AnthropicLLM",
    "LLMReply",
    "LLMRequest",
    "LocalLLM",
    "Message",
    "Meter",
    "OpenAILLM",
    "Phase",
    "Progress",
    "ProgressCallback",
    "call_model",
    "degenerate",
    "load_model",
    "provider_and_model",
]
