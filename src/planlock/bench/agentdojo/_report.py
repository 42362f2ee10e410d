"""Tables, files and the picture for the AgentDojo benchmark.

One row per (agent, suite, attack): pairs, utility, attack success by AgentDojo's own checks and
by our strict check, runs in which a person was asked (approvals), and time. Written as JSON
(every pair, plus the rows) and Markdown; the plot (matplotlib, optional) shows utility against
attack success per suite, for planlock and the baseline, beside published anchors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from planlock.bench.agentdojo._autonomy import (
    CAMEL_FIRE_RATE,
    AutonomyRow,
    Miss,
    autonomy,
    autonomy_markdown,
    cell,
    misses,
    misses_markdown,
    pct,
    touches,
)
from planlock.bench.agentdojo._bench import PairResult

__all__ = [
    "ANCHORS",
    "CAMEL_FIRE_RATE",
    "AutonomyRow",
    "Miss",
    "Row",
    "agent_kind",
    "autonomy",
    "autonomy_markdown",
    "markdown",
    "misses",
    "misses_markdown",
    "plot",
    "rows_of",
    "summarize",
    "touches",
    "write",
]

ANCHORS: tuple[tuple[str, float, str], ...] = (
    (
        "CaMeL, provable security (utility)",
        77.0,
        (
            "CaMeL paper abstract, arXiv:2503.18813 v2: 77% of AgentDojo tasks solved with "
            "provable security; not re-measured here"
        ),
    ),
    (
        "undefended agent (utility)",
        84.0,
        "same abstract: 84% for the undefended system it compares with; not re-measured here",
    ),
)
"""Published figures we can cite, drawn as utility lines (their attack counts per attack and
suite are not given in a form comparable with our rows, so they are not plotted as points)."""


@dataclass(frozen=True)
class Row:
    agent: str
    suite: str
    attack: str
    pairs: int
    utility: float
    """Share of pairs whose user task succeeded (benign utility when attack is ``none``)."""
    attacks_agentdojo: int
    attacks_strict: int
    approval_runs: int
    """Pairs in which a person was asked at least once."""
    seconds: float
    utility_approved: float | None = None
    """Benign utility when a person grants every request (benign rows only)."""
    attacks_taint: int = 0
    """Pairs with a side effect that depends on injected text (by provenance) and ran without
    a person (the enforcement check)."""
    attacks_unasked: int = 0
    """Pairs with a side effect whose amount or target the user task's ground truth does not
    name."""
    runs: int = 0
    """Runs made: the worst case re-runs a pair once per combination of its choices."""
    capped: int = 0
    """Pairs whose re-runs hit the bound with combinations left untried."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(results: Iterable[PairResult], approved: Iterable[PairResult] = ()) -> list[Row]:
    groups: dict[tuple[str, str, str], list[PairResult]] = {}
    for r in results:
        groups.setdefault((r.agent, r.suite, r.attack or "none"), []).append(r)
    granted: dict[tuple[str, str], list[PairResult]] = {}
    for r in approved:
        granted.setdefault((r.agent, r.suite), []).append(r)
    rows: list[Row] = []
    for (agent, suite, attack), rs in groups.items():
        n = len(rs)
        extra = granted.get((agent, suite)) if attack == "none" else None
        rows.append(
            Row(
                agent,
                suite,
                attack,
                n,
                sum(r.utility for r in rs) / n,
                sum(r.attack_success for r in rs),
                sum(bool(r.strict) for r in rs),
                sum(r.approvals > 0 for r in rs),
                round(sum(r.seconds for r in rs), 2),
                sum(r.utility for r in extra) / len(extra) if extra else None,
                attacks_taint=sum(bool(r.tainted_effects) for r in rs),
                attacks_unasked=sum(bool(r.unasked_effects) for r in rs),
                runs=sum(r.runs for r in rs),
                capped=sum(r.capped for r in rs),
            )
        )
    return rows


def markdown(rows: Sequence[Row], header: str = "") -> str:
    lines = [header] if header else []
    lines += [
        (
            "| agent | suite | attack | pairs | utility | attacks (AgentDojo) | attacks (strict) "
            "| attacks (taint) | attacks (unasked) "
            "| runs asking a person | utility if approved | runs (capped) | time (s) |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {cell(r.agent)} | {r.suite} | {r.attack} | {r.pairs} | {pct(r.utility)} "
            f"| {r.attacks_agentdojo} | {r.attacks_strict} "
            f"| {r.attacks_taint} | {r.attacks_unasked} "
            f"| {r.approval_runs} ({pct(r.approval_runs / r.pairs)}) "
            f"| {pct(r.utility_approved)} | {r.runs} ({r.capped}) | {r.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write(
    out: Path,
    rows: Sequence[Row],
    results: Sequence[PairResult],
    meta: dict[str, Any],
    header: str = "",
    autonomy_rows: Sequence[AutonomyRow] = (),
    missed: Sequence[Miss] = (),
    planner: tuple[Sequence[Any], str] | None = None,
) -> list[Path]:
    """Write ``agentdojo.json`` and ``agentdojo.md`` (and the plot when matplotlib is there);
    with ``autonomy_rows`` (and ``missed``), both carry the autonomy table (and the tasks that
    need a person) too; with ``planner`` (the planner's rows and their Markdown), its figures."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "rows": [r.to_json() for r in rows],
        "autonomy": [r.to_json() for r in autonomy_rows],
        "misses": [m.to_json() for m in missed],
        "pairs": [r.to_json() for r in results],
    }
    if planner is not None:
        data["planner"] = [r.to_json() for r in planner[0]]
    paths = [out / "agentdojo.json", out / "agentdojo.md"]
    paths[0].write_text(json.dumps(data, indent=1), encoding="utf-8")
    text = markdown(rows, header) if rows else header
    if planner is not None:
        text += "\n" + planner[1]
    if autonomy_rows:
        text += "\n" + autonomy_markdown(autonomy_rows)
    if missed:
        text += "\n" + misses_markdown(missed)
    paths[1].write_text(text, encoding="utf-8")
    paths.extend(plot(rows, out))
    return paths


def rows_of(report: dict[str, Any]) -> list[Row]:
    """The rows of a written ``agentdojo.json`` (to plot several runs together)."""
    return [Row(**row) for row in report.get("rows", [])]


def agent_kind(agent: str) -> tuple[str, str]:
    """The legend entry and colour of an agent's points: planlock with the corpus's plans,
    planlock with a model's plans, or the ReAct baseline."""
    if not agent.startswith("planlock"):
        return "ReAct baseline (same worst-case model)", "tab:red"
    planner = agent.removeprefix("planlock[").split("|")[0]
    if planner.startswith("planner:"):
        return f"planlock, plans by the model `{planner.removeprefix('planner:')}`", "tab:green"
    return "planlock, corpus plans", "tab:blue"


def plot(rows: Sequence[Row], out: Path) -> list[Path]:
    """``agentdojo.png`` and ``.svg``: per suite and agent, benign utility against the share
    of attacked pairs that AgentDojo counts as successful (all attacks together). Filled: no
    person; hollow: a person approves what the policy sends them."""
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    points: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        p = points.setdefault(
            (r.agent, r.suite), {"pairs": 0, "hits": 0, "utility": -1.0, "approved": -1.0}
        )
        if r.attack == "none":
            p["utility"] = 100 * r.utility
            if r.utility_approved is not None:
                p["approved"] = 100 * r.utility_approved
        else:
            p["pairs"] += r.pairs
            p["hits"] += r.attacks_agentdojo
    fig, ax = plt.subplots(figsize=(8, 5.2))
    markers = {"banking": "o", "slack": "s", "travel": "^", "workspace": "D"}
    kinds: dict[str, str] = {}
    for (agent, suite), p in sorted(points.items()):
        if p["utility"] < 0 or p["pairs"] == 0:
            continue
        x = 100 * p["hits"] / p["pairs"]
        label, color = agent_kind(agent)
        kinds[label] = color
        marker = markers.get(suite, "x")
        ax.scatter(x, p["utility"], marker=marker, color=color, s=60)
        if p["approved"] >= 0:
            ax.scatter(x, p["approved"], marker=marker, facecolors="none", edgecolors=color, s=60)
    for label, y, _ in ANCHORS:
        ax.axhline(y, linestyle=":", color="grey", linewidth=1)
        ax.text(35, y + 1, label, fontsize=7, color="grey")
    for label, color in kinds.items():
        ax.scatter([], [], color=color, label=label)
    for suite, marker in markers.items():
        ax.scatter([], [], marker=marker, color="grey", label=suite)
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="hollow: a person approves")
    ax.set_xlim(-3, 100)
    ax.set_ylim(0, 105)
    ax.set_xlabel("attacked pairs where the attack succeeded, AgentDojo's checks (%)")
    ax.set_ylabel("benign utility (%)")
    ax.set_title("AgentDojo v1.2.2: utility against attack success")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    paths = [out / "agentdojo.png", out / "agentdojo.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths
