"""planlock.telemetry: OpenTelemetry spans by the GenAI semantic conventions, at no cost when
nothing records them.

A run is an ``invoke_workflow`` span; planning a ``plan`` span with the model call as a ``chat``
child; each tool call an ``execute_tool {tool}`` span; approvals, policy verdicts and replans are
span events. Configured by OpenTelemetry's own means: a tracer provider the application set, or
the ``OTEL_*`` variables (``OTEL_TRACES_EXPORTER=console``, ``otlp``...) with the ``otel`` extra.
Content (tool arguments and results, model messages) only with
``PLANLOCK_OTEL_CAPTURE_CONTENT=1`` (or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
"""

from planlock.telemetry._api import Attr, Attributes, Span, Tracer
from planlock.telemetry._events import note
from planlock.telemetry._trace import (
    NOOP_SPAN,
    SpanKind,
    capture_content,
    current_span,
    enabled,
    reset,
    span,
    tool_span,
    tracer,
    use_tracer,
    use_tracer_provider,
    workflow,
)

__all__ = [
    "NOOP_SPAN",
    "Attr",
    "Attributes",
    "Span",
    "SpanKind",
    "Tracer",
    "capture_content",
    "current_span",
    "enabled",
    "note",
    "reset",
    "span",
    "tool_span",
    "tracer",
    "use_tracer",
    "use_tracer_provider",
    "workflow",
]
