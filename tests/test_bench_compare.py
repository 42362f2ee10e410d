"""benchmarks/compare.py: the shapes are the DAGs it says, and every runner runs all of their steps
(planlock and LangGraph on the same plan, the asyncio floor by hand)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent


def load() -> ModuleType:
    """``benchmarks/compare.py`` as its script runs it: with its folder on the import path (it
    imports ``_table`` beside it)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.append(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("compare", ROOT / "benchmarks" / "compare.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = module
    spec.loader.exec_module(module)
    return module


compare = load()


def test_shapes() -> None:
    chain, fan, diamond = compare.shapes(30)
    assert chain.deps[:3] == ((), (0,), (1,))
    assert all(d == () for d in fan.deps)
    assert len(diamond.deps) == 30  # three diamonds of 1 + 8 + 1
    assert diamond.deps[0] == ()
    assert diamond.deps[1:9] == ((0,),) * 8
    assert diamond.deps[9] == tuple(range(1, 9))
    assert diamond.deps[10] == (9,)
    slept = compare.shapes(30, sleeps=True)[2]
    assert slept.critical_path_ms == pytest.approx(
        sum(
            slept.sleep_ms[top] + max(slept.sleep_ms[top + 1 : top + 9]) + slept.sleep_ms[top + 9]
            for top in (0, 10, 20)
        )
    )


def test_every_system_runs_every_shape(tmp_path: Path) -> None:
    pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    rows = anyio.run(compare.per_step, 30, 1, tmp_path)
    assert [r.shape for r in rows] == ["chain", "fan-out", "diamond"]
    for row in rows:
        assert set(row.us) == set(compare.SYSTEMS)
        assert all(us > 0 for us in row.us.values())


def test_langgraph_runs_the_same_dag() -> None:
    """The graph computes what the DAG does: the diamond's bottom step counts its 8 inputs."""
    pytest.importorskip("langgraph")
    shape = compare.shapes(10)[2]
    app = compare.build_graph(shape).compile()
    final = anyio.run(app.ainvoke, {})
    assert final == {"s0": 0, **{f"s{i}": 0 for i in range(1, 9)}, "s9": 8}
