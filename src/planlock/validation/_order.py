"""Ordering of the compiled steps: Kahn's algorithm for a topological order, and every
dependency cycle reported once (with Tarjan's strongly connected parts), in linear time."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from planlock.core import Issue
from planlock.validation._types import Analysis

__all__ = ["order_steps"]


def order_steps(a: Analysis, index: Mapping[str, int], deps: Mapping[str, set[str]]) -> None:
    """Kahn's algorithm: a topological order, and every cycle reported once."""
    indeg = {sid: len(d) for sid, d in deps.items()}
    dependents: dict[str, list[str]] = {sid: [] for sid in deps}
    for sid, d in deps.items():
        for dep in d:
            if dep in dependents:
                dependents[dep].append(sid)
            else:
                indeg[sid] -= 1  # dependency on a step that did not compile: already reported
    queue = deque(sorted((s for s, n in indeg.items() if n == 0), key=index.__getitem__))
    order: list[str] = []
    while queue:
        sid = queue.popleft()
        order.append(sid)
        for nxt in dependents[sid]:
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                queue.append(nxt)
    a.order = order
    a.dependents = dependents
    if len(order) == len(deps):
        return
    remaining = {s for s, n in indeg.items() if n > 0}
    comps = [c for c in _components(remaining, deps) if len(c) > 1]
    for comp in sorted(comps, key=lambda c: min(map(index.__getitem__, c))):
        # inside a strongly connected part every step has a dependency in the part: the walk
        # always closes a cycle, and each part is walked once
        cycle = _find_cycle(min(comp, key=index.__getitem__), deps, comp, set())
        if cycle:
            first = min(cycle, key=index.__getitem__)
            k = cycle.index(first)
            ring = cycle[k:] + cycle[:k]
            text = " -> ".join([*ring, ring[0]])
            msg = f"steps depend on each other in a cycle: {text} (each needs the next)"
            a.issues.append(Issue("cycle", f"$.steps[{index[first]}]", msg))


def _find_cycle(
    start: str, deps: Mapping[str, set[str]], remaining: set[str], visited: set[str]
) -> list[str]:
    """Follow dependencies inside the unresolved set until a step repeats; each step is walked
    at most once over all calls, so reporting every cycle stays linear."""
    pos: dict[str, int] = {}
    path: list[str] = []
    cur = start
    while cur not in pos:
        if cur in visited:
            return []
        visited.add(cur)
        pos[cur] = len(path)
        path.append(cur)
        nxt = sorted(d for d in deps.get(cur, ()) if d in remaining)
        if not nxt:
            return []
        cur = nxt[0]
    return path[pos[cur] :]


def _components(nodes: set[str], deps: Mapping[str, set[str]]) -> list[set[str]]:
    """Strongly connected parts of the dependency graph restricted to ``nodes`` (Tarjan,
    iterative)."""
    num: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(nodes):
        if root in num:
            continue
        num[root] = low[root] = len(num)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(d for d in deps.get(root, ()) if d in nodes)))]
        while work:
            v, it = work[-1]
            for w in it:
                if w not in num:
                    num[w] = low[w] = len(num)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(d for d in deps.get(w, ()) if d in nodes))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], num[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == num[v]:
                    comp: set[str] = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    out.append(comp)
    return out
