"""How ``planlock serve`` behaves beyond its engine and tokens: its limits included."""

from __future__ import annotations

from dataclasses import dataclass

from planlock.errors import UsageError
from planlock.llm import LLM

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """How the service behaves beyond its engine and tokens."""

    allow_self_approval: bool = False
    """Whether an approver may approve a run they submitted themselves (default: no)."""
    planner: LLM | None = None
    """The model that plans submitted goals (``--model``); without one, goals are refused."""
    workers: int = 1
    """Workers executing approved runs inside the server (0: leave it to ``planlock worker``)."""
    sse_poll: float = 0.1
    """Seconds between journal reads while streaming a run's events."""
    max_body_bytes: int = 1024 * 1024
    """Largest request body (bytes), counted while it is read: a larger one is refused (413)
    before anything parses it, and is never held in memory whole."""
    max_steps: int = 1000
    """Most steps in a submitted plan; more is refused (422) before the plan is validated."""
    max_goal_chars: int = 8000
    """Longest goal, of ``POST /api/goals`` and of a submitted plan (characters; 422)."""
    max_input_chars: int = 32768
    """Longest string (value or key) anywhere in a plan's ``inputs`` or a goal's ``context``."""
    auth_failures: int = 10
    """Failed authentications a client address may make per ``auth_window`` before every
    request from it is refused (429 with ``Retry-After``); 0: no limit."""
    auth_window: float = 60.0
    """The window (seconds) of ``auth_failures``."""
    anonymous_window: float = 60.0
    """Requests without a known token are journaled as one ``http_anonymous`` event per client
    address and window of this many seconds, not one event each."""
    journal_path_chars: int = 128
    """Longest request path written to the journal; a longer one is cut (ending ``…``)."""
    db_threads: int = 16
    """Worker threads for the requests' database work (off the event loop), at most."""
    db_wait: float = 5.0
    """Seconds a request waits for a database that went away before it is answered 503."""
    retry_after: int = 2
    """The ``Retry-After`` (seconds) of a 503 sent while the database is unreachable."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_steps", "max_goal_chars", "max_input_chars"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.auth_failures < 0:
            raise UsageError("auth_failures must be 0 (no limit) or more")
        for name in ("auth_window", "anonymous_window"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be a positive number of seconds")
        if self.journal_path_chars < 16:
            raise UsageError("journal_path_chars must be at least 16")
        if self.db_threads < 1:
            raise UsageError("db_threads must be at least 1")
        if self.db_wait < 0:
            raise UsageError("db_wait must be 0 or more seconds")
        if self.retry_after < 1:
            raise UsageError("retry_after must be at least 1 second")
