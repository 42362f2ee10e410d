"""Bounded decoding: what every backend that streams shares.

``Meter`` follows one call: it collects the streamed text, counts tokens, decides when to stop
(the time limit, degenerate repetition) and reports ``Progress``. ``feed`` only updates state, so
a backend may call it from a worker thread; ``report`` calls the request's progress callback and
must run in the caller's event loop. ``degenerate`` is the repetition check on its own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from planlock.errors import LLMCutOff
from planlock.llm._base import LLMRequest, Phase, Progress

__all__ = ["REPORT_EVERY_S", "Meter", "degenerate"]

REPORT_EVERY_S = 0.5
"""Progress is reported at most this often (and at every phase change)."""

WHITESPACE_RUN = 48
"""A run of this many whitespace characters is degenerate (compact JSON has none)."""
REPEAT_SPAN = 200
"""Text this long (at least) that repeats one unit ``REPEATS`` times or more is degenerate."""
REPEATS = 4
MAX_UNIT = 256
"""The longest repeated unit looked for, in characters."""
CHECK_EVERY = 8
"""Tokens between two repetition checks."""
TAIL = 4096

_WHITESPACE = re.compile(rf"\s{{{WHITESPACE_RUN},}}")


def degenerate(text: str) -> str | None:
    """Why the end of ``text`` looks like a model stuck in a loop, or None.

    Two signs: a run of ``WHITESPACE_RUN`` whitespace characters anywhere in the last
    ``TAIL`` characters, or the text ending in one unit of 1 to ``MAX_UNIT`` characters repeated
    back to back, at least ``REPEATS`` times and over at least ``REPEAT_SPAN`` characters (the
    same line, the same step, the same few characters). Numbers that count up break an exact
    repeat; the token and time limits stop those.
    """
    tail = text[-TAIL:]
    if _WHITESPACE.search(tail):
        return f"a run of {WHITESPACE_RUN}+ whitespace characters"
    for unit in range(1, MAX_UNIT + 1):
        span = max(REPEAT_SPAN, unit * REPEATS)
        if span > len(tail):
            break
        window = tail[-span:]
        if window[unit:] == window[:-unit]:
            sample = window[-unit:]
            shown = sample if len(sample) <= 40 else sample[:37] + "..."
            return f"the same {unit}-character text repeated {span // unit}+ times: {shown!r}"
    return None


class Meter:
    """Counts, bounds and reports one streamed call."""

    def __init__(
        self,
        backend: str,
        request: LLMRequest,
        *,
        max_tokens: int,
        streams: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.streams = streams
        """False: the backend learns the token count only when the call is done."""
        self.max_tokens = max_tokens
        self.timeout_s = request.timeout_s
        self.on_progress = request.on_progress
        self.clock = clock
        self.started = clock()
        self.phase: Phase = "reading"
        self.parts: list[str] = []
        self.tokens = 0
        self.prompt_tokens: int | None = None
        self.prompt_done: int | None = None
        self.writing_since: float | None = None
        self.stop_reason: str | None = None
        """``timeout`` or ``repetition`` once the call must stop."""
        self.finish_reason: str | None = None
        self.abandoned = False
        """Set when the caller stopped waiting: a stream still running must stop."""
        self.detail = ""
        self._last: tuple[Phase, float] | None = None
        self._unchecked = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def remaining_s(self) -> float | None:
        """Seconds left before the time limit (None: no limit)."""
        if self.timeout_s is None:
            return None
        return max(0.0, self.timeout_s - self.elapsed_s)

    def enter(self, phase: Phase) -> None:
        if phase == "writing" and self.writing_since is None:
            self.writing_since = self.clock()
        self.phase = phase

    def prompt(self, total: int | None, done: int | None) -> None:
        self.prompt_tokens, self.prompt_done = total, done

    def feed(self, piece: str, tokens: int = 1) -> bool:
        """Add streamed text; True when the call must stop now (time limit or repetition)."""
        if self.phase != "writing":
            self.enter("writing")
        self.parts.append(piece)
        self.tokens += tokens
        self._unchecked += tokens
        if self._unchecked >= CHECK_EVERY:
            self._unchecked = 0
            if why := degenerate(self.text):
                self.stop("repetition", why)
        self.check_time()
        return self.stop_reason is not None

    def check_time(self) -> bool:
        left = self.remaining_s()
        if left is not None and left <= 0 and self.stop_reason is None:
            self.stop("timeout", f"the time limit of {self.timeout_s:g} s was reached")
        return self.stop_reason is not None

    def stop(self, reason: str, detail: str) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.detail = reason, detail

    def progress(self) -> Progress:
        rate = None  # tokens after the first, over the time since the first arrived
        if self.writing_since is not None and self.tokens > 1:
            rate = (self.tokens - 1) / max(self.clock() - self.writing_since, 1e-6)
        return Progress(
            phase=self.phase,
            elapsed_s=self.elapsed_s,
            tokens=self.tokens
            if self.phase == "done" or (self.streams and self.phase == "writing")
            else None,
            tokens_per_s=rate,
            prompt_tokens=self.prompt_tokens,
            prompt_done=self.prompt_done if self.phase == "reading" else None,
            finish_reason=self.finish_reason if self.phase == "done" else None,
        )

    def report(self, *, force: bool = False) -> None:
        """Call the progress callback: at a phase change, when forced, else at most every
        ``REPORT_EVERY_S``."""
        if self.on_progress is None:
            return
        now = self.clock()
        if not force and self._last is not None:
            phase, at = self._last
            if phase == self.phase and now - at < REPORT_EVERY_S:
                return
        self._last = (self.phase, now)
        self.on_progress(self.progress())

    def finish(self, output_tokens: int | None = None, reason: str | None = None) -> None:
        """The call is over: the last report (phase ``done``, the final token count, and why it
        ended: the stop reason if it was stopped, else ``reason``)."""
        if output_tokens is not None:
            self.tokens = output_tokens
        self.finish_reason = self.stop_reason or reason
        self.enter("done")
        self.report(force=True)

    def cut_off(
        self, reason: str, *, input_tokens: int = 0, model: str | None = None, detail: str = ""
    ) -> LLMCutOff:
        """The error for a reply that stopped early, with what was received."""
        if not detail:
            detail = self.detail or (
                f"the token limit of {self.max_tokens} was reached" if reason == "length" else ""
            )
        return LLMCutOff(
            self.backend,
            reason,
            self.text,
            output_tokens=self.tokens,
            input_tokens=input_tokens,
            latency_s=self.elapsed_s,
            model=model,
            detail=detail,
        )
