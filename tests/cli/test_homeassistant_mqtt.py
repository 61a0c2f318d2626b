"""Home Assistant discovery end to end: the daemon, a real Mosquitto, a virtual CAN bus, a restart with a smaller mapping."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import can
import pytest
from frames import EV_CONFIG, EV_DBC, car_frames
from ha_schema import Entity, problems
from mqtt_helpers import Mosquitto, Recorder

from agent.cli.daemon import Agent
from agent.profile.config import load_config

pytestmark = pytest.mark.slow
PREFIX = "homeassistant"
NODE = "carfriend-ev-0001"
AUX = f"{PREFIX}/sensor/{NODE}/aux_voltage/config"
AUX_LINE = '"Vehicle.LowVoltageBattery.CurrentVoltage"'


def env(broker: Mosquitto, tmp_path: Path, channel: str, **extra: str) -> dict[str, str]:
    return {"CARFRIEND_MQTT__HOST": broker.host, "CARFRIEND_MQTT__PORT": str(broker.port),
            "CARFRIEND_MQTT__STATE_MIN_INTERVAL_S": "0", "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path / "state"),
            "CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_HOMEASSISTANT__ENABLED": "true", **extra}


@contextmanager
def running(config: Path, environ: dict[str, str]) -> Iterator[Agent]:
    agent = Agent(load_config(config, dbc_override=[EV_DBC], environ=environ))
    worker = threading.Thread(target=agent.run)
    worker.start()
    try:
        yield agent
    finally:
        agent.request_stop()
        worker.join(20)
        assert not worker.is_alive()


def retained_configs(broker: Mosquitto, wait_s: float = 3.0) -> dict[str, bytes]:
    """What a Home Assistant starting now would receive under the discovery prefix (retained only)."""
    late = Recorder(broker.host, broker.port, [f"{PREFIX}/#"])
    try:
        time.sleep(wait_s)  # retained messages arrive right after the subscription
        return {t: p for t, p, retain in late.records if retain}
    finally:
        late.close()


def without_aux(tmp_path: Path) -> Path:
    text = EV_CONFIG.read_text()
    assert AUX_LINE in text
    lines = [line for line in text.splitlines() if not line.startswith(AUX_LINE)]
    out = tmp_path / "ev-without-12v.toml"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_config_topics_are_retained_and_a_signal_removed_from_the_mapping_loses_its_entity_after_restart(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    channel = f"ha-{time.monotonic_ns()}"
    live = Recorder(mosquitto.host, mosquitto.port, [f"{PREFIX}/#"])
    try:
        with running(EV_CONFIG, env(mosquitto, tmp_path, channel)):
            assert live.wait_for(lambda r: len(r.payloads("/config")) >= 13, timeout=20)
        first = retained_configs(mosquitto)
        assert AUX in first and len(first) == 13
        for topic, payload in first.items():
            assert problems(topic, json.loads(payload)) == []
        memory = json.loads((tmp_path / "state" / "homeassistant.json").read_text())
        assert set(memory["topics"]) == set(first)

        with running(without_aux(tmp_path), env(mosquitto, tmp_path, channel)):
            assert live.wait_for(lambda r: b"" in r.payloads(AUX), timeout=20)  # the empty payload HA removes it on
            assert live.wait_for(lambda r: len(r.payloads("/soc/config")) >= 2, timeout=20)
            # cleared on the broker, and forgotten once the broker acknowledged it
            assert live.wait_for(lambda r: AUX not in json.loads(
                (tmp_path / "state" / "homeassistant.json").read_text())["topics"], timeout=10)
        second = retained_configs(mosquitto)
        assert AUX not in second
        assert set(second) == set(first) - {AUX}
    finally:
        live.close()


def test_switching_discovery_off_removes_the_whole_device(mosquitto: Mosquitto, tmp_path: Path) -> None:
    channel = f"ha-off-{time.monotonic_ns()}"
    live = Recorder(mosquitto.host, mosquitto.port, [f"{PREFIX}/#"])
    try:
        with running(EV_CONFIG, env(mosquitto, tmp_path, channel)):
            assert live.wait_for(lambda r: len(r.payloads("/config")) >= 13, timeout=20)
        with running(EV_CONFIG, env(mosquitto, tmp_path, channel, CARFRIEND_HOMEASSISTANT__ENABLED="false")):
            assert live.wait_for(lambda r: sum(p == b"" for p in r.payloads("/config")) >= 13, timeout=20)
        assert retained_configs(mosquitto) == {}
    finally:
        live.close()


def test_home_assistant_entities_follow_the_car_through_the_broker(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The discovery configs and the state documents exactly as HA receives them, through HA's template rules."""
    channel = f"ha-state-{time.monotonic_ns()}"
    base = f"carfriend/v1/{NODE}"
    live = Recorder(mosquitto.host, mosquitto.port, [f"{PREFIX}/#", f"{base}/state"])
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        with running(EV_CONFIG, env(mosquitto, tmp_path, channel)) as agent:
            assert live.wait_for(lambda r: len(r.payloads("/config")) >= 13, timeout=20)
            ents = {t.split("/")[-2]: Entity(t.split("/")[-4], json.loads(p))
                    for t, p, _ in live.records if t.endswith("/config")}
            assert wait(lambda: agent.bus is not None)
            for i in range(3):
                for m in car_frames(time.time() + i * 0.01, soc=41.0, charging=True, plugged=True, power_kw=50.0,
                                    ttc_min=90, lv_v=12.4):
                    tx.send(m)
            assert live.wait_for(lambda r: any(d["signals"].get(SOC, {}).get("value") == 41.0
                                               for d in r.json("/state")), timeout=20)
            for m in car_frames(time.time(), soc=43.0, charging=True, plugged=True, power_kw=50.0, ttc_min=90,
                                lv_v=12.4):
                tx.send(m)
            assert live.wait_for(lambda r: any(d["signals"].get(SOC, {}).get("value") == 43.0
                                               for d in r.json("/state")), timeout=20)
        docs = live.json("/state")
        assert any(not d["full"] and len(d["signals"]) < 5 for d in docs)  # HA did get deltas
        for doc in docs:
            for e in ents.values():
                e.receive(f"{base}/state", json.dumps(doc))
        assert ents["soc"].state == "43.0"
        assert ents["charging"].state == "on" and ents["plugged_in"].state == "on"
        assert ents["aux_voltage"].state == "12.4"
        eta = datetime.fromisoformat(ents["charge_eta"].state).timestamp()
        assert abs(eta - (time.time() + 90 * 60)) < 120  # the charger's 90 minutes from the frames' time
        assert all(not e.warnings for e in ents.values()), {k: e.warnings for k, e in ents.items() if e.warnings}
    finally:
        tx.shutdown()
        live.close()


SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"


def wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
