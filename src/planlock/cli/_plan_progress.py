"""Planning progress on the terminal: what the planner is doing, in words people can read.

On a terminal, one live status line (Rich) is updated as reports arrive: the phase (loading the
model, reading the prompt, writing the plan, repairing), tokens so far, tokens per second and the
time elapsed. Elsewhere (a log, a pipe) each phase change is one printed line. Either way, each
finished model call leaves one summary line. ``--quiet`` shows none of it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.status import Status
from rich.text import Text

from planlock.llm import Progress

__all__ = ["PlanProgress", "describe"]

_PHASES = {
    "loading": "loading the model",
    "reading": "reading the prompt",
    "writing": "writing the plan",
    "repairing": "repairing the plan",
}


_ENDINGS = {
    "stop": "",
    "length": "cut off at the token limit: ",
    "timeout": "stopped at the time limit: ",
    "repetition": "stopped, repeating itself: ",
    "error": "failed: ",
}


def describe(progress: Progress, max_attempts: int) -> str:
    """One line for a progress report, e.g. ``writing the plan · 312 tokens · 9.8 tok/s · 41 s``."""
    attempt = progress.attempt
    if progress.phase == "done":
        head = f"attempt {attempt}/{max_attempts}" if attempt else "done"
        rate = f" ({progress.tokens_per_s:.1f} tok/s)" if progress.tokens_per_s else ""
        tokens = "" if progress.tokens is None else f"{_tokens(progress.tokens)} in "
        why = _ENDINGS.get(progress.finish_reason or "stop", f"{progress.finish_reason}: ")
        return f"{head}: {why}{tokens}{progress.elapsed_s:.0f} s{rate}"
    parts = [_PHASES[progress.phase]]
    if attempt and attempt > 1:
        parts[0] += f" (attempt {attempt}/{max_attempts})"
    if progress.phase == "reading" and progress.prompt_tokens:
        parts.append(f"{progress.prompt_done or 0}/{progress.prompt_tokens} prompt tokens")
    if progress.tokens is not None and progress.phase in ("writing", "repairing"):
        parts.append(_tokens(progress.tokens))
        if progress.tokens_per_s:
            parts.append(f"{progress.tokens_per_s:.1f} tok/s")
    parts.append(f"{progress.elapsed_s:.0f} s")
    return " · ".join(parts)


class PlanProgress:
    """A progress callback for ``Planner(on_progress=...)`` that shows it on ``console``.

    Use as a context manager around planning; ``enabled=False`` (``--quiet``, ``--json``) shows
    nothing.
    """

    def __init__(
        self, console: Console, backend: str, max_attempts: int, *, enabled: bool = True
    ) -> None:
        self.console = console
        self.backend = backend
        self.max_attempts = max_attempts
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self._status: Status | None = None
        self._last: tuple[int | None, str] | None = None

    def __enter__(self) -> Self:
        if self.live:
            self._status = self.console.status(f"planning with {self.backend}...")
            self._status.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        line = describe(progress, self.max_attempts)
        if progress.phase == "done":
            self.console.print(Text.assemble((self.backend, "dim"), f" {line}"), highlight=False)
            return
        if self._status is not None:
            self._status.update(Text(f"planning with {self.backend}: {line}"))
            return
        key = (progress.attempt, progress.phase)
        if key != self._last:
            self._last = key
            self.console.print(Text.assemble((self.backend, "dim"), f" {line}"), highlight=False)


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"
