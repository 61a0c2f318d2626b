"""Each scenario, written to a log and replayed through the agent, yields exactly its expected events."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import cache
from pathlib import Path

import can
import cantools
import pytest

import simulators

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"
SCENARIOS = sorted(simulators.list_scenarios())
SPEED = 1000


@cache
def replayed(tmp_root: Path) -> dict[str, tuple[Path, list[dict]]]:
    """Every scenario simulated and replayed once, two at a time (one per core)."""
    def one(name: str) -> tuple[str, tuple[Path, list[dict]]]:
        log = tmp_root / f"{name}.log"
        simulate = [sys.executable, "-m", "agent.cli", "simulate", "--scenario", name,
                    "--log", str(log), "--speed", str(SPEED)]
        subprocess.run(simulate, cwd=ROOT, check=True, capture_output=True, timeout=120)
        replay = [sys.executable, "-m", "agent.cli", "replay", "--config", str(CONFIG), str(log)]
        done = subprocess.run(replay, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return name, (log, [json.loads(line) for line in done.stdout.splitlines()])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, SCENARIOS))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict]]]:
    return replayed(tmp_path_factory.mktemp("scenarios"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_replaying_the_scenario_yields_exactly_its_expected_events(
        name: str, results: dict[str, tuple[Path, list[dict]]]) -> None:
    expected = simulators.load_scenario(name).expect_events
    _, messages = results[name]
    assert [m["kind"] for m in messages] == expected


def charge_completed_at(log: Path) -> float:
    """When the simulated charger first reports COMPLETE, read from the log itself."""
    db = cantools.database.load_file(str(ROOT / "dbc" / "carfriend_ev.dbc"))
    charger = db.get_message_by_name("Charger_Status")
    for msg in can.LogReader(log):
        if (msg.arbitration_id == charger.frame_id and len(msg.data) == 8
                and str(charger.decode(bytes(msg.data))["ChargerState"]) == "COMPLETE"):
            return float(msg.timestamp)
    raise AssertionError(f"{log}: the charge never completed")


@pytest.mark.parametrize("name", [n for n in SCENARIOS
                                  if "charge.started" in simulators.load_scenario(n).expect_events])
def test_charge_started_eta_is_within_10_minutes_of_the_real_completion(
        name: str, results: dict[str, tuple[Path, list[dict]]]) -> None:
    log, messages = results[name]
    started = next(m for m in messages if m["kind"] == "charge.started")
    eta = datetime.fromisoformat(started["data"]["eta"].replace("Z", "+00:00")).timestamp()
    assert abs(eta - charge_completed_at(log)) <= 600


def test_event_times_are_the_scenarios_simulated_time(results: dict[str, tuple[Path, list[dict]]]) -> None:
    scenario = simulators.load_scenario("offpeak-delayed-charge")
    _, messages = results["offpeak-delayed-charge"]
    started = next(m for m in messages if m["kind"] == "charge.started")
    ts = datetime.fromisoformat(started["ts"].replace("Z", "+00:00")).astimezone(scenario.tz)
    assert ts.strftime("%H:%M") == "23:00"  # the delayed start, not when the cable went in
