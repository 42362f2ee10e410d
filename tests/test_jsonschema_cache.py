"""``planlock.core.validate_json`` and ``schema_error``: what ``jsonschema`` says, with each schema
checked and compiled once (an ``llm`` step's reply is checked against the same schema every run)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import pytest

from planlock.core import schema_error, validate_json
from planlock.core._jsonschema import _draft_2020_12_error, _validator

SCHEMA = {
    "type": "object",
    "properties": {"iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}"}, "n": {"minimum": 0}},
    "required": ["iban"],
}


@pytest.mark.parametrize(
    "value",
    [{"iban": "DE89"}, {"iban": "x"}, {"n": -1}, {"iban": "DE89", "n": -1}, [], "text", None],
)
def test_the_same_verdict_and_message_as_jsonschema(value: Any) -> None:
    theirs = _error(jsonschema.validate, value)
    ours = _error(validate_json, value)
    assert (theirs is None) == (ours is None)
    if theirs is not None and ours is not None:
        assert (ours.message, list(ours.path)) == (theirs.message, list(theirs.path))


def _error(check: Any, value: Any) -> jsonschema.ValidationError | None:
    try:
        check(value, SCHEMA)
    except jsonschema.ValidationError as exc:
        return exc
    return None


def test_a_schema_is_checked_and_compiled_once() -> None:
    schema = {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
    same = {"maxItems": 3, "items": {"enum": ["a", "b"]}, "type": "array"}  # other key order
    before = _validator.cache_info()
    validate_json(["a"], schema)
    validate_json(["b", "a"], same)
    with pytest.raises(jsonschema.ValidationError, match="'c' is not one of"):
        validate_json(["c"], schema)
    after = _validator.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)


def test_a_bad_schema_is_a_schema_error_every_time() -> None:
    bad = {"type": "no-such-type"}
    for _ in range(2):
        with pytest.raises(jsonschema.SchemaError):
            validate_json(1, bad)
    assert schema_error(bad) == _schema_error_of(bad).message
    assert schema_error(SCHEMA) is None


def _schema_error_of(schema: dict[str, Any]) -> jsonschema.SchemaError:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc
    raise AssertionError("the schema is valid")


def test_schema_error_is_kept_per_schema() -> None:
    schema = {"type": "object", "minProperties": -1}
    before = _draft_2020_12_error.cache_info()
    first, second = schema_error(schema), schema_error(dict(schema))
    assert first is not None
    assert first == second
    after = _draft_2020_12_error.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


def test_a_schema_that_is_not_json_is_checked_without_the_cache() -> None:
    # An enum of values a tool returned may hold what JSON cannot (a date, here).
    day = dt.date(2026, 12, 6)
    schema = {"enum": [day, "x"]}
    before = _validator.cache_info()
    validate_json(day, schema)
    with pytest.raises(jsonschema.ValidationError):
        validate_json("y", schema)
    assert _validator.cache_info() == before
    assert schema_error(schema) is None
