"""planlock.policy: the policy, risk assessment and the approval envelope (R6, R8), deciding on
the provenance labels that ``planlock.validation`` gives (R5).
"""

from planlock.policy._assess import Flow, RiskReport, StepAssessment, assess
from planlock.policy._ground import ungrounded
from planlock.policy._policy import Policy, Reason, Rule, Verdict, evaluate, fixed_verdict

__all__ = [
    "Flow",
    "Policy",
    "Reason",
    "RiskReport",
    "Rule",
    "StepAssessment",
    "Verdict",
    "assess",
    "evaluate",
    "fixed_verdict",
    "ungrounded",
]
