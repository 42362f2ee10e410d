"""Times as planlock stores them: ISO 8601 with milliseconds, in UTC (comparable as text)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_ms(dt: datetime | None = None) -> str:
    """``dt`` (default: now, in UTC) as ISO 8601 with milliseconds."""
    return (dt if dt is not None else datetime.now(UTC)).isoformat(timespec="milliseconds")
