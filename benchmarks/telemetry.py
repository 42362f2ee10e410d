"""Per-step cost of planlock's tracing (planlock.telemetry), with and without a tracer.

    .venv/bin/python benchmarks/telemetry.py                 # about half a minute
    .venv/bin/python benchmarks/telemetry.py --base /tmp/base/src   # also the code before it

Runs a chain of no-op async tools (in-memory journal, automatic approval) in fresh processes,
one per mode, interleaved round by round so that all modes see the same noise; reports the best
per-step CPU time of each mode (``time.process_time``: on a shared, loaded machine the wall
time mostly measures the other processes):

- ``off``: no tracer, OpenTelemetry never imported (the default; must cost nothing);
- ``imported``: OpenTelemetry imported by the application but no tracer provider set;
- ``sdk``: an SDK tracer provider whose exporter drops the spans (the cost of the spans);
- ``base`` (with ``--base``): ``off`` on another source tree, e.g. the code before tracing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
STEPS = 500
RUNS = 5

HOOKS = """
import sys, timeit
from planlock import telemetry

def step():  # what one step adds when nothing records: its span, two journal events
    with telemetry.tool_span("noop", "s1", None, "run", "read") as span:
        telemetry.note("run", "step_started", {})
        if span is not telemetry.NOOP_SPAN and telemetry.capture_content():
            pass
        telemetry.note("run", "step_finished", {})

telemetry.tracer()
n = 100_000
print(min(timeit.repeat(step, number=n, repeat=5)) / n * 1e9)
"""

CHILD = """
import sys, time, gc
mode, steps, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "imported":
    import opentelemetry.trace
import anyio
import planlock
if mode == "sdk":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    planlock.telemetry.use_tracer_provider(provider)

reg = planlock.ToolRegistry()

@reg.tool(effect="read")
async def noop(x: int = 0) -> int:
    return x

plan = planlock.Plan.parse(
    [{"step": 1, "tool": "noop", "args": {"x": 1}}]
    + [{"step": i, "tool": "noop", "args": {"x": "{{steps.%d.output}}" % (i - 1)}}
       for i in range(2, steps + 1)]
)

async def main():
    best = float("inf")
    for _ in range(runs + 1):
        gc.collect()
        start = time.process_time()
        result = await planlock.run(plan, reg, approver=planlock.approve_all())
        took = time.process_time() - start
        assert result.ok
        best = min(best, took)
    return best

best = anyio.run(main)
otel = any(m.startswith("opentelemetry") for m in sys.modules)
print(f"{best / steps * 1e6:.2f} {int(otel)}")
"""


def measure(mode: str, src: str, steps: int, runs: int) -> tuple[float, bool]:
    env = dict(os.environ, PYTHONPATH=src)
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    out = subprocess.run(  # noqa: S603  (this interpreter, our own script)
        [sys.executable, "-c", CHILD, mode, str(steps), str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), out[1] == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="another source tree to run 'off' on (e.g. before)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    modes = [("off", SRC), ("imported", SRC), ("sdk", SRC)]
    if args.base:
        modes.insert(0, ("base", args.base))
    best: dict[str, float] = {}
    imported: dict[str, bool] = {}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for name, src in modes:
            us, otel = measure("off" if name == "base" else name, src, args.steps, RUNS)
            best[name] = min(best.get(name, us), us)
            imported[name] = otel
    print(f"{args.steps}-step chain of async no-op tools, best of {args.rounds} x {RUNS} runs")
    print(f"{'mode':<10} {'us/step':>8} {'vs off':>7}  opentelemetry imported")
    for name, _ in modes:
        ratio = best[name] / best["off"]
        print(f"{name:<10} {best[name]:>8.2f} {ratio:>7.2f}  {imported[name]}")
    hooks = subprocess.run(  # noqa: S603  (this interpreter, our own script)
        [sys.executable, "-c", HOOKS],
        env=dict(os.environ, PYTHONPATH=SRC),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(f"tracing hooks of one step without a tracer, alone: {float(hooks):.0f} ns")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
