"""Journal events as span events: every event passes through ``Journal.record``, which calls
``note``; approvals, policy verdicts, replans, retries... become events of the innermost open
span of the same run (the step's for a call's approval, the run's for the plan's)."""

from __future__ import annotations

import json
from typing import Any

from planlock.telemetry._api import Attr
from planlock.telemetry._trace import _CURRENT, capture_content

__all__ = ["CONTENT_KEYS", "note"]

_SPANNED = frozenset(
    {"run_started", "step_started", "step_finished", "llm_called", "planning_progress"}
)
"""Kinds that are spans of their own (or, for progress, too many to be events)."""
CONTENT_KEYS = frozenset(
    {
        "args",
        "condition_values",
        "error",
        "goal",
        "inputs",
        "messages",
        "output",
        "plan",
        "reply",
        "values",
    }
)
"""Fields that may carry content (arguments, outputs, goals, error text): on spans only when
content capture is on."""
_MAX_TEXT = 4096


def note(run_id: str, kind: str, data: dict[str, Any]) -> None:
    """Put a journal event on the innermost open span of its run (nothing outside one)."""
    current = _CURRENT.get()
    if current is None or kind in _SPANNED:
        return
    if current.run_id is not None and current.run_id != run_id:
        return
    span = current.span
    if kind == "run_finished":
        status = data.get("status")
        span.set({"planlock.status": str(status), "planlock.replans": int(data.get("replans", 0))})
        if status not in ("succeeded", "paused"):
            span.fail(str(data.get("error_kind") or status))
    elif kind == "step_failed" and current.kind == "tool":
        span.fail(str(data.get("error_kind")), None)
    span.event(f"planlock.{kind}", attributes(data))


def attributes(data: dict[str, Any]) -> dict[str, Attr]:
    """An event's fields as span attributes (``planlock.<field>``): plain values; content fields
    and nested values only with content capture (nested ones as JSON)."""
    capture = capture_content()
    out: dict[str, Attr] = {}
    for key, value in data.items():
        if key in CONTENT_KEYS and not capture:
            continue
        if isinstance(value, str | bool | int | float):
            out[f"planlock.{key}"] = value[:_MAX_TEXT] if isinstance(value, str) else value
        elif capture and value is not None:
            out[f"planlock.{key}"] = json.dumps(value, default=str)[:_MAX_TEXT]
    return out
