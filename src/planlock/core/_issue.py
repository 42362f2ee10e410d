"""A problem found in a plan: the unit of every validation report (R2)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Issue"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a plan."""

    code: str
    """Stable machine-readable kind, e.g. ``unknown_tool``, ``missing_param``, ``cycle``."""
    path: str
    """JSON path into the plan, e.g. ``$.steps[2].args.to``."""
    message: str
    """What is wrong, for a person."""

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}
