"""planlock.queue: the asynchronous approval queue: submit, notify, approve, and workers that run
approved plans.
"""

from planlock.queue._notify import WebhookNotifier
from planlock.queue._queue import ApprovalQueue, Submitted
from planlock.queue._store import parse_duration

__all__ = ["ApprovalQueue", "Submitted", "WebhookNotifier", "parse_duration"]
