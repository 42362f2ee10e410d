"""The tracing interface: a tracer with one method (open a span), and what a span can take.

``planlock.telemetry`` speaks these two protocols only; the OpenTelemetry implementation
(``_otel``) is imported the first time a span is wanted and OpenTelemetry is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["Attr", "Attributes", "Span", "Tracer"]

Attr = str | bool | int | float | Sequence[str]
"""An attribute value, as OpenTelemetry takes it."""
Attributes = Mapping[str, Attr]


class Span(Protocol):
    """An open span: add attributes and events, mark it failed. It ends when its block ends."""

    def set(self, attributes: Attributes) -> None: ...

    def event(self, name: str, attributes: Attributes) -> None: ...

    def fail(self, error_type: str, message: str | None = None) -> None:
        """The operation ended in an error: status ERROR, ``error.type``."""


class Tracer(Protocol):
    """Opens spans: a child of the current span, made current for the block (contextvars, so
    tasks started inside the block nest under it). An exception leaving the block is recorded
    and marks the span failed."""

    def span(
        self, name: str, attributes: Attributes, *, client: bool = False
    ) -> AbstractContextManager[Span]: ...
