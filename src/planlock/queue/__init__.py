"""planlock.queue: the asynchronous approval queue: submit, notify, approve, and workers that run
approved plans.
"""

from planlock.queue._notify import Notifier, WebhookNotifier, notify_request
from planlock.queue._queue import ApprovalQueue, Submitted
from planlock.queue._replay import MAX_RESUMES, Lease
from planlock.queue._runs import STATES, run_state, self_approval_problem
from planlock.queue._store import DEFAULT_EXPIRY, parse_duration

__all__ = [
    "DEFAULT_EXPIRY",
    "MAX_RESUMES",
    "STATES",
    "ApprovalQueue",
    "Lease",
    "Notifier",
    "Submitted",
    "WebhookNotifier",
    "notify_request",
    "parse_duration",
    "run_state",
    "self_approval_problem",
]
