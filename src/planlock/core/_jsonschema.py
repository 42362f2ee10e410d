"""JSON Schema checks that pay for a schema once: its check against its metaschema and its
compiled validator are kept per schema (by its canonical JSON), not redone at every value.

``jsonschema.validate`` checks the schema against the metaschema on every call, which costs far
more than validating a small value: an ``llm`` step's reply, for one, is checked against the same
schema on every run of the plan.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from planlock.core._plan import canonical_json

__all__ = ["schema_error", "validate_json"]

_CACHED = 512


def _key(schema: dict[str, Any]) -> str | None:
    try:
        return canonical_json(schema)
    except (TypeError, ValueError):  # not JSON (a value a tool returned, NaN): not cached
        return None


@functools.lru_cache(maxsize=_CACHED)
def _validator(key: str) -> Any:
    import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

    schema = json.loads(key)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # SchemaError for a bad schema (not cached: raised every time)
    return cls(schema)


def validate_json(instance: Any, schema: dict[str, Any]) -> None:
    """What ``jsonschema.validate(instance, schema)`` does, raising the same errors: the best
    ``ValidationError`` for a value that does not match, ``SchemaError`` for a bad schema."""
    import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

    key = _key(schema)
    if key is None:
        jsonschema.validate(instance, schema)
        return
    error = jsonschema.exceptions.best_match(_validator(key).iter_errors(instance))
    if error is not None:
        raise error


def _draft_2020_12_problem(schema: dict[str, Any]) -> str | None:
    import jsonschema  # noqa: PLC0415  (imported on first use: `import planlock` stays light)

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None


@functools.lru_cache(maxsize=_CACHED)
def _draft_2020_12_error(key: str) -> str | None:
    return _draft_2020_12_problem(json.loads(key))


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (draft 2020-12), or None when it is."""
    key = _key(schema)
    return _draft_2020_12_problem(schema) if key is None else _draft_2020_12_error(key)
