"""planlock.execution: the deterministic DAG walk and the engines that run steps (R3, R4, R11),
and the reply built from a run's results (``render_reply``).
"""

from planlock.execution._calls import BATCH_SUFFIX
from planlock.execution._engine import Engine, LocalEngine
from planlock.execution._inprocess import InProcessEngine
from planlock.execution._reply import quote_untrusted, render_reply
from planlock.execution._types import RunResult, StepCall, StepOutcome
from planlock.execution._walk import walk

__all__ = [
    "BATCH_SUFFIX",
    "Engine",
    "InProcessEngine",
    "LocalEngine",
    "RunResult",
    "StepCall",
    "StepOutcome",
    "quote_untrusted",
    "render_reply",
    "walk",
]
