"""Validate once: the analyses of recent plans, reused while the plan (its hash), the registry
(the same object, with no tool added since) and the options are the same.

``validate`` and ``run`` (``prepare``) both go through ``analysis_of``, so a plan that was
validated (by the planner, or by the caller) is not analysed again when it runs. An analysis is
never changed once built (the executor and ``assess`` only read it), so sharing one is safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from planlock.core import Plan, canonical_json, condition_refs, parse_ref, refs_of
from planlock.tools import ToolRegistry
from planlock.validation._checks import clear_literal_checks
from planlock.validation._types import Analysis, ValidationReport
from planlock.validation._validate import analyse

__all__ = ["analysis_of", "clear_analyses", "validate"]

_SIZE = 16
"""Analyses kept (the most recently used)."""
_Key = tuple[str, str | None, int, int, int | None, frozenset[str]]
_cache: OrderedDict[_Key, tuple[ToolRegistry, Analysis]] = OrderedDict()
_lock = threading.Lock()


def validate(
    plan: Plan,
    registry: ToolRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    forbidden_tools: frozenset[str] | set[str] = frozenset(),
) -> ValidationReport:
    """Check a plan against a registry and return every issue (and every warning: parts of the
    goal that no step seems to serve, which do not make the plan invalid).

    ``inputs`` are the trusted input values the plan will run with; when given, references to
    inputs are checked (names and paths). The executor always checks them before running.
    """
    a = analysis_of(
        plan, registry, inputs=inputs, max_steps=max_steps, forbidden_tools=forbidden_tools
    )
    return ValidationReport(a.plan_hash, tuple(a.issues), tuple(a.warnings))


def analysis_of(
    plan: Plan,
    registry: ToolRegistry,
    *,
    plan_hash: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    forbidden_tools: frozenset[str] | set[str] = frozenset(),
) -> Analysis:
    """``analyse``, reusing the analysis of the same plan hash with the same registry and
    options. ``plan_hash`` saves hashing the plan when the caller has it."""
    plan_hash = plan_hash or plan.hash
    if max_steps is not None and len(plan.steps) <= max_steps:
        max_steps = None  # the limit changes nothing: the analysis is the one without it
    try:
        given = None if inputs is None else canonical_json(dict(inputs))
    except (TypeError, ValueError):  # inputs that are not JSON: analyse without the cache
        given = "\0"
    rest = (id(registry), registry.version, max_steps, frozenset(forbidden_tools))
    key: _Key = (plan_hash, given, *rest)
    blind: _Key = (plan_hash, None, *rest)
    with _lock:
        for k in (key, blind) if given not in (None, "\0") else (key,):
            hit = _cache.get(k)
            # Without inputs, input references are not checked: that analysis serves any
            # inputs only for a valid plan that has none.
            if hit is not None and hit[0] is registry and (k == key or not _reads_inputs(hit[1])):
                _cache.move_to_end(k)
                return hit[1]
    analysis = analyse(
        plan, registry, inputs=inputs, max_steps=max_steps, forbidden_tools=forbidden_tools
    )
    analysis.__dict__["plan_hash"] = plan_hash  # the cached property, known already
    if given != "\0":
        with _lock:
            _cache[key if _reads_inputs(analysis) else blind] = (registry, analysis)
            while len(_cache) > _SIZE:
                _cache.popitem(last=False)
    return analysis


def _reads_inputs(a: Analysis) -> bool:
    """Whether the analysis may depend on the inputs given: it has issues (some steps may not
    be compiled) or a step reads a trusted input."""
    if a.issues or len(a.steps) != len(a.plan.steps):
        return True
    for step in a.steps.values():
        refs = [r for t in step.args.values() for r in refs_of(t)]
        refs += condition_refs(step.when) if step.when is not None else ()
        refs += (step.for_each,) if step.for_each is not None else ()
        if any(r.source == "input" for r in refs):
            return True
    return False


def clear_analyses() -> None:
    """Forget every kept analysis, parsed reference and checked literal (benchmarks measure
    the cost of a plan seen for the first time with it)."""
    with _lock:
        _cache.clear()
    parse_ref.cache_clear()
    clear_literal_checks()
