"""planlock.agent: the one place that knows the order: plan, validate, approve, execute, replan."""

from planlock.agent._calls import call_checker, in_process_waiter, resume_request
from planlock.agent._prepare import (
    Prepared,
    authorize,
    deferrable,
    noter,
    prepare,
    read_tools,
    recorder,
)
from planlock.agent._replan import Replanning, adopt, ask_revision, stop_at_checkpoint
from planlock.agent._run import execute, run, run_sync

__all__ = [
    "Prepared",
    "Replanning",
    "adopt",
    "ask_revision",
    "authorize",
    "call_checker",
    "deferrable",
    "execute",
    "in_process_waiter",
    "noter",
    "prepare",
    "read_tools",
    "recorder",
    "resume_request",
    "run",
    "run_sync",
    "stop_at_checkpoint",
]
