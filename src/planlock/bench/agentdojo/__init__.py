"""planlock.bench.agentdojo: the AgentDojo prompt-injection benchmark harness."""

from planlock.bench.agentdojo._bench import (
    ATTACKS,
    BaselineAgent,
    PairResult,
    PlanlockAgent,
    make_element,
    run_pairs,
)
from planlock.bench.agentdojo._corpus import CorpusPlanner, corpus_suites
from planlock.bench.agentdojo._model_planner import (
    ModelPlanner,
    PlannerRow,
    PlanRecord,
    planner_markdown,
    planner_rows,
)
from planlock.bench.agentdojo._person import FrozenEndorsements
from planlock.bench.agentdojo._report import (
    CAMEL_FIRE_RATE,
    autonomy,
    misses,
    plot,
    rows_of,
    summarize,
    write,
)
from planlock.bench.agentdojo._suite import SUITES, load_suite

__all__ = [
    "ATTACKS",
    "CAMEL_FIRE_RATE",
    "SUITES",
    "BaselineAgent",
    "CorpusPlanner",
    "FrozenEndorsements",
    "ModelPlanner",
    "PairResult",
    "PlanRecord",
    "PlanlockAgent",
    "PlannerRow",
    "autonomy",
    "corpus_suites",
    "load_suite",
    "make_element",
    "misses",
    "planner_markdown",
    "planner_rows",
    "plot",
    "rows_of",
    "run_pairs",
    "summarize",
    "write",
]
