"""The benchmark still measures what it claims: a tiny run, checked, not timed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.conftest import ROOT


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "decision_path", ROOT / "bench" / "decision_path.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_decision_path_records_one_decision_per_alert(tmp_path: Path) -> None:
    result = await bench().decided_per_second(f"sqlite+aiosqlite:///{tmp_path}/b.db", 20, 400)
    assert result["alerts_per_s"] > 0  # it asserts internally that 400 decisions exist


def test_held_alerts_are_all_held() -> None:
    held = bench().held_alerts(2000, rules=20)
    assert held == held | {"held": 2000, "rejected": 0}
