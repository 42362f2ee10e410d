"""Where planlock opens spans, and what it costs when nothing records them.

The tracer is found lazily: one set with ``use_tracer``, else OpenTelemetry's when the
application imported it and set a tracer provider, or when ``OTEL_TRACES_EXPORTER`` asks for one
(``_otel``). Without either, ``span`` returns a shared no-op block after a dictionary look-up and
an environment read: nothing is imported, nothing allocated.

The innermost planlock span is kept in a context variable (as OpenTelemetry keeps its own), so
steps started in parallel tasks nest under the run's span, and journal events recorded inside a
span become its events (``note``).
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from planlock.telemetry._api import Attr, Attributes, Span, Tracer

__all__ = [
    "NOOP_SPAN",
    "SpanKind",
    "capture_content",
    "current_span",
    "enabled",
    "reset",
    "span",
    "tool_span",
    "tracer",
    "use_tracer",
    "use_tracer_provider",
    "workflow",
]

SpanKind = Literal["workflow", "plan", "chat", "tool"]


class _NoopSpan:
    """The span when nothing records: every method does nothing; also its own block."""

    __slots__ = ()

    def set(self, attributes: Attributes) -> None:
        pass

    def event(self, name: str, attributes: Attributes) -> None:
        pass

    def fail(self, error_type: str, message: str | None = None) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


NOOP_SPAN = _NoopSpan()


@dataclass(frozen=True, slots=True)
class _Open:
    tracer: Tracer
    span: Span
    kind: SpanKind
    run_id: str | None


_CURRENT: ContextVar[_Open | None] = ContextVar("planlock_span", default=None)


class _State:
    explicit: Tracer | None = None
    found: Tracer | None = None
    configured: bool = False
    """Whether the SDK set-up from ``OTEL_*`` was tried (it is tried once)."""
    checked: bool = False
    """Whether a tracer was looked for and none found: looked for again only at a run's or a
    plan's span (``fresh``), not at every step."""
    unavailable: bool = False
    """OpenTelemetry is not installed: never look again."""
    capture: bool | None = None


_state = _State()

_TRUE = ("1", "true", "yes", "on")


def use_tracer(tracer: Tracer | None) -> None:
    """Send planlock's spans to ``tracer`` (e.g. ``OTelTracer(provider)``), or with None go back
    to finding the tracer from OpenTelemetry's global set-up."""
    _state.explicit = tracer


def use_tracer_provider(provider: Any) -> None:
    """Send planlock's spans to an OpenTelemetry ``TracerProvider`` (rather than the global one);
    needs ``opentelemetry-api``."""
    from planlock.telemetry._otel import OTelTracer  # noqa: PLC0415  (optional)

    use_tracer(OTelTracer(provider))


def reset() -> None:
    """Forget what was found (the tracer, the content-capture setting): read them again."""
    _state.explicit = _state.found = None
    _state.configured = _state.unavailable = _state.checked = False
    _state.capture = None


def tracer(fresh: bool = True) -> Tracer | None:
    """The tracer planlock's spans go to, or None when nothing records them. Not ``fresh``:
    the last answer (a look-up reads the environment, which costs microseconds)."""
    if _state.explicit is not None:
        return _state.explicit
    if _state.found is not None:
        return _state.found
    if _state.unavailable or (_state.checked and not fresh):
        return None
    _state.checked = True
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    wanted = exporter not in ("", "none") and not _state.configured
    if not wanted and "opentelemetry" not in sys.modules:
        return None
    try:
        from planlock.telemetry._otel import configured_tracer  # noqa: PLC0415  (optional)
    except ImportError:
        _state.unavailable = True
        return None
    _state.configured = _state.configured or wanted
    _state.found = configured_tracer(configure=wanted)
    return _state.found


def enabled() -> bool:
    """Whether spans are recorded here: in an open planlock span, or with a tracer found."""
    return _CURRENT.get() is not None or tracer(fresh=False) is not None


def capture_content() -> bool:
    """Whether spans carry content (tool arguments and results, model messages): only when
    ``PLANLOCK_OTEL_CAPTURE_CONTENT`` or the GenAI conventions'
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is true (read once)."""
    if _state.capture is None:
        env = os.environ
        _state.capture = any(
            env.get(name, "").strip().lower() in _TRUE
            for name in (
                "PLANLOCK_OTEL_CAPTURE_CONTENT",
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
            )
        )
    return _state.capture


def current_span() -> Span:
    """The innermost open planlock span (``NOOP_SPAN`` outside any, or when nothing records)."""
    current = _CURRENT.get()
    return NOOP_SPAN if current is None else current.span


def span(
    name: str,
    attributes: Attributes,
    *,
    kind: SpanKind,
    run_id: str | None = None,
    client: bool = False,
) -> _Block | _NoopSpan:
    """A block that opens a span (a child of the innermost open one); ``NOOP_SPAN`` when nothing
    records. ``run_id`` defaults to the enclosing span's. A run's or a plan's span (a root)
    looks for a tracer afresh; others reuse the last answer when not inside a span."""
    current = _CURRENT.get()
    if current is not None:
        return _Block(current.tracer, name, attributes, kind, run_id or current.run_id, client)
    found = tracer(fresh=kind in ("workflow", "plan"))
    if found is None:
        return NOOP_SPAN
    return _Block(found, name, attributes, kind, run_id, client)


def workflow(run_id: str) -> _Block | _Kept | _NoopSpan:
    """The run's ``invoke_workflow`` span; inside one for the same run (a caller that opened it
    to hold the planning too), that one, left open."""
    current = _CURRENT.get()
    if current is not None and current.kind == "workflow" and current.run_id == run_id:
        return _Kept(current.span)
    attributes = {"gen_ai.operation.name": "invoke_workflow", "planlock.run_id": run_id}
    return span("invoke_workflow", attributes, kind="workflow", run_id=run_id)


def tool_span(
    tool: str, step: str, item: int | None, run_id: str, effect: str
) -> _Block | _NoopSpan:
    """A tool call's ``execute_tool {tool}`` span (``gen_ai.tool.call.id``: the step's id, with
    ``#<item>`` for an item of a for_each step)."""
    if _CURRENT.get() is None and tracer(fresh=False) is None:
        return NOOP_SPAN
    attributes: dict[str, Attr] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.call.id": step if item is None else f"{step}#{item}",
        "gen_ai.tool.type": "function",
        "planlock.run_id": run_id,
        "planlock.step": step,
        "planlock.effect": effect,
    }
    if item is not None:
        attributes["planlock.item"] = item
    return span(f"execute_tool {tool}", attributes, kind="tool", run_id=run_id)


class _Block:
    """An open-span block: the tracer's block, with the planlock span made current."""

    __slots__ = ("args", "inner", "token")

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        attributes: Attributes,
        kind: SpanKind,
        run_id: str | None,
        client: bool,
    ) -> None:
        self.args = (tracer, name, attributes, kind, run_id, client)
        self.inner: Any = None
        self.token: Any = None

    def __enter__(self) -> Span:
        tracer, name, attributes, kind, run_id, client = self.args
        self.inner = tracer.span(name, attributes, client=client)
        opened: Span = self.inner.__enter__()
        self.token = _CURRENT.set(_Open(tracer, opened, kind, run_id))
        return opened

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        _CURRENT.reset(self.token)
        return bool(self.inner.__exit__(exc_type, exc, tb))


class _Kept:
    """A block over a span that stays open after it (someone else's, to be ended there)."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, *exc: object) -> None:
        return None
