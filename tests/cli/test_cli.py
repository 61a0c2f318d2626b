"""CLI surface: the schema in docs/ is current, demo runs end to end, run --simulate publishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from frames import EV_CONFIG
from mqtt_helpers import Mosquitto, Recorder

from agent.cli.demo import demo_speed
from agent.cli.schema import schema_text
from agent.profile.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_docs_message_schema_is_the_models_schema() -> None:
    assert (ROOT / "docs" / "message.schema.json").read_text() == schema_text()


def test_demo_shows_the_subscriber_the_cars_messages_and_exits_by_itself() -> None:
    result = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--speed", "2000"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for kind in ("battery.low", "charge.started", "charge.completed"):
        assert f"] {kind} (" in out
    assert "status  online" in out and "status  offline" in out
    assert "demo finished" in out


def test_demo_runs_a_polled_car_at_60x_unless_asked_otherwise() -> None:
    """At 600x the simulated ECUs' answers (on simulated time) would miss the agent's timeouts:
    a car whose values are polled gets 60x; a broadcast car or a listen-only one 600x."""
    obd = load_config(ROOT / "config" / "vehicles" / "carfriend-ev-obd.toml")
    assert demo_speed(obd, None) == 60.0
    assert demo_speed(obd, 300.0) == 300.0  # --speed wins
    assert demo_speed(load_config(ROOT / "config" / "vehicles" / "carfriend-ev.toml"), None) == 600.0
    quiet = obd.model_copy(update={"can": obd.can.model_copy(update={"listen_only": True})})
    assert demo_speed(quiet, None) == 600.0  # sends nothing: nothing to time out


def test_run_with_simulate_publishes_to_mosquitto_and_stops_cleanly(mosquitto: Mosquitto, tmp_path: Path) -> None:
    recorder = Recorder(mosquitto.host, mosquitto.port, ["carfriend/v1/carfriend-ev-0001/#"])
    env = dict(os.environ, CARFRIEND_MQTT__HOST=mosquitto.host, CARFRIEND_MQTT__PORT=str(mosquitto.port),
               CARFRIEND_STORAGE__STATE_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(EV_CONFIG),
                             "--simulate", "core-acceptance", "--speed", "2000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert recorder.wait_for(lambda r: any(json.loads(p)["kind"] == "charge.completed"
                                               for p in r.payloads("/messages")), timeout=180)
        assert recorder.wait_for(lambda r: b"online" in r.payloads("/status"))
        assert recorder.wait_for(lambda r: r.payloads("/state"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert recorder.wait_for(lambda r: r.payloads("/status")[-1] == b"offline")
    kinds = [m["kind"] for m in recorder.json("/messages")]
    recorder.close()
    core = [k for k in kinds if k != "charge.offpeak_question"]  # plugged in at peak time: asked too
    assert core[:2] == ["battery.low", "charge.started"] and "charge.completed" in core
    assert "stopping: frames=" in err


def test_unknown_subcommand_arguments_and_bad_config_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[vehicle]\nid = 'a'\n[can]\ndbc = ['nope.dbc']\n")
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope.dbc: cannot read DBC" in result.stderr and "Traceback" not in result.stderr
