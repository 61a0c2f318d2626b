"""Home Assistant MQTT discovery: which entities a vehicle announces, and their config payloads (no IO).

Every entity reads the topics the car already publishes (`state`, `messages`, `status`): there is
no second copy of the data. The `state` topic carries full retained snapshots and deltas that
hold only the signals that moved (docs/topics.md), so each template renders nothing (numeric
sensors, binary sensors: Home Assistant then keeps the entity's state) or, for the timestamp,
the entity's own current state (`this.state`) when a document lacks its signal. Why, with the
Home Assistant documentation quoted: docs/homeassistant.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.core import vss
from agent.core.settings import AgentConfig

Component = Literal["sensor", "binary_sensor"]
Render = Literal["number", "bool", "eta", "dtc", "message"]

# Home Assistant's MQTT text sensors refuse a state longer than this (the text is in an attribute too).
HA_STATE_MAX_CHARS = 255


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One Home Assistant entity of a vehicle: where its value comes from and how HA should show it."""

    key: str                   # object id: the discovery topic's last level and the unique_id's suffix
    component: Component
    name: str
    path: str | None           # the VSS path it reads from the state topic; None: always there
    render: Render
    options: dict[str, Any] = field(default_factory=dict)  # device_class, state_class, unit, icon, ...
    divisor: int | None = None   # VSS unit -> the unit shown (m -> km: 1000, s -> d: 86400)
    digits: int = 1              # rounding after the division


def _sensor(key: str, name: str, path: str, device_class: str | None, unit: str | None, *,
            state_class: str | None = "measurement", precision: int | None = None, icon: str | None = None,
            divisor: int | None = None) -> EntitySpec:
    options = {"device_class": device_class, "state_class": state_class, "unit_of_measurement": unit,
               "suggested_display_precision": precision, "icon": icon}
    return EntitySpec(key, "sensor", name, path, "number", {k: v for k, v in options.items() if v is not None},
                      divisor)


ENTITIES: tuple[EntitySpec, ...] = (
    _sensor("soc", "State of charge", vss.SOC, "battery", "%", precision=0),
    _sensor("range", "Range", vss.RANGE, "distance", "km", precision=0, icon="mdi:map-marker-distance",
            divisor=1000),
    _sensor("pack_voltage", "Battery voltage", vss.PACK_VOLTAGE, "voltage", "V", precision=0),
    _sensor("pack_current", "Battery current", vss.PACK_CURRENT, "current", "A", precision=1),
    _sensor("pack_power", "Battery power", vss.PACK_POWER, "power", "kW", precision=1, divisor=1000),
    _sensor("aux_voltage", "12 V battery", vss.AUX_VOLTAGE, "voltage", "V", precision=2, icon="mdi:car-battery"),
    EntitySpec("charging", "binary_sensor", "Charging", vss.IS_CHARGING, "bool", {"device_class": "battery_charging"}),
    EntitySpec("plugged_in", "binary_sensor", "Plugged in", vss.CABLE_CONNECTED, "bool", {"device_class": "plug"}),
    EntitySpec("charge_eta", "sensor", "Charge complete at", vss.TIME_TO_COMPLETE, "eta",
               {"device_class": "timestamp", "icon": "mdi:battery-clock"}),
    # A lifetime total that never resets: "total" (Home Assistant's advice), not total_increasing.
    _sensor("odometer", "Odometer", vss.ODOMETER, "distance", "km", state_class="total", precision=0,
            icon="mdi:counter"),
    _sensor("time_to_service", "Time to service", vss.TIME_TO_SERVICE, "duration", "d", precision=0,
            icon="mdi:wrench-clock", divisor=86400),
    _sensor("distance_to_service", "Distance to service", vss.DISTANCE_TO_SERVICE, "distance", "km", precision=0,
            icon="mdi:wrench-clock"),
    EntitySpec("dtcs", "sensor", "Active fault codes", vss.DTC_LIST, "dtc",
               {"state_class": "measurement", "icon": "mdi:car-wrench"}),
    EntitySpec("last_message", "sensor", "Last message", None, "message", {"icon": "mdi:message-text"}),
)


def node_id(vehicle_id: str) -> str:
    """The vehicle id as one discovery topic level (Home Assistant allows [a-zA-Z0-9_-] there)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", vehicle_id)


def entities_for(mapped: Collection[str]) -> list[EntitySpec]:
    """The entities whose VSS path is mapped, and those that are always there."""
    return [e for e in ENTITIES if e.path is None or e.path in mapped]


def discovery_configs(config: AgentConfig, mapped: Collection[str], version: str) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload (published retained) for every entity of this vehicle."""
    node = node_id(config.vehicle.id)
    prefix = config.homeassistant.discovery_prefix
    device = {"identifiers": [f"carfriend_{node}"], "name": config.vehicle.persona, "manufacturer": "carfriend",
              "model": "carfriend agent", "serial_number": config.vehicle.id, "sw_version": version}
    origin = {"name": "carfriend", "sw_version": version}
    out: dict[str, dict[str, Any]] = {}
    for spec in entities_for(mapped):
        payload: dict[str, Any] = {
            "name": spec.name, "unique_id": f"carfriend_{node}_{spec.key}", "device": device, "origin": origin,
            "availability_topic": config.topic("status"), "payload_available": "online",
            "payload_not_available": "offline", "qos": 1, **spec.options, **_topics(config, spec)}
        out[f"{prefix}/{spec.component}/{node}/{spec.key}/config"] = payload
    return out


def _topics(config: AgentConfig, spec: EntitySpec) -> dict[str, Any]:
    if spec.render == "message":
        topic = config.topic("messages")
        return {"state_topic": topic, "value_template": f"{{{{ value_json.text[:{HA_STATE_MAX_CHARS}] }}}}",
                "json_attributes_topic": topic, "json_attributes_template": MESSAGE_ATTRIBUTES}
    assert spec.path is not None
    topic = config.topic("state")
    out = {"state_topic": topic, "value_template": value_template(spec)}
    if spec.render == "dtc":
        p = json.dumps(spec.path)
        out |= {"json_attributes_topic": topic, "json_attributes_template":
                "{% set s = value_json.signals %}"
                f"{{{{ {{'codes': s[{p}].value if {p} in s else this.attributes.get('codes', [])}} | tojson }}}}"}
    return out


MESSAGE_ATTRIBUTES = ("{{ {'kind': value_json.kind, 'severity': value_json.severity, 'ts': value_json.ts, "
                      "'id': value_json.id, 'question': value_json.question, 'text': value_json.text} | tojson }}")


def value_template(spec: EntitySpec) -> str:
    """The Jinja template reading the entity's VSS path from a state document, full or delta.

    A document without the path renders "" (numeric and binary sensors then keep their state),
    except for the timestamp, which renders its own state back (HA would take "" as invalid).
    """
    head = f"{{% set s = value_json.signals %}}{{% if {json.dumps(spec.path)} in s %}}{{% set v = s[{json.dumps(spec.path)}] %}}"
    if spec.render == "number":
        value = "v.value" if spec.divisor is None else f"(v.value / {spec.divisor}) | round({spec.digits})"
        return f"{head}{{% if v.value is number %}}{{{{ {value} }}}}{{% endif %}}{{% endif %}}"
    if spec.render == "bool":
        return f"{head}{{{{ 'ON' if v.value else 'OFF' }}}}{{% endif %}}"
    if spec.render == "dtc":
        return f"{head}{{{{ v.value | count }}}}{{% endif %}}"
    if spec.render == "eta":
        return (f"{head}{{% if v.value is number and v.value > 0 and not v.stale %}}"
                "{{ (as_datetime(v.ts) + timedelta(seconds=v.value)).isoformat() }}{% else %}None{% endif %}"
                "{% elif this.state not in ('unknown', 'unavailable') %}{{ this.state }}{% else %}None{% endif %}")
    raise ValueError(f"no state template for {spec.render!r}")
