"""The output of benchmarks/run.py: its plain-text tables, and the targets with their verdicts."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from _run_makespan import DagRow
from _run_overhead import Breakdown, OverheadRow
from _run_setup import (
    TARGET_MAKESPAN_RATIO,
    TARGET_SCALING,
    TARGET_VALIDATE_10K_CPU_S,
    TARGET_VALIDATE_10K_S,
)
from _run_validation import ValidationRow
from _table import table

# --------------------------------------------------------------------------------------------
# Output


def measured(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "MISSED")


def num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


@dataclass
class Target:
    name: str
    value: float
    limit: float
    unit: str
    cpu: float | None = None
    """The same figure in CPU time, where it applies (shown, not judged)."""

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def report_overhead(rows: list[OverheadRow], concurrency: int) -> str:
    headers = [
        "shape",
        "tool",
        "journal",
        "planlock us/step",
        "median",
        "cpu us/step",
        "validate us/step",
        "bare us/step",
        "planlock-bare",
        "ratio",
        "anyio floor",
        "x floor",
        "events",
        "target",
        "",
    ]
    body = [
        [
            r.shape,
            r.tool,
            r.journal,
            num(r.run_us),
            num(r.run_median_us),
            num(r.run_cpu_us),
            num(r.validate_us),
            num(r.bare_us, 3),
            num(r.overhead_us),
            f"{r.ratio:,.0f}x",
            num(r.floor_us),
            f"{r.floor_ratio:.1f}x",
            str(r.events),
            f"<= {r.target_us:g}" if r.target_us is not None else "-",
            verdict(r.met),
        ]
        for r in rows
    ]
    steps = rows[0].steps if rows else 0
    return (
        f"1. Executor overhead: {steps}-step plans of no-op tools, concurrency={concurrency} "
        "(best of reps; validation is included in planlock's time)\n" + table(headers, body, 3)
    )


def report_breakdown(b: Breakdown) -> str:
    body = [
        ["planlock.run, in-memory journal", num(b.run_memory_us), "us/step"],
        ["  CPU time of the process during that run", num(b.run_memory_cpu_us), "us/step"],
        ["  of which before the first step starts", num(b.startup_us), "us/step"],
        [
            f"planlock.run, {2 * b.steps}-step chain (x{b.scaling:.2f} per step)",
            num(b.large_run_us),
            "us/step",
        ],
        ["planlock.run, journal store that keeps nothing", num(b.run_null_us), "us/step"],
        ["planlock.validate (included in both runs)", num(b.validate_us), "us/step"],
        ["plan.hash of the whole plan (one call; not cached)", num(b.plan_hash_ms, 2), "ms/call"],
        ["Journal.record, MemoryStore (2 per step)", num(b.append_memory_us), "us/event"],
        ["Journal.record, SQLiteStore (2 per step)", num(b.append_sqlite_us), "us/event"],
    ]
    return f"   Where the time goes ({b.steps}-step async chain):\n" + "\n".join(
        f"   {label:<55}{value:>9} {unit}" for label, value, unit in body
    )


def report_makespan(rows: list[DagRow], overshoot_ms: float) -> str:
    headers = [
        "seed",
        "steps",
        "edges",
        "depth",
        "critical ms",
        "ideal ms",
        "ideal/cp",
        "planlock mem ms",
        "of which startup",
        "mem/cp",
        "planlock sqlite ms",
        "sqlite/cp",
        "mem/ideal",
    ]
    body = [
        [
            str(r.seed),
            str(r.steps),
            str(r.edges),
            str(r.depth),
            num(r.critical_ms),
            num(r.ideal_ms),
            f"{r.ideal_ratio:.3f}",
            num(r.memory_ms),
            num(r.memory_startup_ms),
            f"{r.memory_ratio:.3f}",
            num(r.sqlite_ms),
            f"{r.sqlite_ratio:.3f}",
            f"{r.memory_ms / r.ideal_ms:.3f}",
        ]
        for r in rows
    ]
    med = [
        "median",
        "",
        "",
        "",
        "",
        "",
        f"{statistics.median(r.ideal_ratio for r in rows):.3f}",
        "",
        "",
        f"{statistics.median(r.memory_ratio for r in rows):.3f}",
        "",
        f"{statistics.median(r.sqlite_ratio for r in rows):.3f}",
        f"{statistics.median(r.memory_ms / r.ideal_ms for r in rows):.3f}",
    ]
    depth = statistics.mean(r.depth for r in rows)
    gap = statistics.mean(r.ideal_ms - r.critical_ms for r in rows)
    return (
        "2. Makespan of random DAGs (async tools sleeping 5-20 ms; 0-3 dependencies a step; "
        "best of reps)\n"
        + table(headers, [*body, med])
        + f"\n   anyio.sleep is late by {overshoot_ms:.2f} ms (median) on this machine; "
        f"x mean depth {depth:.1f} = {overshoot_ms * depth:.1f} ms, "
        f"vs ideal - critical path = {gap:.1f} ms on average"
    )


def report_validation(rows: list[ValidationRow]) -> str:
    headers = [
        "steps",
        "reps",
        "parse ms",
        "parse us/step",
        "validate ms",
        "validate us/step",
        "cpu ms",
        "vs smallest",
    ]
    base = rows[0].validate_us
    body = [
        [
            f"{r.steps:,}",
            str(r.reps),
            num(r.parse_s * 1e3),
            num(r.parse_us),
            num(r.validate_s * 1e3),
            num(r.validate_us),
            num(r.validate_cpu_s * 1e3),
            f"{r.validate_us / base:.2f}",
        ]
        for r in rows
    ]
    return "3. Validation of chain plans (placeholders and literals; best of reps)\n" + table(
        headers, body, 0
    )


def targets_of(
    overhead: list[OverheadRow],
    breakdown: Breakdown,
    dags: list[DagRow],
    validation: list[ValidationRow],
) -> list[Target]:
    out: list[Target] = [
        Target(
            f"run, async {r.shape}, {r.journal} journal",
            r.run_us,
            r.target_us,
            "us/step",
            r.run_cpu_us,
        )
        for r in overhead
        if r.target_us is not None
    ]
    out.append(
        Target(
            f"run per step, {2 * breakdown.steps} / {breakdown.steps}-step chain",
            breakdown.scaling,
            TARGET_SCALING,
            "x",
        )
    )
    out.append(
        Target(
            "makespan / critical path, median DAG",
            statistics.median(r.memory_ratio for r in dags),
            TARGET_MAKESPAN_RATIO,
            "x",
        )
    )
    out.append(
        Target(
            "makespan / ideal anyio scheduler, median DAG",
            statistics.median(r.memory_ms / r.ideal_ms for r in dags),
            TARGET_MAKESPAN_RATIO,
            "x",
        )
    )
    ten_k = [r for r in validation if r.steps == 10_000]
    if ten_k:
        row = ten_k[0]
        out.append(
            Target(
                "validate 10k steps", row.validate_s, TARGET_VALIDATE_10K_S, "s", row.validate_cpu_s
            )
        )
        out.append(
            Target(
                "validate 10k steps, CPU time", row.validate_cpu_s, TARGET_VALIDATE_10K_CPU_S, "s"
            )
        )
    first, last = validation[0], validation[-1]
    out.append(
        Target(
            f"validation per step, {last.steps // 1000}k / {first.steps // 1000}k",
            last.validate_us / first.validate_us,
            TARGET_SCALING,
            "x",
        )
    )
    return out


def report_targets(targets: list[Target]) -> str:
    headers = ["target", "measured (wall)", "cpu", "limit", "verdict"]
    body = [
        [
            t.name,
            f"{measured(t.value)} {t.unit}",
            "" if t.cpu is None else f"{measured(t.cpu)} {t.unit}",
            f"<= {t.limit:g} {t.unit}",
            verdict(t.met),
        ]
        for t in targets
    ]
    return "Targets\n" + table(headers, body)
