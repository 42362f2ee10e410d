"""Endorsement: a person approves a *value* once, not each action that uses it (issue 12).

A person who sees a concrete value in a call ("DE89 3704 ... is my landlord", "sarah@example.com
is Sarah") endorses it: an ``Endorsement`` names the SHA-256 of the value's canonical JSON, the
value's **source** and, optionally, the **target** it may reach, with a label (the value's human
meaning), who endorsed it and when; it may expire and be revoked. Later calls whose untrusted or
chosen value in a sensitive parameter has a live endorsement with the same hash *and* source
(and target, if set) run without asking (the policy's ``flow:<p>`` / ``choice:<p>`` reason is
settled, see ``settle``). A different value, a different source, an expired or revoked
endorsement settles nothing: the person is asked as before.

The source says where the value came from in words that hold across runs and plans (never a
step id): the producing tool and the output path, ``tool:get_transactions#[*].recipient``
(a list index is written ``[*]``: an item's position is not part of what was endorsed);
``input:<name>`` for a trusted input; ``llm#<field>(<what it read>)`` for a quarantined llm
step's output; ``chosen:<where the allowed values come from>`` for a value an llm step chose
among trusted values (``choices``); several origins (an interpolated string, an object built
from several references) are joined with ``+``. Chosen values and loop items may be endorsed
like any other value: the endorsement covers this one value, so the attacker can at most steer
the agent to a value the person vouched for, from the place the person saw it come from.

Endorsements live in an ``EndorsementStore``: ``MemoryEndorsements`` (one process) or
``SQLEndorsements`` (the ``endorsements`` table beside the journal, SQLite or PostgreSQL).
Creating, using and revoking one is journaled (``endorsement_added``, ``endorsement_used``,
``endorsement_revoked``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ulid import ULID

from planlock.core import ANY_ITEM, Ref, canonical_json, iso_ms, refs_of, sha256_hex
from planlock.errors import UsageError
from planlock.policy import Reason
from planlock.tools import LLM_TOOL
from planlock.validation import CompiledStep, expand_items

__all__ = [
    "ENDORSEMENTS_RUN",
    "Endorsable",
    "EndorseAs",
    "Endorsement",
    "make_endorsements",
    "offers",
    "value_hash",
    "value_source",
]

ENDORSEMENTS_RUN = "endorsements"
"""The journal run id of endorsement events made outside any run (CLI, Python API)."""
ENDORSABLE_KEYS = ("flow:", "choice:")
"""The policy reasons an endorsement can settle: the default untrusted-to-sensitive and
chosen-to-sensitive flows (never a deny, never a rule the policy's author wrote)."""
MAX_LABEL = 200


def _utc(stamp: str | None) -> str | None:
    """An ISO 8601 time as UTC with milliseconds (comparable as text); a naive one is UTC."""
    if stamp is None:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise UsageError(f"not an ISO 8601 time: {stamp!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return iso_ms(when.astimezone(UTC))


def value_hash(value: Any) -> str:
    """SHA-256 of a value's canonical JSON: what an endorsement is bound to."""
    return sha256_hex(canonical_json(value))


# -- sources --------------------------------------------------------------------------------


def _path_text(path: Iterable[str]) -> str:
    """``("*", "recipient")`` as ``[*].recipient``; list indexes are written ``[*]`` too."""
    out = ""
    for seg in path:
        out += "[*]" if seg == ANY_ITEM or seg.isdigit() else f".{seg}"
    return out.removeprefix(".")


def _origin(steps: Mapping[str, CompiledStep], ref: Ref) -> str:
    if ref.source == "input":
        path = _path_text(ref.path)
        return f"input:{ref.name}" + (f".{path}" if path and not path.startswith("[") else path)
    step = steps.get(ref.name)
    if ref.source != "step" or step is None:
        return f"{ref.source}:{ref.name}"
    path = _path_text(ref.path)
    if step.tool.name != LLM_TOOL:
        return f"tool:{step.tool.name}" + (f"#{path}" if path else "")
    inner = ref.path[1:] if step.for_each is not None else ref.path
    for fld, allowed in step.choices:
        if fld is None or inner[:1] == (fld,):
            return f"chosen:{_origin(steps, allowed)}"
    read = sorted({_origin(steps, r) for r in _refs(step, step.args.values())})
    return f"llm{'#' + path if path else ''}({','.join(read)})"


def _refs(step: CompiledStep, templates: Iterable[Any]) -> Iterable[Ref]:
    for t in templates:
        yield from refs_of(expand_items(t, step.for_each) if step.for_each else t)


def value_source(steps: Mapping[str, CompiledStep], step: CompiledStep, param: str) -> str:
    """Where the value of ``step``'s argument ``param`` comes from, stated without step ids (see
    the module docstring); ``plan`` for a literal the plan wrote."""
    template = step.args.get(param)
    if template is None:
        return "plan"
    origins = sorted({_origin(steps, r) for r in _refs(step, (template,))})
    return "+".join(origins) or "plan"


# -- the model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endorsable:
    """What a call offers to endorse: one parameter's value, bound like an endorsement."""

    param: str
    value_hash: str
    source: str
    target: str
    """``tool.param`` of the call."""

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endorsable:
        return cls(
            str(data["param"]), str(data["value_hash"]), str(data["source"]), str(data["target"])
        )


@dataclass(frozen=True, slots=True)
class Endorsement:
    """A person's word that one concrete value, from one source, is what its label says."""

    value_hash: str
    """SHA-256 of the value's canonical JSON."""
    source: str
    """Where the value came from (``tool:get_transactions#[*].recipient``); see the module."""
    label: str
    """The value's human meaning: ``landlord``, ``Sarah``."""
    by: str
    """Who endorsed it."""
    target: str | None = None
    """``tool.param`` it may reach; None: any sensitive parameter."""
    at: str = field(default_factory=iso_ms)
    expires_at: str | None = None
    """ISO 8601 UTC; not used after this."""
    revoked_at: str | None = None
    revoked_by: str | None = None
    via: str = "api"
    """How it was given: ``terminal``, ``cli``, ``http``, ``api``."""
    id: str = field(default_factory=lambda: str(ULID()))

    def __post_init__(self) -> None:
        if len(self.value_hash) != 64:
            raise UsageError("an endorsement names a SHA-256 value hash (64 hex digits)")
        if not self.source:
            raise UsageError("an endorsement needs a source")
        if not self.label.strip() or len(self.label) > MAX_LABEL:
            raise UsageError(f"an endorsement needs a label (1 to {MAX_LABEL} characters)")
        if not self.by:
            raise UsageError("an endorsement needs a name (who endorses)")
        if self.target is not None and "." not in self.target:
            raise UsageError(f"a target is TOOL.PARAM, not {self.target!r}")
        object.__setattr__(self, "expires_at", _utc(self.expires_at))

    def live(self, now: str | None = None) -> bool:
        """Neither revoked nor expired at ``now`` (ISO 8601 UTC; default: now)."""
        now = now or iso_ms()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def covers(self, value_hash: str, source: str, target: str, now: str | None = None) -> bool:
        """Whether this endorsement lets a value with this hash, from this source, reach
        ``target`` (``tool.param``) at ``now``."""
        return (
            self.value_hash == value_hash
            and self.source == source
            and self.target in (None, target)
            and self.live(now)
        )

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endorsement:
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})

    @classmethod
    def of_value(cls, value: Any, **fields: Any) -> Endorsement:
        """An endorsement of ``value`` (hashed here): ``Endorsement.of_value(iban, source=...,
        label="landlord", by="dana")``."""
        return cls(value_hash(value), **fields)


@dataclass(frozen=True, slots=True)
class EndorseAs:
    """A person's request to endorse, with their approval of a call, the values it offers."""

    label: str
    params: tuple[str, ...] | None = None
    """Which of the call's endorsable parameters; None: every one."""
    any_target: bool = False
    """Let the values reach any sensitive parameter, not only this call's tool and parameter."""
    expires_at: str | None = None

    def labels(self, offered: Sequence[Endorsable]) -> dict[str, str]:
        names = self.params if self.params is not None else tuple(o.param for o in offered)
        return dict.fromkeys(names, self.label)


def make_endorsements(
    offered: Sequence[Endorsable],
    labels: Mapping[str, str],
    *,
    by: str,
    via: str,
    any_target: bool = False,
    expires_at: str | None = None,
) -> tuple[Endorsement, ...]:
    """The endorsements a person gives for a call's offers (``labels``: param -> label), one per
    value offered (a loop's request offers a parameter's value of each call). A parameter the
    call does not offer is a UsageError."""
    by_param = {o.param: o for o in offered}
    if not by_param:
        raise UsageError("this request offers no value to endorse")
    unknown = sorted(set(labels) - set(by_param))
    if unknown or not labels:
        offers_text = ", ".join(sorted(by_param))
        raise UsageError(f"endorse one of this call's values: {offers_text} (not {unknown})")
    at = iso_ms()
    return tuple(
        Endorsement(
            o.value_hash,
            o.source,
            labels[o.param],
            by,
            target=None if any_target else o.target,
            at=at,
            expires_at=expires_at,
            via=via,
        )
        for o in dict.fromkeys(offered)
        if o.param in labels
    )


def offers(
    steps: Mapping[str, CompiledStep],
    step: CompiledStep,
    args: Mapping[str, Any],
    reasons: Iterable[Reason],
) -> tuple[Endorsable, ...]:
    """What a call may have endorsed: the value of each parameter whose default flow reason
    (``flow:<p>`` / ``choice:<p>``) asks a person."""
    params = sorted(
        {
            p
            for r in reasons
            if r.action == "require_approval" and r.key.startswith(ENDORSABLE_KEYS)
            for p in r.params
            if p in args
        }
    )
    target = step.tool.name
    return tuple(
        Endorsable(p, value_hash(args[p]), value_source(steps, step, p), f"{target}.{p}")
        for p in params
    )
