"""Goal coverage: can the plan serve the goal? A small heuristic that only advises.

Two checks, both on words the planner never takes from a tool (R1):

- **The coverage list** (``Plan.coverage``, the planner's own claim: each part of the goal and
  the steps that serve it). A cited step that does not exist is an *issue* (``unknown_step``, as
  for ``after``). A part served by no step, or whose words ask for an effect none of its steps
  has, is a *warning* (``uncovered_part``).
- **The goal itself** (trusted, from the user), with or without a coverage list: an action the
  goal asks for that no step of the plan can do is a warning (``uncovered_goal``). This catches
  a planner that simply leaves a part out of its coverage list.

"Asks for an effect" is decided by the verb that opens a clause (a clause starts the text or
follows ``. , ; : ! ?``, ``and``, ``then``, ``also``, ``but``; words like ``please`` and ``then``
are skipped; quoted text is ignored): ``post the summary to the team`` asks to send (``tell me``
asks for the reply to the user, not for a message). The verbs
are ``ACTION_VERBS``; a step fits an effect when its tool's effect is in ``FITS`` (a tool that
declared no effect fits every one). Everything else (reading, finding, summarising) asks for
nothing. A warning never blocks and never makes a plan run: the planner repairs on it within its
attempts, and the plan view and the approval view show it to the person deciding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from planlock.core import Issue, Plan
from planlock.tools import UNDECLARED, Tool

__all__ = [
    "ACTION_VERBS",
    "COVERAGE_WARNINGS",
    "FITS",
    "asked_effects",
    "check_coverage",
    "fitting_tools",
    "warned_effect",
]

ACTION_VERBS: Mapping[str, frozenset[str]] = {
    "send": frozenset(
        {"send", "email", "e-mail", "mail", "message", "post", "tell", "notify", "reply"}
        | {"forward", "inform", "text", "dm", "ping", "announce"}
    ),
    "pay": frozenset({"pay", "refund", "wire", "transfer"}),
    "delete": frozenset({"delete", "remove", "erase", "cancel", "purge", "unsubscribe", "trash"}),
    "write": frozenset(
        {"write", "save", "store", "create", "update", "edit", "change", "set", "add"}
        | {"schedule", "reschedule", "book", "reserve", "rename", "move", "append", "upload"}
        | {"modify"}
    ),
}
"""The verbs that ask for an effect, by effect (base forms, lower case)."""

FITS: Mapping[str, frozenset[str]] = {
    "send": frozenset({"send", "pay"}),  # "send $50 to Bob" is a payment
    "pay": frozenset({"pay"}),
    "delete": frozenset({"delete", "write"}),  # cancelling is often modelled as an update
    "write": frozenset({"write", "delete", "send", "pay"}),  # any side effect changes something
}
"""The tool effects that can serve a part asking for an effect."""

COVERAGE_WARNINGS = frozenset({"uncovered_part", "uncovered_goal"})
"""The warning codes of this check."""

_EFFECT_NOTE = re.compile(r"\(effect (\w+)\)")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|«[^»]*»")
_CLAUSE = re.compile(r"[.,;:!?()\n]+|\b(?:and|then|also|but)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z-]*")
_SKIP = frozenset(
    {"please", "then", "also", "first", "finally", "next", "now", "just", "kindly", "lastly"}
    | {"afterwards", "i", "we", "want", "need", "you", "can", "could", "would", "will", "to"}
)


_TO_THE_USER = {"tell": (["me"], ["us"])}
"""``tell me ...`` asks for the reply to the user, which is no tool's effect."""


def asked_effects(text: str) -> dict[str, str]:
    """The effects ``text`` asks for, each with the verb that asked for it (first one wins)."""
    found: dict[str, str] = {}
    for clause in _CLAUSE.split(_QUOTED.sub(" ", text.lower())):
        words = [w for w in _WORD.findall(clause) if w]
        while words and words[0] in _SKIP:
            words.pop(0)
        if not words or words[1:2] in _TO_THE_USER.get(words[0], ()):
            continue
        for effect, verbs in ACTION_VERBS.items():
            if words[0] in verbs:
                found.setdefault(effect, words[0])
    return found


def _fits(tool: Tool, effect: str) -> bool:
    return tool.effect == UNDECLARED or tool.effect in FITS[effect]


def fitting_tools(effect: str, tools: Iterable[Tool]) -> list[str]:
    """The names of the tools (e.g. a registry's) that can serve a part asking for ``effect``."""
    return sorted(t.name for t in tools if _fits(t, effect))


def warned_effect(warning: Issue) -> str | None:
    """The effect a coverage warning says is missing (None: the part asks for no known one)."""
    m = _EFFECT_NOTE.search(warning.message)
    return m.group(1) if m and m.group(1) in FITS else None


def _names(step_ids: Sequence[str]) -> str:
    return ", ".join(step_ids)


def check_coverage(plan: Plan, tools: Mapping[str, Tool | None]) -> tuple[list[Issue], list[Issue]]:
    """Issues (cited steps that do not exist) and warnings (uncovered parts of the goal).

    ``tools`` maps each step id of the plan to its tool (None for an unknown tool).
    """
    issues: list[Issue] = []
    warnings: list[Issue] = []
    flagged: set[str] = set()  # effects already warned about by a part
    for i, cov in enumerate(plan.coverage):
        base = f"$.coverage[{i}]"
        known: list[str] = []
        for j, sid in enumerate(cov.steps):
            if sid in tools:
                known.append(sid)
            else:
                msg = f"coverage of '{cov.part}' names unknown step '{sid}'"
                issues.append(Issue("unknown_step", f"{base}.steps[{j}]", msg))
        asked = asked_effects(cov.part)
        if not cov.steps:
            flagged.update(asked)
            effects = ", ".join(f"effect {e}" for e in asked)
            msg = f"no step serves '{cov.part}'" + (f" ({effects})" if effects else "")
            warnings.append(Issue("uncovered_part", base, msg))
            continue
        served = [t for t in (tools[s] for s in known) if t is not None]
        if len(served) < len(known):
            continue  # a cited step has an unknown tool: already an issue
        for effect, verb in asked.items():
            if served and not any(_fits(t, effect) for t in served):
                flagged.add(effect)
                have = "/".join(sorted({t.effect for t in served}))
                msg = (
                    f"'{cov.part}' asks to {verb} (effect {effect}), but step(s) "
                    f"{_names(known)} only {have}"
                )
                warnings.append(Issue("uncovered_part", base, msg))
    if plan.goal:
        present = [t for t in tools.values() if t is not None]
        for effect, verb in asked_effects(plan.goal).items():
            if effect in flagged or any(_fits(t, effect) for t in present):
                continue
            msg = (
                f"the goal asks to {verb} (effect {effect}), but no step of the plan can "
                f"({'/'.join(sorted(FITS[effect]))})"
            )
            warnings.append(Issue("uncovered_goal", "$.goal", msg))
    return issues, warnings
