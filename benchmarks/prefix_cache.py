"""The embedded planner in a fresh process: with the on-disk prefix cache, and without.

    .venv/bin/python benchmarks/prefix_cache.py            # the demo's goal, 3 rounds (~5 min)
    .venv/bin/python benchmarks/prefix_cache.py --rounds 1 --goal "Look up ticket T-1"

Each round starts two fresh processes, in alternating order: one with the prefix cache off
(``PLANLOCK_PREFIX_CACHE=off``), one with a cache directory that a warm-up process filled
with the demo registry's prefix (planning another goal, so only the prefix is reused). Each
process loads the model and plans the goal over the demo's help-desk tools with planlock's
``Planner``; it reports the time to load the model and to plan (the first attempt, and the
whole plan with repairs), and what the cache did. Printed: medians and the ratio cached ÷
uncached, measured in the same run, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CHILD = r"""
import json, sys, time
import anyio
from planlock.demo import GOAL, INPUTS, HelpDesk, build_registry
from planlock.llm import LocalLLM
from planlock.planning import Planner

goal = sys.argv[1] or GOAL
started = time.perf_counter()
llm = LocalLLM()
llm.load()
loaded = time.perf_counter()
planner = Planner(llm, build_registry(HelpDesk.sample()), timeout_s=None)
replies = []
inner = llm.complete
async def complete(request):
    reply = await inner(request)
    replies.append(reply)
    return reply
llm.complete = complete
plan = anyio.run(planner.plan, goal, INPUTS)
done = time.perf_counter()
print(json.dumps({
    "load_s": loaded - started,
    "plan_s": done - loaded,
    "first_s": replies[0].latency_s,
    "attempts": len(planner.attempts),
    "steps": len(plan.steps),
    "prefix_cache": replies[0].extra.get("prefix_cache"),
    "cached_tokens": replies[0].extra.get("cached_tokens"),
    "input_tokens": replies[0].input_tokens,
}))
"""


WARM_UP_GOAL = "Read ticket {{ticket.id}} and email its author the ticket_received template."


def child(goal: str, cache: str) -> dict[str, Any]:
    env = dict(os.environ, PLANLOCK_PREFIX_CACHE=cache)
    started = time.perf_counter()
    out = subprocess.run(  # noqa: S603  (this interpreter, our own script)
        [sys.executable, "-c", CHILD, goal], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    data["process_s"] = time.perf_counter() - started
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--goal", default="", help="default: the demo's goal")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "uncached": []}
    with tempfile.TemporaryDirectory(prefix="planlock-prefix-") as cache_dir:
        load_before = os.getloadavg()[0]
        # The warm-up plans another goal: what a cached run then reuses is the shared prefix
        # (instructions and tool list), not the goal it is measured on.
        warm = child(WARM_UP_GOAL, cache_dir)
        print(f"warm-up: {warm['prefix_cache']}, {warm['plan_s']:.1f} s", file=sys.stderr)
        for i in range(args.rounds):
            order = ("cached", "uncached") if i % 2 == 0 else ("uncached", "cached")
            for kind in order:
                got = child(args.goal, cache_dir if kind == "cached" else "off")
                runs[kind].append(got)
                print(f"round {i + 1} {kind}: {json.dumps(got)}", file=sys.stderr)
        load_after = os.getloadavg()[0]

    def med(kind: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[kind]))

    print(f"load average: {load_before:.2f} before, {load_after:.2f} after")
    print(f"{'median':<22}{'uncached':>10}{'cached':>10}{'ratio':>8}")
    for key, label in (
        ("first_s", "first attempt (s)"),
        ("plan_s", "whole plan (s)"),
        ("process_s", "process (s)"),
    ):
        u, c = med("uncached", key), med("cached", key)
        print(f"{label:<22}{u:>10.1f}{c:>10.1f}{c / u:>8.2f}")
    statuses = sorted({str(r["prefix_cache"]) for r in runs["cached"]})
    print(f"cache status of the cached runs: {', '.join(statuses)}")
    cached_tokens = [r["cached_tokens"] for r in runs["cached"]]
    print(f"prompt tokens {runs['cached'][0]['input_tokens']}, restored: {cached_tokens}")


if __name__ == "__main__":
    main()
