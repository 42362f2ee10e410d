"""The plan: steps, parsing of the seed and canonical forms, canonical JSON, hash (placeholders:
``_refs``).

A plan is data. Parsing checks its *structure* (and reports every structural problem with its
JSON path); checking it against a tool registry is the validator's job (``_validate``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from planlock.core._issue import Issue
from planlock.core._refs import Ref
from planlock.errors import PlanInvalid

__all__ = [
    "AllOf",
    "AnyOf",
    "Compare",
    "Condition",
    "Coverage",
    "Not",
    "Plan",
    "Ref",
    "Step",
    "canonical_json",
    "sha256_hex",
]

STEP_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_ITEMS_CAP = 100
"""The largest ``max_items`` a ``for_each`` step may declare."""


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
"""One encoder for every canonical form: ``json.dumps`` with these options builds a new one per
call, which costs more than encoding a journal event."""


def _c_encoder() -> Any:
    """CPython's C encoder with the canonical options, made once: ``encode`` makes one per call.
    Without the check for circular references (JSON values have none; one would end in a
    RecursionError instead of a ValueError). None where the C encoder is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    strings = json.encoder.encode_basestring
    return make(None, _CANONICAL.default, strings, None, ":", ",", True, False, False)


_C_ENCODER = _c_encoder()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace: the form that is hashed."""
    if _C_ENCODER is not None and type(value) in (dict, list):
        return "".join(_C_ENCODER(value, 0))
    return _CANONICAL.encode(value)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


StepId = Annotated[str, Field(pattern=STEP_ID_PATTERN)]


# --- conditions (``when``) -------------------------------------------------------------------

WHOLE_PLACEHOLDER_PATTERN = r"^\{\{[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\}\}$"
"""A whole ``{{...}}`` placeholder with no ``[*]`` projection (what a condition's ``ref`` is)."""
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
"""A literal a condition compares with: a boolean, a number or an (enum) string."""
CompareOp = Literal["eq", "ne", "lt", "le", "gt", "ge", "in"]
ORDER_OPS = frozenset({"lt", "le", "gt", "ge"})
"""The operators that compare numbers."""
_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Compare(BaseModel):
    """``ref op value``: a typed value (a boolean, an enum, a number) from an earlier step or a
    trusted input, compared with a literal: ``{"ref": "{{steps.2.output.is_due}}", "op": "eq",
    "value": true}``."""

    model_config = _FROZEN

    ref: str = Field(json_schema_extra={"pattern": WHOLE_PLACEHOLDER_PATTERN})
    """One whole placeholder naming a boolean, a number or an enum value."""
    op: CompareOp
    """``eq``, ``ne``; ``lt``, ``le``, ``gt``, ``ge`` (numbers); ``in`` (one of a list)."""
    value: Scalar | tuple[Scalar, ...]
    """The literal: one value, or for ``in`` a non-empty list of values."""

    @model_validator(mode="after")
    def _value_fits_op(self) -> Compare:
        if self.op == "in":
            if not isinstance(self.value, tuple) or not self.value:
                raise ValueError("'in' takes a non-empty list of values")
        elif isinstance(self.value, tuple):
            raise ValueError(f"'{self.op}' takes one value, not a list (a list is for 'in')")
        elif self.op in ORDER_OPS and isinstance(self.value, bool | str):
            raise ValueError(f"'{self.op}' compares numbers: its value must be a number")
        return self


class AllOf(BaseModel):
    """Every condition holds: ``{"all": [...]}``."""

    model_config = _FROZEN

    all: tuple[Condition, ...] = Field(min_length=1)


class AnyOf(BaseModel):
    """At least one condition holds: ``{"any": [...]}``."""

    model_config = _FROZEN

    any: tuple[Condition, ...] = Field(min_length=1)


class Not(BaseModel):
    """The condition does not hold: ``{"not": {...}}``."""

    model_config = _FROZEN

    not_: Condition = Field(alias="not")


_CONDITION_TAGS = {"ref": "Compare", "all": "AllOf", "any": "AnyOf", "not": "Not"}


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, Compare | AllOf | AnyOf | Not):
        return type(value).__name__
    if isinstance(value, dict):
        return next((tag for key, tag in _CONDITION_TAGS.items() if key in value), None)
    return None


Condition = Annotated[
    Annotated[Compare, Tag("Compare")]
    | Annotated[AllOf, Tag("AllOf")]
    | Annotated[AnyOf, Tag("AnyOf")]
    | Annotated[Not, Tag("Not")],
    Discriminator(
        _condition_tag,
        custom_error_type="invalid_condition",
        custom_error_message=(
            'a condition is {"ref": "{{...}}", "op": ..., "value": ...}, {"all": [...]}, '
            '{"any": [...]} or {"not": {...}}'
        ),
    ),
]
"""A step's ``when``: a comparison, or ``all`` / ``any`` / ``not`` of conditions."""

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()


class Step(BaseModel):
    """One tool call in a plan."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: StepId = Field(alias="step")
    """Unique id of the step; the seed's integers are accepted and kept as strings."""
    tool: str = Field(min_length=1)
    """Name of the tool to call, from the registry (or the built-in ``llm``)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments; any string may hold ``{{...}}`` placeholders."""
    checkpoint: bool = False
    """After this step, the remaining plan is reviewed (adaptive replanning)."""
    after: tuple[StepId, ...] = ()
    """Explicit dependencies, in addition to those derived from placeholders."""
    for_each: str | None = None
    """A whole placeholder naming a list (``{{steps.1.output.items}}``): the step's tool runs
    once per item, with ``{{item}}`` / ``{{item.<path>}}`` in its arguments; its output is the
    list of every iteration's output. Data decides how many times, never which tool."""
    max_items: int | None = Field(default=None, ge=1)
    """Required with ``for_each``: a list longer than this fails the step before any iteration
    runs (nothing is silently dropped)."""
    when: Condition | None = None
    """Run the step only if this condition holds, checked just before the step would run; when
    it does not, the step and the steps that read its output are skipped. Both branches are part
    of the approved plan: data decides whether the step runs, never which tool."""

    @field_validator("id", mode="before")
    @classmethod
    def _int_ids(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v

    @field_validator("after", mode="before")
    @classmethod
    def _int_afters(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v


class Coverage(BaseModel):
    """One part of the goal and the steps that serve it: the planner's own claim, which the
    validator checks (each step exists; a part that asks to send, pay, delete or write is served
    by a step with that effect). It is advice for the person approving: it never makes a plan run.
    """

    model_config = _FROZEN

    part: str = Field(min_length=1, max_length=300)
    """A part of the goal, in the goal's words (``post the summary to the team``)."""
    steps: tuple[StepId, ...]
    """The ids of the steps that serve it; empty when no step does."""

    @field_validator("steps", mode="before")
    @classmethod
    def _int_steps(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v


class Plan(BaseModel):
    """A complete plan: the canonical object form.

    The seed's form, a bare JSON array of ``{"step", "tool", "args"}``, parses to the same model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    """Format version."""
    goal: str | None = None
    """The goal the plan serves (trusted: it comes from the user)."""
    steps: tuple[Step, ...]
    """The steps. Order is for display; execution order comes from dependencies."""
    coverage: tuple[Coverage, ...] = ()
    """Optional: for each part of the goal, the steps that serve it (see ``Coverage``)."""

    @classmethod
    def parse(cls, data: str | bytes | list[Any] | dict[str, Any]) -> Plan:
        """Parse JSON text or decoded JSON in either form. Raises PlanInvalid with every issue."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data, parse_constant=_reject_constant)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
                raise PlanInvalid(
                    [Issue("not_json", "$", f"plan is not valid JSON: {exc}")]
                ) from None
        prefix = "$"
        if isinstance(data, list):
            data = {"steps": data}
            prefix = "$seed"
        if not isinstance(data, dict):
            msg = f"a plan is a JSON array of steps or an object, not {type(data).__name__}"
            raise PlanInvalid([Issue("malformed", "$", msg)])
        try:
            plan = cls.model_validate(data)
        except ValidationError as exc:
            issues = [
                Issue("malformed", _error_path(prefix, tuple(e["loc"])), _error_message(e))
                for e in exc.errors(include_url=False)
            ]
            raise PlanInvalid(issues) from None
        try:
            plan.canonical_json().encode()  # what .hash needs: finite numbers, encodable text
        except ValueError as exc:  # includes UnicodeEncodeError
            msg = f"plan cannot be written as canonical JSON: {exc}"
            raise PlanInvalid([Issue("malformed", "$", msg)]) from None
        return plan

    def canonical(self) -> dict[str, Any]:
        """The canonical object form as plain JSON data."""
        return {
            "version": self.version,
            "goal": self.goal,
            "steps": [
                {
                    "id": s.id,
                    "tool": s.tool,
                    "args": s.args,
                    "checkpoint": s.checkpoint,
                    "after": list(s.after),
                    # Loop fields only when set, so the hashes of plans without loops stay.
                    **(
                        {"for_each": s.for_each, "max_items": s.max_items}
                        if s.for_each is not None or s.max_items is not None
                        else {}
                    ),
                    **({"when": condition_json(s.when)} if s.when is not None else {}),
                }
                for s in self.steps
            ],
            # Only when stated, so the hashes of plans without coverage stay.
            **(
                {"coverage": [{"part": c.part, "steps": list(c.steps)} for c in self.coverage]}
                if self.coverage
                else {}
            ),
        }

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON: what an approval binds to (R7)."""
        return sha256_hex(self.canonical_json())


def condition_json(cond: Condition) -> dict[str, Any]:
    """A condition as plain JSON data (its canonical form)."""
    data: dict[str, Any] = cond.model_dump(mode="json", by_alias=True)
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_TAG_NAMES = frozenset(_CONDITION_TAGS.values())


def _error_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = "$"
    rest = loc
    if prefix == "$seed" and loc[:1] == ("steps",):
        rest = loc[1:]
    elif loc:
        path, rest = f"$.{loc[0]}", loc[1:]
    for part in rest:
        if part in _TAG_NAMES:
            continue  # the union member a condition was read as: not a key of the plan
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _error_message(err: Any) -> str:
    if err["type"] == "missing":
        return f"'{err['loc'][-1]}' is required"
    if err["type"] == "extra_forbidden":
        return f"unknown field '{err['loc'][-1]}'"
    if err["type"] == "string_pattern_mismatch":
        return "a step id is 1-64 letters, digits, '_' or '-'"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return str(err["ctx"]["error"])
    return str(err["msg"])
