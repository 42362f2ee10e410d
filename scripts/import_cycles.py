"""Fail if any two planlock modules import each other, directly or through others.

import-linter's layers contract keeps packages in order; this check covers the modules inside
one package too (``make lint`` runs both). Imports under ``if TYPE_CHECKING:`` are left out;
function-level imports count.
"""

from __future__ import annotations

import sys

import grimp


def cycles(package: str = "planlock") -> list[list[str]]:
    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    # Tarjan's strongly connected components; a package's __init__ importing its own modules is
    # not a cycle unless one of them imports the package back.
    low: dict[str, int] = {}
    order: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        order[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                continue
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for m in modules:
        if m not in order:
            visit(m)
    return out


def main() -> int:
    found = cycles()
    for comp in found:
        print("import cycle:", " <-> ".join(comp))
    print(f"{len(found)} import cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
