"""A tool's pydantic parts are built once per shape (``planlock.tools._models``): registries built
again from the same functions share them, and nothing that tells two tools apart is lost."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from planlock import demo
from planlock.tools import make_tool
from planlock.tools._models import _adapter, _args_model


def test_registries_built_again_share_their_models_and_adapters() -> None:
    first = demo.build_registry(demo.HelpDesk.sample())
    before = (_args_model.cache_info().hits, _adapter.cache_info().hits)
    second = demo.build_registry(demo.HelpDesk.sample())
    after = (_args_model.cache_info().hits, _adapter.cache_info().hits)
    for a in first:
        b = second[a.name]
        assert a.args_model is b.args_model
        assert a.param_adapters.keys() == b.param_adapters.keys()
        assert all(a.param_adapters[p] is b.param_adapters[p] for p in a.param_adapters)
        assert a.fn is not b.fn  # each registry still calls its own help desk
    assert after[0] - before[0] == len(first)
    assert after[1] > before[1]


def _defaults(fn: Any) -> dict[str, Any]:
    return make_tool(fn, name="f").args_model.model_validate({}).model_dump()


def test_equal_defaults_of_other_types_keep_their_type() -> None:
    def as_int(x: float = 0) -> None: ...
    def as_float(x: float = 0.0) -> None: ...
    def as_bool(x: float | bool = False) -> None: ...
    def as_tuple(x: tuple[float, ...] = (0,)) -> None: ...
    def as_float_tuple(x: tuple[float, ...] = (0.0,)) -> None: ...

    values = [_defaults(f)["x"] for f in (as_int, as_float, as_bool, as_tuple, as_float_tuple)]
    assert [(type(v), v) for v in values] == [
        (int, 0),
        (float, 0.0),
        (bool, False),
        (tuple, (0,)),
        (tuple, (0.0,)),
    ]
    assert type(values[3][0]) is int
    assert type(values[4][0]) is float


def test_descriptions_and_names_are_part_of_the_shape() -> None:
    def first(x: int) -> None:
        """Do it.

        Args:
            x: the first count.
        """

    def second(x: int) -> None:
        """Do it.

        Args:
            x: another count.
        """

    a, b = make_tool(first, name="count"), make_tool(second, name="count")
    assert a.args_model is not b.args_model
    assert a.params_schema["properties"]["x"]["description"] == "the first count."
    assert b.params_schema["properties"]["x"]["description"] == "another count."
    assert make_tool(first, name="other").args_model is not a.args_model


def test_unhashable_defaults_and_types_are_built_without_the_cache() -> None:
    def listed(x: list[int] = [1, 2]) -> None: ...  # noqa: B006  (an unhashable default, on purpose)
    def annotated(x: Annotated[int, {"unit": "EUR"}] = 3) -> None: ...

    before = (_args_model.cache_info(), _adapter.cache_info())
    assert _defaults(listed) == {"x": [1, 2]}
    assert _defaults(annotated) == {"x": 3}
    after = (_args_model.cache_info(), _adapter.cache_info())
    assert after[0].currsize == before[0].currsize
    with pytest.raises(ValueError, match="valid integer"):
        make_tool(annotated, name="f").args_model.model_validate({"x": "three"})
