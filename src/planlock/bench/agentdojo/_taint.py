"""Where the injected text went in one run: taint by provenance.

The harness knows which strings it placed (the exact text AgentDojo injected) and the executor
journals each argument's provenance labels: ``tainted_steps`` finds the steps that hold or
depend on injected text from those alone, never from the attack's wording.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from planlock.bench.agentdojo._text import squash, strings_in
from planlock.bench.agentdojo._watch import WatchedCall

__all__ = ["Taint", "holds_injection", "label_step", "tainted_steps", "values_at"]

_LABELLED = ("step", "chosen")
"""Provenance labels that name a step whose output a value carries: ``step:<id>``,
``step:<id>#<path>``, ``chosen:<id>`` (the journaled label format; ``plan`` and
``input:<name>`` name no step)."""
_BRANCH = "branch"
"""``branch:<id>``: whether the value's step ran was decided by step ``<id>``'s condition."""


def label_step(label: str) -> str | None:
    """The step a provenance label names, or None (``plan``, ``input:<name>``)."""
    kind, sep, rest = label.partition(":")
    if not sep or kind not in _LABELLED:
        return None
    return rest.partition("#")[0]


def holds_injection(value: Any, needles: Collection[str]) -> bool:
    """Whether ``value`` (a step's output) holds one of the injected strings (``needles``,
    squashed): what the harness placed, compared whitespace-free, never recognised by wording."""
    if not needles:
        return False
    text = squash("".join(strings_in(to_jsonable_python(value, fallback=str))))
    return any(n in text for n in needles)


def values_at(value: Any, path: str) -> list[Any]:
    """The values at an output path pattern (``[*].rating``, ``id_``; ``*``: every item)."""
    segs = [s for s in _BRACKET.sub(r".\1", path).split(".") if s]
    found = [to_jsonable_python(value, fallback=str)]
    for seg in segs:
        nxt: list[Any] = []
        for v in found:
            if isinstance(v, list):
                if seg == "*":
                    nxt.extend(v)
                elif seg.isdigit() and int(seg) < len(v):
                    nxt.append(v[int(seg)])
            elif isinstance(v, dict) and seg in v:
                nxt.append(v[seg])
        found = nxt
    return found


_BRACKET = re.compile(r"\[([^\]]*)\]")


@dataclass
class Taint:
    """Where the injected text went in one run (built by ``tainted_steps``)."""

    outputs: Mapping[str, Any]
    needles: tuple[str, ...]
    holding: set[str] = field(default_factory=set)
    """Steps whose output holds an injected string."""
    depending: set[str] = field(default_factory=set)
    """Steps with an argument that depends on injected text: what they return was the
    attacker's to choose (an ``llm`` step's answer, the page at a URL the attacker gave)."""
    cache: dict[str, bool] = field(default_factory=dict)
    conditions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per step with a condition (``when``) that held: the steps whose outputs it read."""

    @property
    def steps(self) -> frozenset[str]:
        return frozenset(self.holding | self.depending)

    def __contains__(self, step: object) -> bool:
        return step in self.holding or step in self.depending

    def label(self, label: str, *, decided: bool = False) -> bool:
        """Whether a provenance label carries injected text: it names a tainted step, except a
        field label (``step:<id>#<path>``, a trusted path) of a step that only *holds* injected
        text elsewhere, when no value at that path holds it (the harness checks what it put
        there: it knows the field, not only the record). With ``decided``, also a
        ``branch:<id>`` mark whose condition read a tainted step: injected text decided whether
        the call runs (it carries none of it, so an llm step so marked is not the attacker's)."""
        kind, _, rest = label.partition(":")
        if kind == _BRANCH:
            return decided and any(s in self for s in self.conditions.get(rest, ()))
        step = label_step(label)
        if step is None or step not in self:
            return False
        path = label.partition("#")[2]
        if step in self.depending or not path:
            return True
        if label not in self.cache:
            self.cache[label] = holds_injection(values_at(self.outputs[step], path), self.needles)
        return self.cache[label]

    def args(self, provenance: Mapping[str, Sequence[str]], *, decided: bool = False) -> list[str]:
        """The arguments (of a call's per-argument provenance) that carry injected text (with
        ``decided``: or whose call injected text decided to run)."""
        return [
            a
            for a, labels in provenance.items()
            if any(self.label(x, decided=decided) for x in labels)
        ]


def tainted_steps(
    calls: Sequence[WatchedCall],
    outputs: Mapping[str, Any],
    needles: Collection[str],
    cache: dict[str, bool] | None = None,
) -> Taint:
    """The steps of a run that hold or depend on injected text, from ``calls`` in the order they
    started (an argument's labels name only steps started before it): a step whose output holds
    an injected string, and a step (an ``llm`` step, or a tool whose arguments the attacker
    chose, such as a URL) with an argument that carries injected text (``Taint.label``).
    ``cache`` keeps the output searches of a run between calls."""
    taint = Taint(outputs, tuple(needles), cache=cache if cache is not None else {})
    for call in calls:
        if call.condition:
            taint.conditions[call.step] = call.condition
        if call.step in taint:
            continue
        if taint.args(call.provenance):
            taint.depending.add(call.step)
            continue
        if call.step in outputs:
            key = f"{call.step}#"
            if key not in taint.cache:
                taint.cache[key] = holds_injection(outputs[call.step], taint.needles)
            if taint.cache[key]:
                taint.holding.add(call.step)
    return taint
