"""planlock.validation: every static check of a plan against a registry, with every issue and its
JSON path (R2).
"""

from planlock.validation._fields import (
    CHOSEN,
    expand_items,
    is_number,
    item_ref,
    ref_sources,
    trusted_label,
)
from planlock.validation._validate import (
    Analysis,
    CompiledStep,
    Issue,
    ValidationReport,
    analyse,
    validate,
)

__all__ = [
    "CHOSEN",
    "Analysis",
    "CompiledStep",
    "Issue",
    "ValidationReport",
    "analyse",
    "expand_items",
    "is_number",
    "item_ref",
    "ref_sources",
    "trusted_label",
    "validate",
]
