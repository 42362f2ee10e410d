from __future__ import annotations

import planlock


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions and the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted_and_complete() -> None:
    exported = planlock.__all__
    assert exported == sorted(exported, key=isort_key)
    public = {n for n in dir(planlock) if not n.startswith("_")}
    assert public - {"demo", "testing"} <= set(exported)
    for name in exported:
        assert hasattr(planlock, name), name
