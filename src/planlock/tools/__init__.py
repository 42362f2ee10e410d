"""planlock.tools: tools and the registry: typed functions with effects, sensitive parameters and
trusted output; the quarantined ``llm`` step tool; tools imported from MCP servers (pinned),
LangChain and pydantic-ai (whose packages are imported only when used).
"""

from planlock.tools._adapters import from_langchain, from_pydantic_ai
from planlock.tools._llmstep import (
    LLM_STEP_TOOL,
    NotEnoughInformation,
    check_llm_step,
    choice_problem,
    quarantined_call,
)
from planlock.tools._loader import load_tools
from planlock.tools._mcp import McpTool, McpToolset, PinStatus, load_toolset, mcp_tools
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
from planlock.tools._schema_tool import schema_tool
from planlock.tools._scope import RunScope, current_scope, run_scope

__all__ = [
    "EFFECTS",
    "LLM_STEP_TOOL",
    "LLM_TOOL",
    "UNDECLARED",
    "McpTool",
    "McpToolset",
    "NotEnoughInformation",
    "PinStatus",
    "RunScope",
    "StepContext",
    "Tool",
    "ToolRegistry",
    "check_llm_step",
    "choice_problem",
    "current_scope",
    "effect_rank",
    "from_langchain",
    "from_pydantic_ai",
    "load_tools",
    "load_toolset",
    "make_tool",
    "mcp_tools",
    "quarantined_call",
    "run_scope",
    "schema_tool",
]
