"""Start-up cost: how long ``import planlock`` and ``planlock --help`` take in a fresh process.

    .venv/bin/python benchmarks/import_time.py            # 9 fresh processes per figure
    .venv/bin/python benchmarks/import_time.py --runs 15 --top 20

Each figure is the **median** of ``--runs`` fresh interpreters: ``python -c 'import planlock'``,
and ``planlock --help`` run through the console script's entry point (``planlock.cli:main``),
next to the bare interpreter's start-up (``python -c pass``), all interleaved so that they see
the same noise. Wall time is the target; the children's CPU time (user + system) is shown beside
it because on a shared machine it is inflated far less by other processes than wall time is.
Then one ``python -X importtime`` run per entry lists the packages that cost the most (their
modules' own import time, summed per top-level package; planlock per subpackage) and the heavy
optional dependencies that were imported at all (there should be none). The load average is
printed before and after. It reports; it does not gate (targets on a quiet 2-core machine:
``import planlock`` < 0.4 s, ``planlock --help`` < 0.5 s; tests/test_import_time.py gates what
is imported).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = (
    "fastapi",
    "uvicorn",
    "starlette",
    "httpx",
    "openai",
    "anthropic",
    "xllamacpp",
    "llama_cpp",
    "dbos",
    "psycopg",
    "agentdojo",
    "pydantic_ai",
    "jsonschema",
    "yaml",
)
HELP = "import sys; from planlock.cli import main; sys.argv[1:] = ['--help']; main()"
COMMANDS = {
    "python (bare)": ["-c", "pass"],
    "import planlock": ["-c", "import planlock"],
    "planlock --help": ["-c", HELP],
}
TARGETS = {"import planlock": 0.4, "planlock --help": 0.5}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh interpreter running ``args``."""
    env = {**os.environ, "COLUMNS": "100"}
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=env)  # noqa: S603  (our own interpreter and fixed arguments)
    return time.perf_counter() - start, _children_cpu() - cpu


def _importtime(code: str) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, module) for every module ``code`` imports, from -X importtime."""
    done = subprocess.run(  # noqa: S603  (our own interpreter and fixed arguments)
        [sys.executable, "-X", "importtime", "-c", code],
        check=False,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(own), int(cumulative), name))
    return rows


def _by_package(rows: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """Self time summed per top-level package (planlock per subpackage): where the time goes."""
    totals: dict[str, int] = {}
    for own, _, name in rows:
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "planlock" else parts[0]
        totals[key] = totals.get(key, 0) + own
    return sorted(((us, key) for key, us in totals.items()), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per figure (9)")
    parser.add_argument("--top", type=int, default=12, help="costliest packages to list (12)")
    args = parser.parse_args()

    import planlock  # noqa: PLC0415  (only to say which checkout is measured)

    where = Path(planlock.__file__).parent
    print(f"python {sys.version.split()[0]}; planlock from {where}")
    print(f"before: {_load()}")
    for argv in COMMANDS.values():  # warm the file cache and the bytecode caches
        _run(argv)
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):  # interleaved, so that every figure sees the same noise
        for name, argv in COMMANDS.items():
            w, c = _run(argv)
            wall[name].append(w)
            cpu[name].append(c)
    print(f"\nmedian of {args.runs} fresh processes: wall (min..max), CPU")
    for name in COMMANDS:
        median = statistics.median(wall[name])
        verdict = ""
        if name in TARGETS:
            verdict = "  MET" if median < TARGETS[name] else f"  MISSED (< {TARGETS[name]} s)"
        print(
            f"  {name:<18} {median:6.3f} s  ({min(wall[name]):.3f}..{max(wall[name]):.3f})"
            f"  CPU {statistics.median(cpu[name]):6.3f} s{verdict}"
        )

    for label, code in (("import planlock", "import planlock"), ("planlock --help", HELP)):
        rows = _importtime(code)
        names = {name for _, _, name in rows}
        top = max((cum for _, cum, name in rows if name in ("planlock", "planlock.cli")))
        print(f"\n-X importtime, {label}: {len(rows)} modules, {top / 1e6:.3f} s cumulative")
        print(f"  top {args.top} packages by self time (their modules' own import time):")
        for us, key in _by_package(rows)[: args.top]:
            print(f"  {us / 1e3:8.1f} ms  {key}")
        loaded = [h for h in HEAVY if h in names]
        print(f"  heavy dependencies imported: {', '.join(loaded) or 'none'}")
    print(f"\nafter: {_load()}")


if __name__ == "__main__":
    main()
