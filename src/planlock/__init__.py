"""planlock: plan-then-execute for LLM agents.

A planner sees only trusted input and writes a complete plan; the plan is validated against the
tool registry, approved by a person or a policy, and executed by deterministic code that never
asks an LLM what to do next. Every step is recorded in a hash-chained journal.
"""

import logging

from planlock._version import __version__
from planlock.agent import run, run_sync
from planlock.approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    Denied,
    EndorseAs,
    Endorsement,
    EndorsementStore,
    MemoryEndorsements,
    SQLEndorsements,
    approve_all,
    auto_approve,
    endorse,
    revoke_endorsement,
)
from planlock.core import Plan, Ref, Step, canonical_json
from planlock.errors import (
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
from planlock.execution import (
    Engine,
    InProcessEngine,
    LocalEngine,
    RunResult,
    StepCall,
    StepOutcome,
    render_reply,
    walk,
)
from planlock.journal import (
    EVENT_KINDS,
    Event,
    Journal,
    JournalStore,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    VerifyReport,
    open_store,
    verify_events,
)
from planlock.llm import (
    LLM,
    AnthropicLLM,
    LLMReply,
    LLMRequest,
    LocalLLM,
    Message,
    OpenAILLM,
    load_model,
)
from planlock.planning import Planner, plan, plan_schema, plan_sync
from planlock.policy import Flow, Policy, Reason, RiskReport, Rule, StepAssessment, Verdict, assess
from planlock.queue import ApprovalQueue
from planlock.tools import EFFECTS, StepContext, Tool, ToolRegistry
from planlock.validation import Issue, ValidationReport, validate

# The library's loggers are "planlock" and its children ("planlock.journal._journal", ...): silent
# unless the application configures logging (the CLI does, with -v / -q).
logging.getLogger("planlock").addHandler(logging.NullHandler())

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
    "EndorseAs",
    "Endorsement",
    "EndorsementStore",
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
    "MemoryEndorsements",
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
    "SQLEndorsements",
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
    "endorse",
    "load_model",
    "open_store",
    "plan",
    "plan_schema",
    "plan_sync",
    "render_reply",
    "revoke_endorsement",
    "run",
    "run_sync",
    "validate",
    "verify_events",
    "walk",
]
