"""Provenance: the one module that gives a value its source labels and decides which labels are
trusted (R5). The executor (on the concrete values) and ``assess`` (on the plan alone) both label
through it, so static and run-time provenance cannot differ; the policy asks it which labels of
an argument are untrusted and which mark a choice.

The labels:

- ``plan`` (a literal, ``PLAN_SOURCE``; ``core.resolve`` gives it to literals and to the text
  around placeholders, and unions the labels of every part) and ``input:<name>`` (a trusted
  input): trusted;
- ``step:<id>``: a step's output, trusted only when its tool declares ``trusted_output=True``
  (never the output of an ``llm`` step, which also carries the labels of what it read, ``plan``
  aside: R4);
- ``step:<id>#<path>``: a value at or below an output path that the step's tool declares
  trusted (``trusted_output=["[*].recipient"]``): trusted;
- ``chosen:<id>``: the value was *chosen* by the quarantined ``llm`` step ``<id>`` among trusted
  values (its ``choices``) after reading what may be untrusted text. The value itself is one of
  the trusted values (the labels beside this one say where it comes from), so this label counts
  as trusted; the policy sees it and may still ask a person (``chosen_to_sensitive``). A choice
  whose step read only trusted data (plan literals, trusted inputs, trusted outputs or fields,
  no loop) carries no such mark: no untrusted text took part in it.
- ``branch:<id>``: whether step ``<id>`` runs was decided by data untrusted text may have
  decided: its condition (``when``) reads a value that is untrusted, chosen or itself carries a
  branch mark (a boolean or enum answer of an ``llm`` step counts as untrusted unless that step
  read only trusted data, as for choices). The mark is on every argument of that step, on its
  output, and on every step that reads its output (if it does not run, they do not either);
  ``branch_marks`` computes it once, on the plan, for ``assess`` and the executor alike. Like
  ``chosen:`` it counts as trusted (the values are the plan's) and the policy sees it:
  ``chosen_to_sensitive`` for sensitive parameters, and for a side-effecting call as a whole.

An item of a ``for_each`` list carries the labels of the list at that item; ``{{item_number}}``
carries the labels of the whole list (an item's position is data of the list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from planlock.core import ANY_ITEM, PLAN_SOURCE, Ref, Sources, condition_refs, refs_of, resolve
from planlock.tools import LLM_TOOL, Tool
from planlock.validation._fields import expand_items
from planlock.validation._types import Analysis, CompiledStep

__all__ = [
    "BRANCH",
    "CHOSEN",
    "arg_labels",
    "branch_marks",
    "choice_labels",
    "chosen_labels",
    "input_labels",
    "is_trusted",
    "label_trust",
    "matches",
    "output_sources",
    "ref_sources",
    "source_labels",
    "static_provenance",
    "step_labels",
    "tool_trusts",
    "untrusted_labels",
]

CHOSEN = "chosen"
"""The kind of the label that marks a value chosen by untrusted text among trusted values."""
BRANCH = "branch"
"""The kind of the label that marks a step whose running was decided by untrusted text."""
INPUT = "input"
STEP = "step"


def input_labels(name: str) -> Sources:
    """The labels of a trusted input (at any path inside it)."""
    return frozenset((f"{INPUT}:{name}",))


def step_labels(step_id: str) -> Sources:
    """The general labels of a step's output: what any part of it carries when nothing finer
    applies."""
    return frozenset((f"{STEP}:{step_id}",))


def is_chosen(label: str) -> bool:
    """Whether ``label`` marks a decision made by untrusted text among trusted values: which
    value (``chosen:<id>``) or whether a step runs (``branch:<id>``)."""
    return label.startswith((f"{CHOSEN}:", f"{BRANCH}:"))


def matches(pattern: str, path: tuple[str, ...]) -> bool:
    """Whether ``path`` is at or below the trusted output path ``pattern`` (``*`` matches any
    list index, and ``*`` in the path: every item)."""
    segs = pattern.split(".")
    if len(path) < len(segs):
        return False
    for want, seg in zip(segs, path, strict=False):
        if want == ANY_ITEM:
            if seg != ANY_ITEM and not seg.isdigit():
                return False
        elif want != seg:
            return False
    return True


def tool_trusts(tool: Tool, path: tuple[str, ...]) -> bool:
    """Whether a value at ``path`` of this tool's output is trusted."""
    if tool.name == LLM_TOOL:
        return False
    return tool.trusted_output or any(matches(p, path) for p in tool.trusted_paths)


def is_trusted(label: str, steps: Mapping[str, CompiledStep]) -> bool:
    """Whether a label is trusted in a plan with these steps (see the module docstring). A field
    label is trusted only if the step's tool declares that path; an unknown step is not."""
    kind, _, name = label.partition(":")
    if kind in (PLAN_SOURCE, INPUT, CHOSEN, BRANCH):
        return True
    if kind != STEP:
        return False
    sid, field, pattern = name.partition("#")
    step = steps.get(sid)
    if step is None or step.tool.name == LLM_TOOL:
        return False
    return pattern in step.tool.trusted_paths if field else bool(step.tool.trusted_output)


def untrusted_labels(labels: Iterable[str], trusted: Callable[[str], bool]) -> list[str]:
    """The labels among ``labels`` that ``trusted`` does not trust, sorted."""
    return sorted(s for s in labels if not trusted(s))


def chosen_labels(labels: Iterable[str]) -> list[str]:
    """The ``chosen:<id>`` and ``branch:<id>`` labels among ``labels``, sorted."""
    return sorted(s for s in labels if is_chosen(s))


def _inner(step: CompiledStep, path: tuple[str, ...]) -> tuple[str, ...]:
    """The path inside one iteration's output (a ``for_each`` step's output is a list)."""
    return path[1:] if step.for_each is not None else path


def ref_sources(
    steps: Mapping[str, CompiledStep], name: str, path: tuple[str, ...], general: Sources
) -> Sources:
    """Source labels of ``steps.<name>.output.<path>``; ``general`` is the step's own labels
    (what any part of its output carries when nothing finer applies). Every part of the output
    of a step whose running untrusted text decided carries its branch marks."""
    step = steps.get(name)
    if step is None:
        return general
    return _field_sources(steps, step, path, general) | step.marks


def _field_sources(
    steps: Mapping[str, CompiledStep], step: CompiledStep, path: tuple[str, ...], general: Sources
) -> Sources:
    name = step.id
    inner = _inner(step, path)
    if step.tool.name == LLM_TOOL:
        for field, _ in step.choices:
            if field is None or inner[:1] == (field,):
                return choice_labels(steps, step, field)
        return general
    for pattern in step.tool.trusted_paths:
        if matches(pattern, inner):
            return frozenset((f"{STEP}:{name}#{pattern}",))
    return general


def choice_labels(
    steps: Mapping[str, CompiledStep], step: CompiledStep, field: str | None
) -> Sources:
    """Labels of the value an ``llm`` step chose for ``field`` (None: its whole output): where the
    allowed values come from, and the ``chosen:<id>`` mark."""
    ref = dict(step.choices)[field]
    labels = source_labels(steps, ref)
    if _reads_only_trusted(steps, step):
        return labels
    return labels | {f"{CHOSEN}:{step.id}"}


def _reads_only_trusted(steps: Mapping[str, CompiledStep], step: CompiledStep) -> bool:
    """Whether every value the ``llm`` step reads is trusted (so no untrusted text could steer
    its choice). A loop, an item reference or any other step's ``llm`` output counts as not, and
    so does a value chosen by untrusted text (reading it lets that text steer this choice)."""
    if step.for_each is not None:
        return False
    for t in step.args.values():
        for ref in refs_of(t):
            if ref.source == "input":
                continue
            if ref.source != "step":
                return False
            for label in ref_sources(steps, ref.name, ref.path, step_labels(ref.name)):
                if is_chosen(label) or not is_trusted(label, steps):
                    return False
    return True


def source_labels(steps: Mapping[str, CompiledStep], ref: Ref) -> Sources:
    """Labels of a reference to an input or to a tool step (what ``choices`` may name)."""
    if ref.source == "input":
        return input_labels(ref.name)
    return ref_sources(steps, ref.name, ref.path, step_labels(ref.name))


def output_sources(step: CompiledStep, arg_sources: Iterable[Iterable[str]]) -> Sources:
    """``step:<id>`` and the step's branch marks; an llm step's output also carries its
    arguments' labels (R4), the plan's own literals aside. ``arg_sources`` is read only for an
    llm step."""
    sources = step_labels(step.id) | step.marks
    if step.tool.name == LLM_TOOL:
        sources = sources.union(*arg_sources) - {PLAN_SOURCE}
    return sources


def arg_labels(step: CompiledStep, labels: Iterable[str]) -> Sources:
    """The labels an argument of ``step`` carries: those of the value, and the step's branch
    marks (a literal of a step that untrusted text decided to run was, in effect, chosen)."""
    return frozenset(labels) | step.marks


def branch_marks(steps: Mapping[str, CompiledStep], step: CompiledStep) -> Sources:
    """The ``branch:<id>`` labels on whether ``step`` runs: its own, when its condition reads a
    value untrusted text may have decided, and those of every step whose output it reads (when
    such a step does not run, this one does not either). ``steps`` must already hold the marks
    of the steps ``step`` reads (compute in a topological order)."""
    marks: set[str] = set()
    for name in step.reads:
        dep = steps.get(name)
        if dep is not None:
            marks |= dep.marks
    if step.when is not None and any(_steerable(steps, r) for r in condition_refs(step.when)):
        marks.add(f"{BRANCH}:{step.id}")
    return frozenset(marks)


def _steerable(steps: Mapping[str, CompiledStep], ref: Ref) -> bool:
    """Whether untrusted text may have decided the value a condition reads at ``ref``: any
    untrusted, chosen or branch label. The typed answer of an ``llm`` step that read only trusted
    data is not (no untrusted text took part in it, as for choices)."""
    if ref.source != "step":
        return False  # a trusted input
    labels = ref_sources(steps, ref.name, ref.path, step_labels(ref.name))
    if any(is_chosen(label) for label in labels):
        return True
    untrusted = [label for label in labels if not is_trusted(label, steps)]
    if not untrusted:
        return False
    step = steps.get(ref.name)
    if step is None:
        return True
    only_own = untrusted == [f"{STEP}:{ref.name}"] and step.tool.name == LLM_TOOL
    return not (only_own and _reads_only_trusted(steps, step))


def static_provenance(analysis: Analysis) -> dict[str, dict[str, Sources]]:
    """Per step, per argument: the source labels, computed on the DAG (no values needed)."""
    out_labels: dict[str, Sources] = {}
    result: dict[str, dict[str, Sources]] = {}

    def lookup(ref: Ref) -> tuple[Any, Sources]:
        if ref.source == "step":
            general = out_labels.get(ref.name, step_labels(ref.name))
            return None, ref_sources(analysis.steps, ref.name, ref.path, general)
        return None, input_labels(ref.name)

    for sid in analysis.order:
        step = analysis.steps[sid]
        loop = step.for_each
        templates = {k: expand_items(t, loop) if loop else t for k, t in step.args.items()}
        args = {k: arg_labels(step, resolve(t, lookup)[1]) for k, t in templates.items()}
        result[sid] = args
        out_labels[sid] = output_sources(step, args.values())
    return result


def _when_refs(step: CompiledStep) -> Iterable[Ref]:
    return condition_refs(step.when) if step.when is not None else ()


def label_trust(analysis: Analysis) -> tuple[Any, Any]:
    """``is_trusted(label)`` and ``describe(label)`` for a plan's provenance labels."""
    steps = analysis.steps

    def trusted(label: str) -> bool:
        return is_trusted(label, steps)

    def describe(label: str) -> str:
        kind, _, name = label.partition(":")
        if kind == CHOSEN and name in steps:
            return f"a trusted value chosen by step {name} (llm) after reading its input"
        if kind == BRANCH and name in steps:
            read = sorted({f"step {r.name}" for r in _when_refs(steps[name]) if r.source == "step"})
            on = f" on {', '.join(read)}" if read else ""
            return f"step {name}'s condition{on}, which untrusted text may decide"
        sid, _, path = name.partition("#")
        if kind == STEP and sid in steps:
            where = f" output {path}, declared trusted" if path else ""
            return f"step {sid} ({steps[sid].tool.name}){where}"
        return f"input '{name}'" if kind == INPUT else label

    return trusted, describe
