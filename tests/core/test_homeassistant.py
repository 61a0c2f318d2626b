"""Home Assistant discovery: payloads follow HA's documented schema; templates survive the state topic's deltas."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from frames import ROOT, START
from ha_schema import Entity, problems

from agent.core import vss
from agent.core.homeassistant import ENTITIES, discovery_configs, entities_for, node_id
from agent.core.settings import AgentConfig, HomeAssistantConfig
from agent.core.state import VehicleState
from agent.core.statepub import StateReporter
from agent.profile.config import load_config

PROFILES = sorted((ROOT / "config" / "vehicles").glob("*.toml"))
STATE = "carfriend/v1/carfriend-ev-0001/state"


def configs_of(profile: Path, prefix: str = "homeassistant") -> tuple[AgentConfig, dict[str, dict[str, Any]]]:
    config = load_config(profile)
    config = config.model_copy(update={"homeassistant": HomeAssistantConfig(enabled=True, discovery_prefix=prefix)})
    return config, discovery_configs(config, config.mappings().keys(), "1.2.3")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_discovery_payload_of_every_shipped_profile_follows_home_assistants_schema(profile: Path) -> None:
    config, configs = configs_of(profile)
    assert configs
    found = [p for topic, payload in configs.items() for p in problems(topic, payload)]
    assert found == []
    unique_ids = [p["unique_id"] for p in configs.values()]
    assert len(unique_ids) == len(set(unique_ids))  # HA refuses a second entity with the same unique_id
    for payload in configs.values():
        assert payload["availability_topic"] == config.topic("status")
        assert payload["state_topic"] in (config.topic("state"), config.topic("messages"))
        assert payload["device"]["identifiers"] == [f"carfriend_{node_id(config.vehicle.id)}"]
        json.dumps(payload, allow_nan=False)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_only_mapped_signals_become_entities(profile: Path) -> None:
    config, configs = configs_of(profile)
    mapped = config.mappings().keys()
    keys = {t.split("/")[-2] for t in configs}
    expected = {e.key for e in ENTITIES if e.path is None or e.path in mapped}
    assert keys == expected
    assert "last_message" in keys
    assert ("charging" in keys) == (vss.IS_CHARGING in mapped)


def test_the_kona_profile_has_a_plug_but_no_charging_entity_and_no_odometer() -> None:
    _, configs = configs_of(ROOT / "config/vehicles/kona-ev.toml")
    keys = {t.split("/")[-2] for t in configs}
    assert {"soc", "plugged_in", "charge_eta", "aux_voltage"} <= keys
    assert not keys & {"charging", "odometer", "range", "dtcs"}


def test_discovery_topics_use_the_configured_prefix_and_a_node_id_home_assistant_accepts() -> None:
    config, configs = configs_of(ROOT / "config/vehicles/carfriend-ev.toml", prefix="ha/disc")
    assert all(t.startswith("ha/disc/sensor/carfriend-ev-0001/") or t.startswith("ha/disc/binary_sensor/")
               for t in configs)
    assert node_id("prius.phv-0001") == "prius_phv-0001"
    assert "homeassistant/binary_sensor/carfriend-ev-0001/charging/config" in configs_of(
        ROOT / "config/vehicles/carfriend-ev.toml")[1]


@pytest.mark.parametrize("bad, complaint", [
    ({"unit_of_measurement": "kWh"}, "not allowed for device_class battery"),
    ({"state_class": "total_increasing"}, "state_class 'total_increasing' not allowed"),
    ({"stat_t": "x"}, "unknown key 'stat_t'"),
    ({"entity_category": "config"}, "must be diagnostic"),
    ({"value_template": "{{ value_json.x "}, "value_template"),
    ({"state_topic": "carfriend/v1/+/state"}, "not a plain topic"),
])
def test_the_schema_check_catches_what_home_assistant_rejects(bad: dict[str, Any], complaint: str) -> None:
    _, configs = configs_of(ROOT / "config/vehicles/carfriend-ev.toml")
    topic = "homeassistant/sensor/carfriend-ev-0001/soc/config"
    found = problems(topic, {**configs[topic], **bad})
    assert any(complaint in p for p in found), found


def test_a_timestamp_sensor_with_a_unit_or_state_class_is_caught() -> None:
    _, configs = configs_of(ROOT / "config/vehicles/carfriend-ev.toml")
    topic = "homeassistant/sensor/carfriend-ev-0001/charge_eta/config"
    assert problems(topic, configs[topic]) == []
    assert problems(topic, {**configs[topic], "state_class": "measurement"})
    assert problems(topic, {**configs[topic], "unit_of_measurement": "s"})


# -- what Home Assistant shows while full snapshots and deltas arrive ---------------------------


def entities(configs: dict[str, dict[str, Any]]) -> dict[str, Entity]:
    return {t.split("/")[-2]: Entity(t.split("/")[-4], p) for t, p in configs.items()}


def feed(ents: dict[str, Entity], topic: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    for e in ents.values():
        e.receive(topic, text)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@pytest.fixture
def car() -> tuple[VehicleState, StateReporter, dict[str, Entity]]:
    _, configs = configs_of(ROOT / "config/vehicles/carfriend-ev.toml")
    state = VehicleState({p: 600.0 for p in (vss.SOC, vss.IS_CHARGING, vss.CABLE_CONNECTED, vss.TIME_TO_COMPLETE,
                                              vss.ODOMETER, vss.TIME_TO_SERVICE, vss.DTC_LIST, vss.AUX_VOLTAGE)})
    for path, value in ((vss.SOC, 50.0), (vss.IS_CHARGING, True), (vss.CABLE_CONNECTED, True),
                        (vss.TIME_TO_COMPLETE, 3600.0), (vss.ODOMETER, 23456.0), (vss.TIME_TO_SERVICE, 14 * 86400.0),
                        (vss.AUX_VOLTAGE, 12.6)):
        state.set(path, value, START)
    state.set_dtc("P0A80", True, START)
    reporter = StateReporter("carfriend-ev-0001", min_interval_s=5, full_interval_s=900)
    return state, reporter, entities(configs)


def test_a_full_snapshot_sets_every_entity(car: tuple[VehicleState, StateReporter, dict[str, Entity]]) -> None:
    state, reporter, ents = car
    doc, full = reporter.poll(state, START)  # type: ignore[misc]
    assert full
    feed(ents, STATE, doc)
    assert ents["soc"].state == "50.0"
    assert ents["charging"].state == "on" and ents["plugged_in"].state == "on"
    assert ents["charge_eta"].state == iso(START + 3600)
    assert ents["odometer"].state == "23456.0"
    assert ents["time_to_service"].state == "14.0"
    assert ents["dtcs"].state == "1" and ents["dtcs"].this.attributes == {"codes": ["P0A80"]}
    assert ents["aux_voltage"].state == "12.6"
    assert all(not e.warnings for e in ents.values()), {k: e.warnings for k, e in ents.items() if e.warnings}


def test_a_delta_without_a_signal_leaves_its_entity_as_it_was(
        car: tuple[VehicleState, StateReporter, dict[str, Entity]]) -> None:
    state, reporter, ents = car
    feed(ents, STATE, reporter.poll(state, START)[0])  # type: ignore[index]
    state.set(vss.SOC, 55.0, START + 10)
    doc, full = reporter.poll(state, START + 10)  # type: ignore[misc]
    assert not full and list(doc["signals"]) == [vss.SOC]  # a delta: only what moved
    feed(ents, STATE, doc)
    assert ents["soc"].state == "55.0"
    assert ents["charging"].state == "on" and ents["plugged_in"].state == "on"
    assert ents["charge_eta"].state == iso(START + 3600)  # the timestamp renders its own state back
    assert ents["dtcs"].state == "1" and ents["dtcs"].this.attributes == {"codes": ["P0A80"]}
    assert ents["odometer"].state == "23456.0" and ents["time_to_service"].state == "14.0"
    assert all(not e.warnings for e in ents.values()), {k: e.warnings for k, e in ents.items() if e.warnings}


def test_deltas_carry_charging_stopping_the_eta_going_away_and_a_fault_clearing(
        car: tuple[VehicleState, StateReporter, dict[str, Entity]]) -> None:
    state, reporter, ents = car
    feed(ents, STATE, reporter.poll(state, START)[0])  # type: ignore[index]
    state.set(vss.IS_CHARGING, False, START + 10)
    state.set(vss.TIME_TO_COMPLETE, 0.0, START + 10)
    state.set_dtc("P0A80", False, START + 10)
    doc, _ = reporter.poll(state, START + 10)  # type: ignore[misc]
    feed(ents, STATE, doc)
    assert ents["charging"].state == "off"
    assert ents["charge_eta"].state == "unknown"
    assert ents["dtcs"].state == "0" and ents["dtcs"].this.attributes == {"codes": []}
    state.set(vss.SOC, 56.0, START + 20)
    feed(ents, STATE, reporter.poll(state, START + 20)[0])  # type: ignore[index]
    assert ents["charge_eta"].state == "unknown"  # stays unknown through a delta without it, no warning
    assert all(not e.warnings for e in ents.values()), {k: e.warnings for k, e in ents.items() if e.warnings}


def test_a_stale_time_to_complete_gives_no_eta(car: tuple[VehicleState, StateReporter, dict[str, Entity]]) -> None:
    state, reporter, ents = car
    state.stale_after[vss.TIME_TO_COMPLETE] = 5.0
    state.set(vss.SOC, 51.0, START + 30)
    feed(ents, STATE, reporter.poll(state, START + 30)[0])  # type: ignore[index]
    assert ents["charge_eta"].state == "unknown"
    assert ents["soc"].state == "51.0"


def test_the_last_message_is_its_text_cut_to_what_home_assistant_stores_with_the_rest_in_attributes() -> None:
    _, configs = configs_of(ROOT / "config/vehicles/carfriend-ev.toml")
    ents = entities(configs)
    text = "I'm charging now. " * 20
    msg = {"id": "a", "vehicle_id": "carfriend-ev-0001", "ts": "2026-11-21T09:10:25.002Z", "kind": "charge.started",
           "severity": "info", "visibility": "private", "locale": "en", "persona": "Kit", "text": text,
           "question": ["ok", "later"], "data": {}}
    feed(ents, "carfriend/v1/carfriend-ev-0001/messages", msg)
    assert ents["last_message"].state == text[:255]
    assert ents["last_message"].this.attributes["text"] == text
    assert ents["last_message"].this.attributes["question"] == ["ok", "later"]
    assert ents["soc"].state == "unknown"  # the message topic is not the state topic


def test_a_mapped_range_in_metres_is_shown_in_km() -> None:
    config, _ = configs_of(ROOT / "config/vehicles/carfriend-ev.toml")
    (spec,) = [e for e in entities_for([vss.RANGE]) if e.key == "range"]
    configs = discovery_configs(config, [vss.RANGE], "1.2.3")
    (topic,) = [t for t in configs if "/range/" in t]
    assert problems(topic, configs[topic]) == []
    ent = Entity("sensor", configs[topic])
    ent.receive(STATE, json.dumps({"signals": {vss.RANGE: {"value": 312500, "ts": "x", "stale": False}}}))
    assert ent.state == "312.5" and spec.divisor == 1000
