"""The benchmark still measures what it claims: a tiny run, checked, not timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import ROOT


def bench(name: str = "decision_path") -> ModuleType:
    """A benchmark script of bench/, imported as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_decision_path_records_one_decision_per_alert(tmp_path: Path) -> None:
    result = await bench().decided_per_second(f"sqlite+aiosqlite:///{tmp_path}/b.db", 20, 400)
    assert result["alerts_per_s"] > 0  # it asserts internally that 400 decisions exist


def test_held_alerts_are_all_held() -> None:
    held = bench().held_alerts(2000, rules=20)
    assert held == held | {"held": 2000, "rejected": 0}


@pytest.mark.parametrize("client", ["lean", "httpx"])
async def test_the_load_test_accounts_for_every_alert(tmp_path: Path, client: str) -> None:
    load = bench("load")
    server = load.Server(tmp_path, rules=5, database_url=None)
    try:
        await server.wait_ready()
        result = await load.storm(server, rules=5, alerts=400, senders=4, client=client)
    finally:
        server.stop()
    assert result["alerts"] >= 400  # resent groups count again
    assert result["client"] == client
    assert result["all_decided"] is True
    assert result["keys_admitted_twice"] == 0
    assert result["admitted"] > 0


async def test_the_convergence_bench_admits_every_waiting_incident(tmp_path: Path) -> None:
    convergence = bench("convergence")
    url = f"sqlite+aiosqlite:///{tmp_path}/c.db"
    for block in ("resume", "released"):
        result = await convergence.clearing(url, 20, block)  # asserts all 20 are admitted
        assert result["incidents"] == 20
        assert 0 <= result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


async def test_the_replay_bench_decides_every_alert_in_both_replays() -> None:
    result = await bench("replay").replayed_per_second(40)  # asserts every alert is decided
    assert result["alerts"] == 40
    assert result["alerts_per_s"] > 0


async def test_the_event_bench_decides_every_matching_event_once(tmp_path: Path) -> None:
    result = await bench("events").decided_per_second(
        f"sqlite+aiosqlite:///{tmp_path}/e.db", 5, 400
    )
    assert result["decided_per_s"] > 0  # it asserts internally: one decision per matching event


@pytest.mark.prefect
@pytest.mark.timeout(600)
def test_the_first_action_bench_waits_for_every_call_and_every_run() -> None:
    result = bench("first_action").run(repeat=2, burst=3, runner_limit=None)
    assert result["runs_in_prefect"] == result["runs_completed"] == 1 + 2 + 3
    assert 0 < result["one_p50_s"] <= result["one_max_s"]
    assert 0 < result["burst_first_s"] <= result["burst_all_s"]
    assert len(result["one_phases_p50_s"]) == 4


async def test_the_sources_bench_commits_every_event(tmp_path: Path, redis_url: str) -> None:
    sources = bench("sources")
    (tmp_path / "json").mkdir()
    (tmp_path / "redis").mkdir()
    # Each asserts internally that every event is committed (and, for Redis, acknowledged).
    sent = await sources.json_webhooks(tmp_path / "json", 40, 4)
    read = await sources.redis_stream(tmp_path / "redis", 40, redis_url)
    assert sent["events"] == read["events"] == 40


def test_the_startup_bench_measures_a_ready_server(tmp_path: Path) -> None:
    result = bench("startup").start_once(ROOT, rules=5, bytecode=tmp_path / "pycache")
    assert 0 < result["ready_s"] and 0 < result["cpu_s"] <= result["idle_cpu_s"]
    assert 0 < result["rss_ready_mb"] and 0 < result["idle_rss_mb"]
