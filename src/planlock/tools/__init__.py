"""planlock.tools: tools and the registry: typed functions with effects, sensitive parameters and
trusted output; the quarantined ``llm`` step tool.
"""

from planlock.tools._llmstep import (
    LLM_STEP_TOOL,
    NotEnoughInformation,
    check_llm_step,
    choice_problem,
    quarantined_call,
)
from planlock.tools._loader import load_tools
from planlock.tools._registry import (
    EFFECTS,
    LLM_TOOL,
    UNDECLARED,
    StepContext,
    Tool,
    ToolRegistry,
    effect_rank,
    make_tool,
)

__all__ = [
    "EFFECTS",
    "LLM_STEP_TOOL",
    "LLM_TOOL",
    "UNDECLARED",
    "NotEnoughInformation",
    "StepContext",
    "Tool",
    "ToolRegistry",
    "check_llm_step",
    "choice_problem",
    "effect_rank",
    "load_tools",
    "make_tool",
    "quarantined_call",
]
