"""Notifications for pending approvals: a JSON POST to a webhook (Slack-compatible body) that
also carries the journal's head."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from planlock.journal import Journal

if TYPE_CHECKING:
    import ssl

__all__ = ["Notifier", "WebhookNotifier", "approval_message", "notify_request"]


class Notifier(Protocol):
    """Told about every approval request that waits for a person."""

    def notify(self, message: dict[str, Any]) -> None:
        """Deliver ``message``; raise on failure (the caller journals it)."""
        ...


class WebhookNotifier:
    """POSTs the message as JSON. The body has Slack's ``text`` and ``blocks`` fields, so a
    Slack incoming-webhook URL works as is, and a ``planlock`` field with the request's data."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def notify(self, message: dict[str, Any]) -> None:
        import httpx  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

        response = httpx.post(self.url, json=message, timeout=self.timeout, verify=self._context())
        response.raise_for_status()

    def _context(self) -> ssl.SSLContext:
        """The TLS context, made at the first message and kept: httpx makes one per request
        otherwise, loading the CA bundle each time (~50 ms of CPU)."""
        with self._lock:
            if self._tls is None:
                import httpx  # noqa: PLC0415

                self._tls = httpx.create_ssl_context()
            return self._tls


def approval_message(
    request: dict[str, Any],
    approve_hint: str = "planlock approve",
    journal_head: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The notification for a stored approval request (``ApprovalRequest.to_json()``).

    ``journal_head`` (``Anchor.to_json()``: the journal's last seq and hash, with their MAC when
    an anchor key is set) goes into ``planlock.journal_head``: a receiver that keeps these has
    anchors outside the database (one per line is an anchor file for ``journal verify
    --anchor``)."""
    what = {
        "call": f"call to step {request.get('step_id')}",
        "resume": f"resume of interrupted step {request.get('step_id')}",
    }.get(request["kind"], f"plan {request['plan_hash'][:12]}")
    reasons = [r["message"] for r in request.get("reasons", [])] or [
        r["message"] for s in request["report"]["steps"] for r in s["reasons"]
    ]
    lines = "\n".join(f"• {r}" for r in reasons)
    text = f"planlock: approval needed for the {what} of run {request['run_id']}"
    detail = f"*{text}*\n{lines}\nApprove with `{approve_hint} {request['id']} --as NAME`"
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": detail}}],
        "planlock": {
            "approval_id": request["id"],
            "run_id": request["run_id"],
            "kind": request["kind"],
            "plan_hash": request["plan_hash"],
            "step_id": request.get("step_id"),
            "args_hash": request.get("args_hash"),
            "args": request.get("args"),
            "reasons": reasons,
            "journal_head": journal_head,
        },
    }


def notify_request(
    notifier: Notifier, journal: Journal, run_id: str, request: dict[str, Any]
) -> None:
    """Notify about a stored request (with the journal's head) and journal the outcome
    (``notification_sent``, or ``notification_failed``: a failure must not lose the request)."""
    try:
        head = journal.signed_head().to_json()
        notifier.notify(approval_message(request, journal_head=head))
    except Exception as exc:
        journal.record(
            run_id, "notification_failed", {"approval_id": request["id"], "error": str(exc)}
        )
    else:
        journal.record(run_id, "notification_sent", {"approval_id": request["id"]})
