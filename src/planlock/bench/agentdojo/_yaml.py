"""Parse AgentDojo's environments with libyaml's C loader when it is available (a test checks
that the environments are identical either way)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import yaml

__all__ = ["fast_yaml"]


@contextlib.contextmanager
def fast_yaml() -> Iterator[None]:
    """Parse AgentDojo's environments with libyaml's C loader (5-15x faster), restoring the
    pure-Python ``yaml.safe_load`` afterwards. Only AgentDojo's task-suite module is touched."""
    from agentdojo.task_suite import task_suite  # noqa: PLC0415

    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        yield
        return

    def safe_load(stream: Any) -> Any:
        return yaml.load(stream, Loader=loader)  # noqa: S506  (CSafeLoader is the safe loader)

    proxy = SimpleNamespace(**{k: getattr(yaml, k) for k in dir(yaml) if not k.startswith("__")})
    proxy.safe_load = safe_load
    original = task_suite.yaml
    task_suite.yaml = proxy
    try:
        yield
    finally:
        task_suite.yaml = original
