"""The core issue's Done-when: replay of a known log gives exactly the expected messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from frames import EV_CONFIG, acceptance_frames, charge_completion_time, write_log
from mqtt_helpers import Mosquitto, Recorder

EXPECTED = ["battery.low", "charge.started", "charge.completed", "aux_battery.low"]


@pytest.fixture(scope="module")
def acceptance_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_log(tmp_path_factory.mktemp("logs") / "acceptance.log", acceptance_frames())


def carfriend(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # The core issue's rule set alone: without the reference car's off-peak window, which adds
    # a question when it is plugged in at peak time (tested below).
    env = dict(os.environ if env is None else env, CARFRIEND_VEHICLE__OFFPEAK_WINDOW="")
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_replay_prints_each_expected_message_once_with_log_timestamps(acceptance_log: Path) -> None:
    result = carfriend("replay", "--config", str(EV_CONFIG), str(acceptance_log))
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["kind"] for m in messages] == EXPECTED
    start = datetime.fromisoformat("2026-11-21T09:00:00+00:00")
    for m in messages:  # event time from the log (2026-11-21 18:00 JST onward), not the wall clock
        ts = datetime.fromisoformat(m["ts"].replace("Z", "+00:00"))
        assert start <= ts <= start.replace(hour=11)
        assert m["vehicle_id"] == "carfriend-ev-0001" and m["text"].endswith("— Kit")
    assert "frames read" in result.stderr and "4 messages" in result.stderr


def test_charge_started_eta_is_within_ten_minutes_of_actual_completion(acceptance_log: Path) -> None:
    result = carfriend("replay", "--config", str(EV_CONFIG), str(acceptance_log))
    started = next(json.loads(line) for line in result.stdout.splitlines() if '"charge.started"' in line)
    eta = datetime.fromisoformat(started["data"]["eta"].replace("Z", "+00:00")).timestamp()
    assert abs(eta - charge_completion_time()) < 600
    assert started["question"] == ["ok", "later"] and "Is that OK?" in started["text"]
    assert "p.m." in started["text"]  # 19:07 in Asia/Tokyo, the vehicle's zone


def test_replay_is_deterministic(acceptance_log: Path) -> None:
    first = carfriend("replay", "--config", str(EV_CONFIG), str(acceptance_log)).stdout
    second = carfriend("replay", "--config", str(EV_CONFIG), str(acceptance_log)).stdout
    assert first == second and first


def test_replay_state_file_holds_the_final_vss_state(acceptance_log: Path, tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    assert carfriend("replay", "--config", str(EV_CONFIG), str(acceptance_log), "--state", str(state_file)).returncode == 0
    doc = json.loads(state_file.read_text())
    signals = doc["signals"]
    assert doc["vehicle_id"] == "carfriend-ev-0001"
    assert signals["Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"]["value"] == 90.0
    assert signals["Vehicle.LowVoltageBattery.CurrentVoltage"]["value"] == 12.6
    assert signals["Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected"]["value"] is True
    # 4095 minutes is "not available": it never reaches the state
    assert "Vehicle.Powertrain.TractionBattery.Charging.TimeToComplete" not in signals


def test_with_an_offpeak_window_plugging_in_at_peak_time_asks_whether_to_wait(acceptance_log: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "--config", str(EV_CONFIG),
                             str(acceptance_log)], capture_output=True, text=True, timeout=120)
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["kind"] for m in messages] == [EXPECTED[0], "charge.offpeak_question", *EXPECTED[1:]]
    question = messages[1]
    assert question["question"] == ["yes", "no"] and "11:00 p.m." in question["text"]


def test_replay_publish_delivers_the_same_messages_to_mosquitto(acceptance_log: Path, mosquitto: Mosquitto,
                                                                tmp_path: Path) -> None:
    recorder = Recorder(mosquitto.host, mosquitto.port, ["carfriend/v1/carfriend-ev-0001/#"])
    env = dict(os.environ, CARFRIEND_MQTT__HOST=mosquitto.host, CARFRIEND_MQTT__PORT=str(mosquitto.port))
    env["CARFRIEND_STORAGE__STATE_DIR"] = str(tmp_path / "state")
    result = carfriend("replay", "--config", str(EV_CONFIG), str(acceptance_log), "--publish", env=env)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert recorder.wait_for(lambda r: len(r.payloads("/messages")) >= 4)
    received = recorder.json("/messages")
    recorder.close()
    assert sorted(m["id"] for m in received) == sorted(m["id"] for m in printed)
    # A drained backlog goes most severe first, in event order within each severity.
    for severity in ("warning", "info"):
        assert [m["id"] for m in received if m["severity"] == severity] == \
            [m["id"] for m in printed if m["severity"] == severity]
    assert [m["severity"] for m in received] == ["warning", "warning", "info", "info"]
