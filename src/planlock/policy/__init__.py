"""planlock.policy: provenance labels, the policy, risk assessment and the approval envelope (R5,
R6, R8).
"""

from planlock.policy._assess import Flow, RiskReport, StepAssessment, assess, label_trust
from planlock.policy._policy import Policy, Reason, Rule, Verdict, evaluate

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
    "label_trust",
]
