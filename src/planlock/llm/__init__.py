"""planlock.llm: LLM backends behind one small protocol: OpenAI-compatible, Anthropic, the embedded
local model.
"""

from planlock.llm._anthropic import AnthropicLLM
from planlock.llm._base import LLM, LLMReply, LLMRequest, Message
from planlock.llm._local import LocalLLM
from planlock.llm._models import load_model
from planlock.llm._openai import OpenAILLM

__all__ = [
    "LLM",
    "AnthropicLLM",
    "LLMReply",
    "LLMRequest",
    "LocalLLM",
    "Message",
    "OpenAILLM",
    "load_model",
]
