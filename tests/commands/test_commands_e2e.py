"""Commands end to end: `carfriend command` -> Mosquitto -> `carfriend run --simulate` -> CAN -> simulated car."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from frames import EV_CONFIG
from mqtt_helpers import Mosquitto, Recorder

pytestmark = pytest.mark.slow
VID = "carfriend-ev-0001"
KEY = "e2e-test-key-0123456789abcdef0123"


@pytest.fixture
def env(mosquitto: Mosquitto, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "key").write_text(KEY + "\n")
    return dict(os.environ, CARFRIEND_MQTT__HOST=mosquitto.host, CARFRIEND_MQTT__PORT=str(mosquitto.port),
                CARFRIEND_STORAGE__STATE_DIR=str(tmp_path / "state"), CARFRIEND_COMMAND_KEY=KEY,
                KEYFILE=str(tmp_path / "key"))


def agent(env: dict[str, str], scenario: str, speed: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(EV_CONFIG), "--simulate",
                             scenario, "--speed", str(speed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def parked_car(env: dict[str, str], mosquitto: Mosquitto) -> Iterator[Recorder]:
    recorder = Recorder(mosquitto.host, mosquitto.port, [f"carfriend/v1/{VID}/#"])
    proc = agent(env, "plugged-in-at-home", 10)
    assert recorder.wait_for(lambda r: b"online" in r.payloads("/status"), timeout=60)
    assert recorder.wait_for(lambda r: any(json.loads(p).get("full") for p in r.payloads("/state")), timeout=30)
    yield recorder
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    recorder.close()


def command(env: dict[str, str], name: str, args: str = "{}", *extra: str) -> tuple[int, list[dict]]:
    result = subprocess.run([sys.executable, "-m", "agent.cli", "command", "--config", str(EV_CONFIG),
                             "--key-file", env["KEYFILE"], name, args, "--wait", "30", *extra],
                            env=env, capture_output=True, text=True, timeout=90)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def test_every_command_is_accepted_then_completed_on_the_parked_car(env: dict[str, str], parked_car: Recorder) -> None:
    for name, args in [("climate.start", '{"target_c": 21}'), ("climate.stop", "{}"),
                       ("charge.limit", '{"limit_pct": 90}'), ("charge.stop", "{}"), ("charge.start", "{}"),
                       ("charge.schedule", '{"at": "23:30"}'), ("charge.start", "{}")]:
        rc, results = command(env, name, args)
        assert rc == 0 and [r["status"] for r in results] == ["accepted", "completed"], (name, results)
    for name in ("status.request", "ping"):
        rc, results = command(env, name)
        assert rc == 0 and [r["status"] for r in results] == ["completed"]


def test_replayed_and_unsigned_payloads_are_rejected(env: dict[str, str], parked_car: Recorder,
                                                     mosquitto: Mosquitto) -> None:
    printed = subprocess.run([sys.executable, "-m", "agent.cli", "command", "--config", str(EV_CONFIG), "--key-file",
                              env["KEYFILE"], "climate.start", '{"target_c": 21}', "--print-payload"],
                             env=env, capture_output=True, text=True, timeout=60).stdout
    signed = json.loads(printed)
    unsigned = {k: v for k, v in signed.items() if k != "sig"} | {"id": "unsigned-1"}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    topic = f"carfriend/v1/{VID}/cmd/climate.start"
    for doc in (signed, signed, unsigned):
        client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(5)
    client.loop_stop()

    def results(r: Recorder) -> list[dict]:
        return [json.loads(p) for p in r.payloads("/cmd/climate.start/result")]

    assert parked_car.wait_for(lambda r: len(results(r)) >= 4, timeout=30)
    by_id: dict[str, list[str]] = {}
    for doc in results(parked_car):
        by_id.setdefault(doc["id"], []).append(f"{doc['status']}: {doc['reason']}")
    assert by_id[signed["id"]][:2] == ["accepted: sent TCU_ClimateCmd", "rejected: replayed command id"]
    assert by_id["unsigned-1"] == ["rejected: missing or malformed signature"]


def test_reply_later_delays_the_simulated_charge_to_off_peak(env: dict[str, str], parked_car: Recorder) -> None:
    def messages(r: Recorder) -> list[dict]:
        return r.json("/messages")

    assert parked_car.wait_for(lambda r: any(m["kind"] == "charge.started" for m in messages(r)), timeout=90)
    started = next(m for m in messages(parked_car) if m["kind"] == "charge.started")
    assert started["question"] == ["ok", "later"]
    rc, results = command(env, "reply", json.dumps({"message_id": started["id"], "answer": "later"}))
    assert rc == 0 and [r["status"] for r in results] == ["accepted", "completed"]
    assert parked_car.wait_for(lambda r: any(m["kind"] == "charge.scheduled" for m in messages(r)), timeout=30)
    said = next(m for m in messages(parked_car) if m["kind"] == "charge.scheduled")
    assert "11:00 p.m." in said["text"]

    def charging(r: Recorder) -> list[bool]:
        docs = [json.loads(p) for p in r.payloads("/state")]
        return [d["signals"]["Vehicle.Powertrain.TractionBattery.Charging.IsCharging"]["value"] for d in docs
                if "Vehicle.Powertrain.TractionBattery.Charging.IsCharging" in d["signals"]]

    assert parked_car.wait_for(lambda r: charging(r) and charging(r)[-1] is False, timeout=30)
    assert not any(m["kind"] == "charge.interrupted" for m in messages(parked_car))
    rc, results = command(env, "reply", json.dumps({"message_id": started["id"], "answer": "ok"}))
    assert rc == 1 and "already answered" in results[-1]["reason"]


def test_command_during_a_drive_is_rejected_as_moving(env: dict[str, str], mosquitto: Mosquitto) -> None:
    recorder = Recorder(mosquitto.host, mosquitto.port, [f"carfriend/v1/{VID}/#"])
    proc = agent(env, "soc-noise-20", 2)

    def speeds(r: Recorder) -> list[float]:
        docs = [json.loads(p) for p in r.payloads("/state")]
        return [d["signals"]["Vehicle.Speed"]["value"] for d in docs if "Vehicle.Speed" in d["signals"]]

    try:
        assert recorder.wait_for(lambda r: any(s > 5 for s in speeds(r)), timeout=60)
        rc, results = command(env, "climate.start", '{"target_c": 21}')
        assert rc == 1 and results[-1]["status"] == "rejected" and "moving" in results[-1]["reason"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        recorder.close()


# -- issue 12, finding 4: no command payload stops the agent; retained commands are ignored --
ZEROS = "0" * 64
SURROGATE = b'{"id":"k1","issued_at":"\\ud800","args":{},"sig":"%s"}' % ZEROS.encode()  # the review's


def deep(depth: int) -> bytes:
    """Nested arrays in args: the review's ~975 levels decode, then fail to re-encode (RecursionError)
    when the stack is a few frames deeper; which depth does it depends on the agent's stack."""
    nested = b"[" * depth + b"]" * depth
    return b'{"id":"deep-%d","issued_at":"2026-11-22T03:00:00Z","args":{"x":%s},"sig":"%s"}' % (
        depth, nested, ZEROS.encode())


DEEP = [("cmd/climate.start", deep(d), False) for d in range(930, 1010)]


def publish(mosquitto: Mosquitto, messages: list[tuple[str, bytes, bool]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        for leaf, payload, retain in messages:
            client.publish(f"carfriend/v1/{VID}/{leaf}", payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def signed(env: dict[str, str], name: str, args: str = "{}", cid: str | None = None) -> bytes:
    extra = ["--id", cid] if cid else []
    out = subprocess.run([sys.executable, "-m", "agent.cli", "command", "--config", str(EV_CONFIG), "--key-file",
                          env["KEYFILE"], name, args, "--print-payload", *extra],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return out.strip().encode()


def test_poison_commands_are_answered_or_dropped_and_the_agent_keeps_running(env: dict[str, str],
                                                                            mosquitto: Mosquitto) -> None:
    recorder = Recorder(mosquitto.host, mosquitto.port, [f"carfriend/v1/{VID}/#"])
    proc = agent(env, "plugged-in-at-home", 10)
    try:
        # the agent's first state comes after its subscription: the poison cannot overtake it
        assert recorder.wait_for(lambda r: r.payloads("/state"), timeout=60)
        publish(mosquitto, [*DEEP, ("cmd/ping", SURROGATE, False)])
        rc, results = command(env, "ping")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert rc == 0 and [r["status"] for r in results] == ["completed"]

        def answers(r: Recorder) -> dict[str, dict]:
            return {d["id"]: d for p in r.payloads("/result") for d in [json.loads(p)]}

        # the recorder is another subscriber than the command tool: k1's result may reach it later
        assert recorder.wait_for(lambda r: "k1" in answers(r), timeout=30)
        got = answers(recorder)
        assert got["k1"]["status"] == "rejected" and "not JSON" in got["k1"]["reason"]
        assert not [cid for cid in got if cid.startswith("deep-")]  # not parsed, so no id to answer
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        recorder.close()
    assert proc.returncode == 0
    assert stderr.count("dropped (payload nested more than 4 levels deep)") == len(DEEP)


def test_retained_commands_are_ignored_at_every_start(env: dict[str, str], mosquitto: Mosquitto) -> None:
    publish(mosquitto, [("cmd/ping", SURROGATE, True), ("cmd/climate.start", deep(975), True),
                        ("cmd/status.request", signed(env, "status.request", cid="retained-status"), True),
                        ("cmd/charge.stop", signed(env, "charge.stop", cid="retained-stop"), True)])
    recorder = Recorder(mosquitto.host, mosquitto.port, [f"carfriend/v1/{VID}/#"])
    for _ in range(2):  # the same retained messages come again at every (re)subscription
        states = len(recorder.payloads("/state"))
        proc = agent(env, "plugged-in-at-home", 10)
        try:  # the agent's first state comes after its subscription, so the ping cannot overtake it
            assert recorder.wait_for(lambda r, n=states: len(r.payloads("/state")) > n, timeout=60)
            rc, results = command(env, "ping")
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert rc == 0 and [r["status"] for r in results] == ["completed"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr[-2000:]
        assert stderr.count("retained command on") == 4, stderr[-2000:]
    answered = {json.loads(p)["id"] for p in recorder.payloads("/result")}
    assert answered.isdisjoint({"k1", "deep-975", "retained-status", "retained-stop"}), answered
    recorder.close()
