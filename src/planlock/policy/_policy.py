"""Policy: which calls may run, which need a person, which are denied (R5, R6).

A policy is data: per-effect defaults, what to do when untrusted data reaches a ``sensitive``
parameter, and rules per tool or per effect with optional conditions on the resolved arguments
(a JSON Schema they must satisfy, as Progent does) and on provenance (which parameters carry
untrusted data). Deny always wins. Load one from TOML or YAML, or build it in Python.

The same ``evaluate`` runs twice: at approval time on the plan's templates (static: provenance is
exact, argument conditions are known only for literals) and just before each call on the
concrete values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planlock.core import schema_error
from planlock.errors import UsageError
from planlock.tools import LLM_STEP_TOOL, UNDECLARED, Tool, ToolRegistry
from planlock.validation import chosen_labels, untrusted_labels

__all__ = ["Action", "Policy", "Reason", "Rule", "Verdict", "evaluate", "fixed_verdict"]

Action = Literal["allow", "require_approval", "deny"]
_RANK: dict[str, int] = {"allow": 0, "require_approval": 1, "deny": 2}
EffectName = Literal["read", "write", "delete", "send", "pay", "undeclared"]
_LOCAL_KEYWORDS = frozenset(
    {"type", "properties", "required", "title", "description", "$schema", "$comment"}
)


def _condition_params(schema: dict[str, Any]) -> set[str] | None:
    """The parameters an args condition looks at, or None when it may look at any of them
    (``not``, ``anyOf``, ``additionalProperties``, ``if``... see the whole arguments object)."""
    if not set(schema) <= _LOCAL_KEYWORDS:
        return None
    return set(schema.get("properties", {})) | set(schema.get("required", []))


class Rule(BaseModel):
    """One rule. It applies to a call when every condition it states holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    """What to do when the rule applies."""
    tool: str | None = None
    """Applies to this tool only."""
    effect: EffectName | None = None
    """Applies to tools with this effect."""
    args: dict[str, Any] | None = None
    """A JSON Schema the resolved arguments (an object) must satisfy for the rule to apply."""
    untrusted: tuple[str, ...] | None = None
    """Applies when any of these parameters carries untrusted data (``*``: any parameter).
    A rule with this condition also decides the untrusted-to-sensitive flow for those parameters."""
    chosen: tuple[str, ...] | None = None
    """Applies when any of these parameters (``*``: any) carries a value that an ``llm`` step
    chose among trusted values (``choices``) after reading untrusted text. A rule with this
    condition also decides that choice flow for those parameters."""
    reason: str = ""
    """Shown to approvers and journaled."""

    @model_validator(mode="after")
    def _check(self) -> Rule:
        problem = None if self.args is None else schema_error(self.args)
        if problem is not None:
            raise ValueError(f"'args' is not a valid JSON Schema: {problem}")
        return self


def _default_effects() -> dict[str, Action]:
    return {
        "read": "allow",
        "write": "require_approval",
        "delete": "require_approval",
        "send": "require_approval",
        "pay": "require_approval",
        UNDECLARED: "require_approval",
    }


class Policy(BaseModel):
    """The default policy: read-only work runs; writes, deletes, sends and payments need a
    person; untrusted data in a sensitive parameter needs a person to see the concrete value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effects: dict[EffectName, Action] = Field(default_factory=_default_effects)  # type: ignore[arg-type]
    """Default action per effect (effects not listed keep their default)."""
    untrusted_to_sensitive: Action = "require_approval"
    """What to do when untrusted data reaches a ``sensitive`` parameter."""
    chosen_to_sensitive: Action = "require_approval"
    """What to do when a ``sensitive`` parameter gets a value an ``llm`` step *chose* among
    trusted values (its ``choices``): the value is trusted, but untrusted text picked it, so an
    attacker could pick another of the allowed values (never a new one)."""
    ungrounded_literal: Action = "allow"
    """What to do when a literal in a ``sensitive`` parameter of a side-effecting step does not
    appear in the plan's goal (a string not in its words, a number not among its numbers): a
    planner model made it up (a payee, an amount, an address the user never gave), and the
    plan is the place a person sees it (``literal:<param>``, on the plan, before anything runs).
    ``allow`` by default: a hand-written plan's literals are its author's. Set
    ``require_approval`` where a model writes the plans and the policy lets writes run without
    a person (``planlock.policy.ungrounded``)."""
    rules: tuple[Rule, ...] = ()
    """Rules, checked in order; deny always wins, then require_approval, then allow."""

    @model_validator(mode="after")
    def _fill(self) -> Policy:
        if self.effects.get(UNDECLARED) == "allow":  # type: ignore[call-overload]
            raise ValueError(
                "effects.undeclared cannot be 'allow': a tool that declares no effect always "
                "needs a person (declare the tool's effect instead)"
            )
        merged: dict[Any, Action] = {**_default_effects(), **self.effects}
        object.__setattr__(self, "effects", merged)
        return self

    @classmethod
    def load(cls, path: str | Path, registry: ToolRegistry | None = None) -> Policy:
        """Load from a ``.toml``, ``.yaml`` or ``.yml`` file; check it against ``registry``."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read policy {p}: {exc.strerror}") from None
        if p.suffix == ".toml":
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise UsageError(f"policy {p} is not valid TOML: {exc}") from None
        else:
            import yaml  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UsageError(
                    f"policy {p} is not valid {p.suffix.lstrip('.').upper()}: {exc}"
                ) from None
        return cls.from_data(data or {}, registry, source=str(p))

    @classmethod
    def from_data(
        cls, data: Any, registry: ToolRegistry | None = None, source: str = "policy"
    ) -> Policy:
        try:
            policy = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise UsageError(f"{source}: {problems}") from None
        if registry is not None:
            policy.check(registry, source)
        return policy

    def check(self, registry: ToolRegistry, source: str = "policy") -> None:
        """Refuse rules that name unknown tools or parameters (a typo must not silently allow)."""

        builtin = {LLM_STEP_TOOL.name: LLM_STEP_TOOL}
        problems: list[str] = []
        for i, rule in enumerate(self.rules):
            where = f"rules[{i}]"
            tool = (registry.get(rule.tool) or builtin.get(rule.tool)) if rule.tool else None
            if rule.tool and tool is None:
                problems.append(f"{where}: unknown tool '{rule.tool}'")
                continue
            if tool is None:
                for cond in ("untrusted", "chosen"):
                    named_ = getattr(rule, cond)
                    if named_ and named_ != ("*",):
                        problems.append(
                            f"{where}: '{cond}' names parameters, so the rule needs a 'tool'"
                        )
                continue
            params = set(tool.params_schema.get("properties", {}))
            named = [n for n in (*(rule.untrusted or ()), *(rule.chosen or ())) if n != "*"]
            named += list((rule.args or {}).get("properties", {}))
            problems.extend(
                f"{where}: tool '{tool.name}' has no parameter '{n}'"
                for n in named
                if n not in params
            )
            if rule.effect and rule.effect != tool.effect:
                problems.append(
                    f"{where}: tool '{tool.name}' has effect '{tool.effect}', not '{rule.effect}'"
                )
        if problems:
            raise UsageError(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a call is not simply allowed."""

    key: str
    """Stable identity: ``effect:send``, ``rule:2``, ``flow:recipient``."""
    action: Action
    message: str
    at_call: bool = False
    """Must be approved on the concrete call (a person must see the actual values), not on the
    plan: untrusted data in a sensitive parameter, or a condition on values."""
    certain: bool = True
    """False when the static check cannot tell whether the reason applies (a condition on a
    value that only the run will know); the run decides."""
    params: tuple[str, ...] = ()
    """For a flow: the parameters carrying untrusted data."""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action,
            "message": self.message,
            "at_call": self.at_call,
            "certain": self.certain,
            "params": list(self.params),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer for one call: the action the certain reasons add up to, and every
    reason that is not a plain allow."""

    action: Action
    reasons: tuple[Reason, ...]
    """Every reason considered, ``allow`` ones included (they explain flows that are allowed)."""

    @property
    def concerns(self) -> tuple[Reason, ...]:
        """The reasons that are not a plain allow."""
        return tuple(r for r in self.reasons if r.action != "allow")


def evaluate(
    policy: Policy,
    tool: Tool,
    args: Mapping[str, Any],
    provenance: Mapping[str, frozenset[str] | list[str]],
    is_trusted: Callable[[str], bool],
    describe: Callable[[str], str] = str,
    *,
    known: Callable[[str], bool] = lambda _: True,
    decided_by: Iterable[str] = (),
) -> Verdict:
    """Decide one call. ``provenance`` maps each argument to its source labels; ``known(param)``
    says whether the argument's value is known (the static check sees only literals);
    ``decided_by`` holds the ``branch:<id>`` labels of the conditions, read from data untrusted
    text may decide, on which it depends whether the call happens at all (the step's marks)."""
    untrusted = {p: untrusted_labels(srcs, is_trusted) for p, srcs in provenance.items()}
    untrusted = {p: s for p, s in untrusted.items() if s}
    chosen = {p: chosen_labels(srcs) for p, srcs in provenance.items() if p not in untrusted}
    chosen = {p: s for p, s in chosen.items() if s}
    reasons: list[Reason] = []
    definite: list[Reason] = []
    flow_overrides: set[str] = set()
    for i, rule in enumerate(policy.rules):
        if rule.tool is not None and rule.tool != tool.name:
            continue
        if rule.effect is not None and rule.effect != tool.effect:
            continue
        key = f"rule:{i}"
        label = rule.reason or f"policy rule {i}"
        undecided = False
        if rule.args is not None:
            needed = _condition_params(rule.args)
            looked_at = [p for p in args if needed is None or p in needed]
            if not all(known(p) for p in looked_at):
                undecided = True  # depends on values only the run will know
            elif not _validator(rule.args).is_valid(dict(args)):
                continue
        if rule.untrusted is not None or rule.chosen is not None:
            hit, message = _flow_hit(rule, args, untrusted, chosen, describe, label)
            if not hit:
                continue
            if not undecided:  # a rule that may not apply cannot replace the default for a flow
                flow_overrides.update(hit)
            reasons.append(
                Reason(
                    key,
                    rule.action,
                    message,
                    at_call=True,
                    certain=not undecided,
                    params=tuple(hit),
                )
            )
        elif undecided:
            # The rule may or may not apply: keep the effect's default (a conditional allow
            # cannot waive approval in advance) and note what the rule could decide at run time.
            message = f"{label} (decided on the values at run time)"
            reasons.append(Reason(key, rule.action, message, at_call=True, certain=False))
        else:
            definite.append(Reason(key, rule.action, label))
    if tool.effect == UNDECLARED:
        # The floor no rule or effect setting lowers: at least a person, and at least what the
        # policy asks for its most dangerous declared effect (a policy that denies ``pay`` denies
        # an undeclared tool too). It stands even beside a rule that allows the tool.
        action = max(("require_approval", *policy.effects.values()), key=_RANK.__getitem__)
        reasons.extend(definite)
        reasons.append(Reason(f"effect:{UNDECLARED}", action, "declares no effect"))
    elif definite:
        reasons.extend(definite)
    else:
        action = policy.effects.get(cast("EffectName", tool.effect), "require_approval")
        reasons.append(Reason(f"effect:{tool.effect}", action, f"effect '{tool.effect}'"))
    for p in sorted(tool.sensitive):
        if p in chosen and p not in flow_overrides:
            message = (
                f"a value chosen by untrusted text (among trusted values, or by a condition) "
                f"reaches sensitive parameter {tool.name}.{p} ({_sources([p], chosen, describe)})"
            )
            reasons.append(
                Reason(
                    f"choice:{p}", policy.chosen_to_sensitive, message, at_call=True, params=(p,)
                )
            )
        if p in untrusted and p not in flow_overrides:
            message = (
                f"untrusted data reaches sensitive parameter {tool.name}.{p} "
                f"({_sources([p], untrusted, describe)})"
            )
            reasons.append(
                Reason(
                    f"flow:{p}", policy.untrusted_to_sensitive, message, at_call=True, params=(p,)
                )
            )
    # Conditionals (issue 12): whether a side-effecting call runs at all, decided by untrusted
    # text, is treated like a value it chose (``chosen_to_sensitive``), on the concrete call.
    branches = sorted(set(decided_by))
    if branches and not tool.read_only:
        message = (
            f"whether this {tool.effect} call runs is decided by untrusted text "
            f"({', '.join(describe(b) for b in branches)})"
        )
        reasons.append(Reason("branch", policy.chosen_to_sensitive, message, at_call=True))
    final: Action = max(
        (r.action for r in reasons if r.certain), key=_RANK.__getitem__, default="allow"
    )
    return Verdict(final, tuple(reasons))


def fixed_verdict(
    policy: Policy,
    tool: Tool,
    is_trusted: Callable[[str], bool],
    describe: Callable[[str], str] = str,
    marks: Iterable[str] = (),
) -> Verdict | None:
    """The verdict on every call of ``tool`` (in a step with these ``marks``) when it cannot
    depend on the call's values: the tool has no sensitive parameter and no rule that applies
    to it looks at arguments or provenance. None when the values matter (``evaluate`` each
    call). This is the policy compiled once per plan: a call check is then a lookup."""
    if tool.sensitive:
        return None
    for rule in policy.rules:
        if rule.tool is not None and rule.tool != tool.name:
            continue
        if rule.effect is not None and rule.effect != tool.effect:
            continue
        if rule.args is not None or rule.untrusted is not None or rule.chosen is not None:
            return None
    return evaluate(policy, tool, {}, {}, is_trusted, describe, decided_by=marks)


def _flow_hit(
    rule: Rule,
    args: Mapping[str, Any],
    untrusted: Mapping[str, list[str]],
    chosen: Mapping[str, list[str]],
    describe: Callable[[str], str],
    label: str,
) -> tuple[list[str], str]:
    """The parameters a provenance condition of ``rule`` hits, and the message."""
    hit: list[str] = []
    parts: list[str] = []
    for cond, found, what in (
        (rule.untrusted, untrusted, "untrusted data"),
        (rule.chosen, chosen, "a value chosen by untrusted text"),
    ):
        if cond is None:
            continue
        params = list(args) if "*" in cond else list(cond)
        mine = [p for p in params if p in found and p not in hit]
        if mine:
            hit += mine
            parts.append(f"{what} in {', '.join(mine)} ({_sources(mine, found, describe)})")
    return hit, f"{label}: " + "; ".join(parts)


def _sources(
    params: list[str], untrusted: Mapping[str, list[str]], describe: Callable[[str], str]
) -> str:
    labels = sorted({s for p in params for s in untrusted[p]})
    return "from " + ", ".join(describe(s) for s in labels)


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

    return jsonschema.Draft202012Validator(schema)
