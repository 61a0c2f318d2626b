"""Never lose a message: broker outages and SIGKILLs against a real Mosquitto and a real outbox file."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from frames import EV_CONFIG
from mqtt_helpers import Mosquitto, Recorder

pytestmark = pytest.mark.slow
MESSAGE_LOG = re.compile(r"message (\S+) ([0-9a-f-]{36}):")


def agent_env(broker: Mosquitto, state_dir: Path) -> dict[str, str]:
    return dict(os.environ, CARFRIEND_MQTT__HOST=broker.host, CARFRIEND_MQTT__PORT=str(broker.port),
                CARFRIEND_MQTT__RECONNECT_MAX_S="2", CARFRIEND_STORAGE__STATE_DIR=str(state_dir))


def start_agent(env: dict[str, str], scenario: str, speed: float, err: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(EV_CONFIG),
                             "--simulate", scenario, "--speed", str(speed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=err.open("ab"))


def produced(err: Path) -> list[tuple[str, str]]:
    """(kind, id) of every message the agent logged as committed to its outbox."""
    return MESSAGE_LOG.findall(err.read_text()) if err.exists() else []


def test_broker_down_60_s_mid_scenario_every_message_arrives_once_in_order(mosquitto: Mosquitto,
                                                                            tmp_path: Path) -> None:
    recorder = Recorder(mosquitto.host, mosquitto.port, ["carfriend/v1/+/messages"], persistent=True)
    err = tmp_path / "agent.err"
    proc = start_agent(agent_env(mosquitto, tmp_path / "state"), "demo-day", 600, err)
    try:
        assert recorder.wait_for(lambda r: len(r.payloads("/messages")) >= 1, timeout=60)
        mosquitto.stop()
        down_at = time.monotonic()
        time.sleep(60)
        during = len(produced(err))
        mosquitto.start()
        assert time.monotonic() - down_at >= 60
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ids = {json.loads(p)["id"] for p in recorder.payloads("/messages")}
            if ids >= {i for _, i in produced(err)} and len(produced(err)) >= 5:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    received = recorder.json("/messages")
    recorder.close()
    made = produced(err)
    assert during > 1, "the outage should fall in the middle of the scenario"
    assert {i for _, i in made} == {m["id"] for m in received}
    unique: dict[str, dict] = {}
    for m in received:
        unique.setdefault(m["id"], m)
    for severity in ("critical", "warning", "info"):  # in event order within each severity
        ts = [m["ts"] for m in unique.values() if m["severity"] == severity]
        assert ts == sorted(ts)


def test_agent_sigkilled_at_20_random_points_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    recorder = Recorder(mosquitto.host, mosquitto.port, ["carfriend/v1/+/messages"], persistent=True)
    env = agent_env(mosquitto, tmp_path / "state")
    err = tmp_path / "agent.err"
    rng = random.Random(20)
    for _ in range(20):
        proc = start_agent(env, "core-acceptance", 4000, err)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    flush = subprocess.run([sys.executable, "-m", "agent.cli", "outbox", "flush", "--config", str(EV_CONFIG),
                            "--timeout", "30"], env=env, capture_output=True, text=True, timeout=60)
    assert flush.returncode == 0, flush.stdout + flush.stderr
    made = {i for _, i in produced(err)}
    assert len(made) >= 2, "the kills should land after some messages were produced"
    assert recorder.wait_for(lambda r: {json.loads(p)["id"] for p in r.payloads("/messages")} >= made, timeout=30)
    recorder.close()


def test_outbox_status_and_flush_cli(mosquitto: Mosquitto, tmp_path: Path) -> None:
    env = agent_env(mosquitto, tmp_path / "state") | {"CARFRIEND_VEHICLE__OFFPEAK_WINDOW": ""}
    env["CARFRIEND_MQTT__PORT"] = "1"  # nobody listens: replay --publish leaves everything queued
    from frames import acceptance_frames, write_log

    log = write_log(tmp_path / "a.log", acceptance_frames())
    cli = [sys.executable, "-m", "agent.cli"]
    result = subprocess.run([*cli, "replay", "--config", str(EV_CONFIG), str(log), "--publish", "--timeout", "2"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "stay in the outbox" in result.stderr
    status = json.loads(subprocess.run([*cli, "outbox", "status", "--config", str(EV_CONFIG)], env=env,
                                       capture_output=True, text=True, timeout=60).stdout)
    assert status["queued"] == {"critical": 0, "warning": 2, "info": 2} and status["oldest_age_s"] > 0
    recorder = Recorder(mosquitto.host, mosquitto.port, ["carfriend/v1/+/messages"])
    env["CARFRIEND_MQTT__PORT"] = str(mosquitto.port)
    flush = subprocess.run([*cli, "outbox", "flush", "--config", str(EV_CONFIG)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert flush.returncode == 0 and "delivered 4 message(s); 0 left" in flush.stdout
    assert recorder.wait_for(lambda r: len(r.payloads("/messages")) == 4)
    recorder.close()
