"""Every exception planlock raises.

The tree::

    PlanlockError
    ├── UsageError            the developer's mistake: bad registration, bad arguments to an API
    ├── ToolsNotFound         a TOOLS spec (module:attr or file.py:attr) that cannot be loaded
    ├── DatabaseUnavailable   PostgreSQL could not be reached within the reconnect wait
    │   └── ConnectionLost    the connection broke during an operation; says whether a commit
    │                         may have happened (``commit_unknown``)
    └── RunError              something went wrong with a plan or a run
        ├── PlanInvalid       the plan failed validation; carries every issue with its path
        │   └── PlanningFailed  the planner gave no valid plan in N attempts; carries each attempt
        ├── CannotPlan        the planner answered that the tools cannot serve the goal
        ├── ApprovalRequired  the plan needs a person and none was asked (e.g. ``--approve auto``)
        ├── ApprovalDenied    a person or policy said no; carries the decision
        ├── ApprovalMismatch  a grant that does not match the plan (or call) it is used for
        ├── StepFailed        a step failed; carries the step id and the error kind
        ├── LLMError          an LLM backend failed or answered out of contract
        │   └── LLMCutOff     a reply stopped early (token or time limit, repetition); carries it
        ├── ToolPinMismatch   an MCP tool whose definition is not the pinned one (or has no pin)
        ├── ToolCallFailed    an imported tool (MCP) answered with an error
        └── JournalCorrupt    the hash chain does not verify; carries the first bad sequence number

Exceptions carry data and have no side effects: nothing is logged when one is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from planlock.approval import Decision
    from planlock.planning import PlanAttempt
    from planlock.validation import Issue

__all__ = [
    "ApprovalDenied",
    "ApprovalMismatch",
    "ApprovalRequired",
    "CannotPlan",
    "ConnectionLost",
    "DatabaseUnavailable",
    "JournalCorrupt",
    "LLMCutOff",
    "LLMError",
    "PlanInvalid",
    "PlanlockError",
    "PlanningFailed",
    "RunError",
    "StepFailed",
    "ToolCallFailed",
    "ToolPinMismatch",
    "ToolsNotFound",
    "UsageError",
]


class PlanlockError(Exception):
    """Base class of every planlock exception."""


class UsageError(PlanlockError):
    """The library was used wrongly: a bad tool registration, bad arguments to an API."""


class ToolsNotFound(PlanlockError):
    """A ``module:attr`` or ``file.py:attr`` tools spec that cannot be loaded."""


class DatabaseUnavailable(PlanlockError):
    """The database (PostgreSQL) could not be reached within the reconnect wait.

    ``where`` names the database without its password; ``waited`` is how long, in seconds,
    planlock tried to reconnect before giving up."""

    def __init__(self, where: str, waited: float, cause: str) -> None:
        self.where = where
        self.waited = waited
        self.cause = cause
        super().__init__(f"database {where} unreachable (gave up after {waited:.1f}s): {cause}")


class ConnectionLost(DatabaseUnavailable):
    """The connection broke during an operation. Nothing of a transaction whose COMMIT was not
    sent is kept; when ``commit_unknown`` (the connection broke during COMMIT, or during a
    write outside a transaction), the write may or may not have been kept: re-read to know."""

    def __init__(self, where: str, cause: str, *, commit_unknown: bool) -> None:
        super().__init__(where, 0.0, cause)
        self.commit_unknown = commit_unknown
        self.args = (f"connection to {where} lost: {cause}",)


class RunError(PlanlockError):
    """Base class of failures of a plan or a run."""


class PlanInvalid(RunError):
    """The plan did not pass validation. ``issues`` holds every issue found."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        lines = [f"  {i.path}: {i.message}" for i in self.issues]
        super().__init__(f"plan is invalid ({len(self.issues)} issue(s)):\n" + "\n".join(lines))


class PlanningFailed(PlanInvalid):
    """The planner produced no valid plan within its attempts.

    ``attempts`` holds every attempt (its reply and issues); ``issues`` are the last attempt's.
    ``advice`` says what to try next (given when replies were cut off), and ends the message.
    """

    def __init__(
        self, backend: str, attempts: Sequence[PlanAttempt], advice: str | None = None
    ) -> None:
        self.backend = backend
        self.attempts = tuple(attempts)
        self.advice = advice
        self.issues = self.attempts[-1].issues if self.attempts else ()
        lines = [f"{backend}: no valid plan after {len(self.attempts)} attempt(s)"]
        for a in self.attempts:
            lines.append(f"attempt {a.number}: {len(a.issues)} issue(s)")
            lines.extend(f"  {i.path}: {i.message}" for i in a.issues)
        if advice:
            lines.append(advice)
        RunError.__init__(self, "\n".join(lines))


class CannotPlan(RunError):
    """The planner answered that the registered tools cannot serve the goal."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"cannot plan ({backend}): {reason}")


class ApprovalRequired(RunError):
    """The plan needs a person's approval and the approval mode does not ask one."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("approval required: " + "; ".join(self.reasons))


class ApprovalDenied(RunError):
    """The approver denied the plan or the call."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(f"denied by {decision.by} via {decision.via}: {decision.reason}")


class ApprovalMismatch(RunError):
    """A grant was used for content other than what it approved (R7)."""


class StepFailed(RunError):
    """A step failed. ``kind`` is a stable error class, ``message`` the detail."""

    def __init__(self, step_id: str, kind: str, message: str) -> None:
        self.step_id = step_id
        self.kind = kind
        self.message = message
        super().__init__(f"step {step_id} failed ({kind}): {message}")


class LLMError(RunError):
    """An LLM backend failed or replied outside its contract."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"{backend}: {message}")


class LLMCutOff(LLMError):
    """A reply that stopped before it was complete. ``reason`` says why: ``length`` (the token
    limit), ``timeout`` (the time limit) or ``repetition`` (degenerate text, stopped while
    streaming). ``partial`` is the text received until then (possibly empty).
    """

    def __init__(
        self,
        backend: str,
        reason: str,
        partial: str,
        *,
        output_tokens: int = 0,
        input_tokens: int = 0,
        latency_s: float = 0.0,
        model: str | None = None,
        detail: str = "",
    ) -> None:
        self.reason = reason
        self.partial = partial
        self.output_tokens = output_tokens
        self.input_tokens = input_tokens
        self.latency_s = latency_s
        self.model = model
        self.detail = detail
        message = f"the reply did not finish (finish_reason={reason!r})"
        message += f" after {output_tokens} tokens" + (f": {detail}" if detail else "")
        super().__init__(backend, message)


class JournalCorrupt(RunError):
    """The journal's hash chain does not verify. ``seq`` is the first bad event."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"journal corrupt at event {seq}: {reason}")


class ToolPinMismatch(RunError):
    """MCP tools whose definition (name, description, schemas, annotations) is not the one pinned
    on approval: changed since ("rug pull") or never pinned. ``problems`` holds
    ``(tool, what)`` for each; nothing runs."""

    def __init__(self, problems: Sequence[tuple[str, str]], hint: str = "") -> None:
        self.problems = tuple(problems)
        lines = [f"  {tool}: {what}" for tool, what in self.problems]
        tail = f"\n{hint}" if hint else ""
        super().__init__(
            f"{len(self.problems)} MCP tool(s) do not match their pins:\n" + "\n".join(lines) + tail
        )


class ToolCallFailed(RunError):
    """An imported tool (an MCP server's) answered a call with an error."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        self.message = message
        super().__init__(f"tool {tool} failed: {message}")
