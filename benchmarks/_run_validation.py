"""Benchmark 3 of benchmarks/run.py: validation time of chain plans, per step, and how it
scales.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Any

from _run_setup import Config, validate_cold, validation_plan_data

# The ignores on planlock's imports: see the comment on them in run.py.
import planlock  # type: ignore[import-untyped, unused-ignore]

# --------------------------------------------------------------------------------------------
# 3. Validation scaling


@dataclass
class ValidationRow:
    steps: int
    reps: int
    parse_s: float
    """Best time of Plan.parse on the decoded JSON (reported, not part of validation)."""
    validate_s: float
    """Best time of planlock.validate."""
    validate_cpu_s: float
    """Best CPU time of planlock.validate (steadier on a shared machine)."""

    @property
    def parse_us(self) -> float:
        return self.parse_s / self.steps * 1e6

    @property
    def validate_us(self) -> float:
        return self.validate_s / self.steps * 1e6

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "parse_us": self.parse_us, "validate_us": self.validate_us}


def bench_validation(cfg: Config, registry: planlock.ToolRegistry) -> list[ValidationRow]:
    rows: list[ValidationRow] = []
    for n, reps in cfg.validation_sizes:
        data = validation_plan_data(n)
        parse_times: list[float] = []
        plan: Any = None
        for _ in range(reps):
            gc.collect()
            start = time.perf_counter()
            plan = planlock.Plan.parse(data)
            parse_times.append(time.perf_counter() - start)
        del data  # as after loading a plan: only the Plan stays alive (a smaller heap for GC)
        report = planlock.validate(plan, registry) if reps > 1 else None  # warm-up
        times: list[float] = []
        cpu_times: list[float] = []
        for _ in range(reps):
            gc.collect()
            cpu = time.process_time()
            start = time.perf_counter()
            report = validate_cold(plan, registry)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
        if report is None or not report.ok:
            raise RuntimeError(f"validation plan is invalid: {report}")
        rows.append(ValidationRow(n, reps, min(parse_times), min(times), min(cpu_times)))
        del plan, report
    return rows
