from __future__ import annotations

from collections.abc import Iterator

import pytest

from planlock import ToolRegistry, demo
from planlock.testing import memory_journal


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def desk() -> demo.HelpDesk:
    return demo.HelpDesk.sample()


@pytest.fixture
def registry(desk: demo.HelpDesk) -> ToolRegistry:
    """The demo's tools over a fresh help desk."""
    return demo.build_registry(desk)


@pytest.fixture
def journal() -> Iterator[object]:
    j = memory_journal()
    yield j
    assert j.verify().ok
