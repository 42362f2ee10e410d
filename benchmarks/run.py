"""Performance benchmarks for planlock.

    .venv/bin/python benchmarks/run.py            # full run (`make bench`), about a minute
    .venv/bin/python benchmarks/run.py --quick    # smoke run, a few seconds
    .venv/bin/python benchmarks/run.py --json out.json

First the comparison of ``compare.py`` (planlock per step and makespan against a hand-written
asyncio runner and LangGraph, on chain, fan-out and diamond DAGs; ``--no-compare`` skips it),
then three benchmarks, each compared with a baseline measured in the same run (the machines are
shared and noisy, so absolute numbers from another run are not comparable):

1. executor overhead per step: 1,000-step chains and fan-outs of no-op tools, in-memory and
   SQLite journals, against a bare loop calling the same functions (and an anyio floor);
2. makespan of random 100-step DAGs of sleeping tools, against their critical path (and an
   ideal anyio scheduler running the same DAG);
3. validation time of 1k/10k/100k-step chain plans, per step, and how it scales.

See benchmarks/README.md for what is measured and how, and the results on the reference machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from _run_makespan import bench_makespan, sleep_overshoot_ms
from _run_overhead import bench_breakdown, bench_overhead
from _run_report import (
    report_breakdown,
    report_makespan,
    report_overhead,
    report_targets,
    report_validation,
    targets_of,
)
from _run_setup import FULL, QUICK, Config, Stores, build_registry
from _run_validation import bench_validation
from compare import print_compare

# Without src/planlock/py.typed, `mypy benchmarks/run.py` sees planlock as untyped; with it (or
# when src/ is checked too) the import is typed. The ignore keeps both cases clean.
import planlock  # type: ignore[import-untyped, unused-ignore]

# --------------------------------------------------------------------------------------------
# Main


def metadata(cfg: Config) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "planlock": planlock.__version__,
        "quick": cfg.quick,
        "config": asdict(cfg),
        "load_before": load_average(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


def load_note(load: list[float]) -> str:
    """The load average, with a warning when other work shares the CPUs."""
    if not load:
        return "load average: unknown"
    text = f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    busy = (os.cpu_count() or 1) / 2
    if load[0] > busy:
        text += (
            f" (above {busy:g}: other processes share the CPUs, so absolute times are inflated;"
            " ratios against the same-run baselines are more trustworthy)"
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="planlock performance benchmarks")
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run (smaller, fewer reps)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the asyncio-floor and LangGraph comparison"
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    meta = metadata(cfg)
    print(
        f"planlock {meta['planlock']} benchmarks{' (quick)' if cfg.quick else ''}: "
        f"Python {meta['python']}, {meta['cpus']} CPUs, {meta['platform']}, {meta['date']}"
    )
    print(load_note(meta["load_before"]), end="\n\n")
    registry = build_registry()
    started = time.perf_counter()
    compared = ([], []) if args.no_compare else print_compare(cfg.quick)
    with tempfile.TemporaryDirectory(prefix="planlock-bench-") as tmp:
        stores = Stores(Path(tmp))
        try:
            overhead = anyio.run(bench_overhead, cfg, registry, stores)
            print(report_overhead(overhead, cfg.concurrency), end="\n\n", flush=True)
            breakdown = anyio.run(bench_breakdown, cfg, registry, stores)
            print(report_breakdown(breakdown), end="\n\n", flush=True)
            dags = anyio.run(bench_makespan, cfg, registry, stores)
            overshoot = anyio.run(sleep_overshoot_ms, 10 if cfg.quick else 40)
            print(report_makespan(dags, overshoot), end="\n\n", flush=True)
        finally:
            stores.close()
    validation = bench_validation(cfg, registry)
    print(report_validation(validation))
    print()
    targets = targets_of(overhead, breakdown, dags, validation)
    print(report_targets(targets))
    elapsed = time.perf_counter() - started
    met = sum(t.met for t in targets)
    print(f"\n{met}/{len(targets)} targets met; the benchmarks took {elapsed:.0f} s")
    print(load_note(load_average()))
    if args.json:
        results = {
            "meta": {**meta, "seconds": round(elapsed, 1), "load_after": load_average()},
            "compare": [asdict(r) for r in compared[0]],
            "compare_makespan": [asdict(r) for r in compared[1]],
            "overhead": [r.to_json() for r in overhead],
            "breakdown": {**asdict(breakdown), "scaling": breakdown.scaling},
            "makespan": [r.to_json() for r in dags],
            "sleep_overshoot_ms": overshoot,
            "validation": [r.to_json() for r in validation],
            "targets": [t.to_json() for t in targets],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
