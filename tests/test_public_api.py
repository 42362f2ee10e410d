from __future__ import annotations

import types

import planlock


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions and the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_complete() -> None:
    exported = planlock.__all__
    assert exported == sorted(exported, key=isort_key)
    public = {
        n
        for n in dir(planlock)
        if not n.startswith("_") and not isinstance(getattr(planlock, n), types.ModuleType)
    }
    assert public <= set(exported)
    for name in exported:
        assert hasattr(planlock, name), name


# The public API as of the layout change (issue 11). Adding a name is fine (add it here too);
# removing or renaming one breaks users' code and must not happen silently.
FROZEN = [
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
    "LLMCutOff",
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
    "Progress",
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


def test_every_frozen_name_is_still_exported() -> None:
    missing = set(FROZEN) - set(planlock.__all__)
    assert not missing, f"public names removed: {sorted(missing)}"


def test_public_functions_are_not_shadowed_by_subpackages() -> None:
    for name in ("plan", "run", "validate", "assess"):
        assert not isinstance(getattr(planlock, name), types.ModuleType), name
