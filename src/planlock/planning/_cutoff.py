"""What the planner says about a reply that was cut off: to the model (a repair), in the
attempt's issue, and to the person when planning fails (what to try next)."""

from __future__ import annotations

from collections.abc import Sequence

from planlock.errors import LLMCutOff
from planlock.validation import Issue

__all__ = ["CUT_OFF_CODES", "cut_off_advice", "cut_off_issue", "cut_off_message"]

CUT_OFF_CODES = {"length": "cut_off", "timeout": "timed_out", "repetition": "degenerate"}
"""The issue code of each way a reply can be cut off."""


def _what(exc: LLMCutOff, max_tokens: int, timeout_s: float | None) -> str:
    if exc.reason == "length":
        return f"was cut off at {exc.output_tokens} tokens (the limit is {max_tokens})"
    if exc.reason == "timeout":
        limit = f"{timeout_s:g} s" if timeout_s is not None else "the client's timeout"
        return f"was stopped at the time limit ({limit}) after {exc.output_tokens} tokens"
    if exc.reason == "repetition":
        return f"was stopped after {exc.output_tokens} tokens: it kept repeating ({exc.detail})"
    return f"did not finish ({exc.reason}) after {exc.output_tokens} tokens"


def cut_off_issue(exc: LLMCutOff, max_tokens: int, timeout_s: float | None) -> Issue:
    """The attempt's issue: the reply was incomplete, and why."""
    code = CUT_OFF_CODES.get(exc.reason, "cut_off")
    return Issue(code, "$", f"the reply {_what(exc, max_tokens, timeout_s)}")


def cut_off_message(exc: LLMCutOff, max_tokens: int, timeout_s: float | None) -> str:
    """The repair message after a cut-off: what happened, and to write a shorter plan."""
    again = (
        "Write the plan once, without repeating any text"
        if exc.reason == "repetition"
        else "Write a shorter plan"
    )
    return (
        f"Your reply {_what(exc, max_tokens, timeout_s)}, so there is no plan yet. "
        f"{again}: only the steps the goal needs, short literal values and instructions. "
        "Answer with the whole plan as JSON, using only the listed tools."
    )


def cut_off_advice(reasons: Sequence[str], max_tokens: int, timeout_s: float | None) -> str:
    """What to try when replies cut off (``reasons``: one per such reply) took part in a failed
    planning."""
    tries = ["a shorter, simpler goal"]
    if "length" in reasons:
        tries.append(f"a bigger token limit (--max-tokens or max_tokens=; now {max_tokens})")
    if "timeout" in reasons and timeout_s is not None:
        tries.append(f"a longer time limit (--timeout or timeout_s=; now {timeout_s:g} s)")
    tries.append("a frontier model (--model openai:MODEL or anthropic:MODEL)")
    n = len(reasons)
    return (
        f"{n} repl{'y was' if n == 1 else 'ies were'} cut off or stopped; try "
        + ", ".join(tries[:-1])
        + f" or {tries[-1]}."
    )
