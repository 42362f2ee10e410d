"""planlock.validation: every static check of a plan against a registry, with every issue and its
JSON path (R2), and provenance: the labels a value carries and which of them are trusted (R5).
"""

from planlock.validation._coverage import (
    ACTION_VERBS,
    COVERAGE_WARNINGS,
    FITS,
    asked_effects,
    check_coverage,
    fitting_tools,
    warned_effect,
)
from planlock.validation._fields import expand_items, is_number, item_ref, schema_at
from planlock.validation._provenance import (
    BRANCH,
    CHOSEN,
    arg_labels,
    chosen_labels,
    input_labels,
    label_trust,
    output_sources,
    ref_sources,
    static_provenance,
    untrusted_labels,
)
from planlock.validation._types import Analysis, CompiledStep, ValidationReport
from planlock.validation._validate import (
    Issue,
    analyse,
    analysis_of,
    clear_analyses,
    step_returns,
    validate,
)

__all__ = [
    "ACTION_VERBS",
    "BRANCH",
    "CHOSEN",
    "COVERAGE_WARNINGS",
    "FITS",
    "Analysis",
    "CompiledStep",
    "Issue",
    "ValidationReport",
    "analyse",
    "analysis_of",
    "arg_labels",
    "asked_effects",
    "check_coverage",
    "chosen_labels",
    "clear_analyses",
    "expand_items",
    "fitting_tools",
    "input_labels",
    "is_number",
    "item_ref",
    "label_trust",
    "output_sources",
    "ref_sources",
    "schema_at",
    "static_provenance",
    "step_returns",
    "untrusted_labels",
    "validate",
    "warned_effect",
]
