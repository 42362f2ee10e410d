"""planlock: plan-then-execute for LLM agents.

A planner sees only trusted input and writes a complete plan; the plan is validated against the
tool registry, approved by a person or a policy, and executed by deterministic code that never
asks an LLM what to do next. Every step is recorded in a hash-chained journal.
"""

from planlock._approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    Denied,
    approve_all,
    auto_approve,
)
from planlock._assess import Flow, RiskReport, StepAssessment, assess
from planlock._durable_engine import Engine, LocalEngine
from planlock._errors import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequired,
    CannotPlan,
    JournalCorrupt,
    LLMError,
    PlanInvalid,
    PlanlockError,
    PlanningFailed,
    RunError,
    StepFailed,
    ToolsNotFound,
    UsageError,
)
from planlock._execute import InProcessEngine, RunResult, StepCall, StepOutcome, walk
from planlock._journal import (
    EVENT_KINDS,
    Event,
    Journal,
    JournalStore,
    MemoryStore,
    SQLiteStore,
    VerifyReport,
    verify_events,
)
from planlock._journal_pg import PostgresStore, open_store
from planlock._llm import LLM, LLMReply, LLMRequest, Message
from planlock._llm_anthropic import AnthropicLLM
from planlock._llm_local import LocalLLM
from planlock._llm_openai import OpenAILLM
from planlock._models import load_model
from planlock._plan import Plan, Ref, Step, canonical_json
from planlock._planner import Planner, plan, plan_schema, plan_sync
from planlock._policy import Policy, Reason, Rule, Verdict
from planlock._queue import ApprovalQueue
from planlock._run import run, run_sync
from planlock._tools import EFFECTS, StepContext, Tool, ToolRegistry
from planlock._validate import Issue, ValidationReport, validate

__version__ = "0.1.0"

__all__ = [
    "EFFECTS",
    "EVENT_KINDS",
    "LLM",
    "AnthropicLLM",
    "ApprovalDenied",
    "ApprovalMismatch",
    "ApprovalQueue",
    "ApprovalRequest",
    "ApprovalRequired",
    "Approved",
    "Approver",
    "CannotPlan",
    "Decision",
    "Denied",
    "Engine",
    "Event",
    "Flow",
    "InProcessEngine",
    "Issue",
    "Journal",
    "JournalCorrupt",
    "JournalStore",
    "LLMError",
    "LLMReply",
    "LLMRequest",
    "LocalEngine",
    "LocalLLM",
    "MemoryStore",
    "Message",
    "OpenAILLM",
    "Plan",
    "PlanInvalid",
    "PlanlockError",
    "Planner",
    "PlanningFailed",
    "Policy",
    "PostgresStore",
    "Reason",
    "Ref",
    "RiskReport",
    "Rule",
    "RunError",
    "RunResult",
    "SQLiteStore",
    "Step",
    "StepAssessment",
    "StepCall",
    "StepContext",
    "StepFailed",
    "StepOutcome",
    "Tool",
    "ToolRegistry",
    "ToolsNotFound",
    "UsageError",
    "ValidationReport",
    "Verdict",
    "VerifyReport",
    "__version__",
    "approve_all",
    "assess",
    "auto_approve",
    "canonical_json",
    "load_model",
    "open_store",
    "plan",
    "plan_schema",
    "plan_sync",
    "run",
    "run_sync",
    "validate",
    "verify_events",
    "walk",
]
