"""planlock.planning: the planner, the replanner and the ReAct baseline: every prompt that chooses
tools (R1, R9).
"""

from planlock.planning._plan_schema import plan_schema
from planlock.planning._planner import PlanAttempt, Planner
from planlock.planning._react import ReactResult, action_reply, offered_tools, react
from planlock.planning._replan import Envelope, Replanner, Revision, diff_steps
from planlock.planning._shortcuts import plan, plan_sync

__all__ = [
    "Envelope",
    "PlanAttempt",
    "Planner",
    "ReactResult",
    "Replanner",
    "Revision",
    "action_reply",
    "diff_steps",
    "offered_tools",
    "plan",
    "plan_schema",
    "plan_sync",
    "react",
]
