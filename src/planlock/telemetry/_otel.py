"""The OpenTelemetry tracer: spans through the ``opentelemetry-api``, set up from ``OTEL_*``.

Imported only when a span is wanted and OpenTelemetry is in use (imported by the application, or
asked for with ``OTEL_TRACES_EXPORTER``), so ``import planlock`` never imports OpenTelemetry.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

from planlock._version import __version__
from planlock.telemetry._api import Attributes

__all__ = ["OTelTracer", "configured_tracer"]

log = logging.getLogger("planlock.telemetry")


class _OTelSpan:
    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, attributes: Attributes) -> None:
        self.span.set_attributes(attributes)

    def event(self, name: str, attributes: Attributes) -> None:
        self.span.add_event(name, attributes)

    def fail(self, error_type: str, message: str | None = None) -> None:
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(trace.Status(trace.StatusCode.ERROR, message))


class OTelTracer:
    """A ``Tracer`` over an OpenTelemetry tracer (from a provider, or the global one)."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("planlock", __version__, tracer_provider=provider)

    @contextmanager
    def span(
        self, name: str, attributes: Attributes, *, client: bool = False
    ) -> Iterator[_OTelSpan]:
        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        with self.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as span:
            wrapped = _OTelSpan(span)
            try:
                yield wrapped
            except BaseException as exc:
                # start_as_current_span records the exception and sets the status; error.type
                # is the GenAI conventions' name for what went wrong.
                span.set_attribute("error.type", type(exc).__name__)
                raise


def configured_tracer(configure: bool) -> OTelTracer | None:
    """A tracer when a tracer provider is set (by the application, or by OpenTelemetry's own
    environment handling); else, with ``configure``, set one up from the ``OTEL_*`` variables
    with the SDK's configurator (``OTEL_TRACES_EXPORTER=console``, ``otlp``...) and use it.
    None when nothing records spans."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider) and configure:
        _configure_sdk()
        provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return OTelTracer()


def _configure_sdk() -> None:
    """The SDK's environment handling, as ``opentelemetry-instrument`` runs it; the console
    exporter writes to stderr, so that a command's output (``--json``) stays clean."""
    try:
        from opentelemetry.sdk._configuration import (  # noqa: PLC0415  (optional SDK)
            _OTelSDKConfigurator,
        )
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415  (optional SDK)
            ConsoleSpanExporter,
        )
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER is set but opentelemetry-sdk is not installed")
        return
    try:
        configurator = _OTelSDKConfigurator()  # type: ignore[no-untyped-call]
        configurator.configure(  # type: ignore[no-untyped-call]
            exporter_args_map={ConsoleSpanExporter: {"out": sys.stderr}}
        )
    except Exception as exc:  # an unknown exporter name, a bad sampler: no tracing, say why
        log.warning("OpenTelemetry could not be configured from OTEL_* variables: %s", exc)
