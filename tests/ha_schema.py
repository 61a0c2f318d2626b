"""Test helpers: Home Assistant's MQTT discovery schema and its template semantics, from HA's documentation.

Written from (home-assistant.io and developers.home-assistant.io, 2025):
- source/_integrations/sensor.mqtt.markdown and binary_sensor.mqtt.markdown: the configuration
  keys of each platform, which are required, `platform` "only allowed and required in device
  discovery messages", "the entity category must be `diagnostic` for sensors", `options` only
  with device class `enum` and never with `state_class` or `unit_of_measurement`;
- sensor.mqtt state_topic: "If device_class, state_class, unit_of_measurement or
  suggested_display_precision is set, and a numeric value is expected, an empty value '' will be
  ignored and will not update the state, a 'null' value will set the sensor to an unknown state";
  value_template: "If the template throws an error, the current state will be used instead";
- docs/configuration/templating.markdown: "the template variables `entity_id`, `name` and `this`
  are available for MQTT entity value templates. The `this` attribute refers to the entity state";
- binary_sensor.mqtt value_template: "returns a string to be compared to payload_on/payload_off
  or an empty string, in which case the MQTT message will be removed";
- docs/core/entity/sensor.md: the units each sensor device class supports, and the state
  classes (HA core's DEVICE_CLASS_STATE_CLASSES for which class allows which);
- source/_integrations/binary_sensor.markdown: the binary sensor device classes;
- the discovery topic `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`, node and
  object ids of [a-zA-Z0-9_-]; `origin` with a required `name`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

DISCOVERY_TOPIC = re.compile(
    r"^(?P<prefix>.+)/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config$")

COMMON_KEYS = frozenset({
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "default_entity_id", "enabled_by_default", "encoding", "entity_category", "entity_picture", "expire_after",
    "force_update", "icon", "json_attributes_template", "json_attributes_topic", "name", "object_id",
    "payload_available", "payload_not_available", "qos", "state_topic", "unique_id", "value_template",
    "origin",  # discovery payloads only
})
PLATFORM_KEYS = {
    "sensor": COMMON_KEYS | {"device_class", "last_reset_value_template", "options", "suggested_display_precision",
                             "state_class", "unit_of_measurement"},
    "binary_sensor": COMMON_KEYS | {"device_class", "off_delay", "payload_off", "payload_on"},
}
REQUIRED_KEYS = frozenset({"state_topic"})
DEVICE_KEYS = frozenset({"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
                         "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"})
ORIGIN_KEYS = frozenset({"name", "sw_version", "support_url"})
STRING_KEYS = frozenset({"availability_topic", "state_topic", "json_attributes_topic", "name", "unique_id",
                         "payload_available", "payload_not_available", "payload_on", "payload_off", "value_template",
                         "json_attributes_template", "unit_of_measurement", "icon", "device_class", "state_class"})

STATE_CLASSES = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})
ANY_STATE_CLASS = frozenset({"measurement", "total", "total_increasing"})
MEASUREMENT = frozenset({"measurement"})
TOTALS = frozenset({"total", "total_increasing"})
NON_NUMERIC = frozenset({"date", "enum", "timestamp"})

# device class -> (units, state classes); None in units: no unit.
SENSOR_DEVICE_CLASSES: dict[str, tuple[frozenset[str | None], frozenset[str]]] = {
    "absolute_humidity": (frozenset({"g/m³", "mg/m³"}), MEASUREMENT),
    "apparent_power": (frozenset({"mVA", "VA", "kVA"}), MEASUREMENT),
    "aqi": (frozenset({None}), MEASUREMENT),
    "area": (frozenset({"m²", "cm²", "km²", "mm²", "in²", "ft²", "yd²", "mi²", "ac", "ha"}), ANY_STATE_CLASS),
    "atmospheric_pressure": (frozenset({"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"}),
                             MEASUREMENT),
    "battery": (frozenset({"%"}), MEASUREMENT),
    "carbon_dioxide": (frozenset({"ppm"}), MEASUREMENT),
    "carbon_monoxide": (frozenset({"ppb", "ppm", "µg/m³", "mg/m³"}), MEASUREMENT),
    "current": (frozenset({"A", "mA"}), MEASUREMENT),
    "data_rate": (frozenset({"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "B/s", "kB/s", "MB/s", "GB/s", "KiB/s", "MiB/s",
                             "GiB/s"}), MEASUREMENT),
    "data_size": (frozenset({"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"}),
                  ANY_STATE_CLASS),
    "date": (frozenset({None}), frozenset()),
    "distance": (frozenset({"km", "m", "cm", "mm", "mi", "nmi", "yd", "in"}), ANY_STATE_CLASS),
    "duration": (frozenset({"d", "h", "min", "s", "ms", "µs"}), ANY_STATE_CLASS),
    "energy": (frozenset({"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal",
                          "Gcal"}), TOTALS),
    "energy_distance": (frozenset({"kWh/100km", "Wh/km", "mi/kWh", "km/kWh"}), MEASUREMENT),
    "energy_storage": (frozenset({"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal",
                                  "Mcal", "Gcal"}), MEASUREMENT),
    "enum": (frozenset({None}), frozenset()),
    "frequency": (frozenset({"mHz", "Hz", "kHz", "MHz", "GHz"}), MEASUREMENT),
    "humidity": (frozenset({"%"}), MEASUREMENT),
    "illuminance": (frozenset({"lx"}), MEASUREMENT),
    "power": (frozenset({"mW", "W", "kW", "MW", "GW", "TW"}), MEASUREMENT),
    "power_factor": (frozenset({"%", None}), MEASUREMENT),
    "pressure": (frozenset({"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi", "mPa"}), MEASUREMENT),
    "signal_strength": (frozenset({"dB", "dBm"}), MEASUREMENT),
    "speed": (frozenset({"ft/s", "in/d", "in/h", "in/s", "km/h", "kn", "m/s", "mph", "mm/d", "mm/s"}), MEASUREMENT),
    "temperature": (frozenset({"°C", "°F", "K"}), MEASUREMENT),
    "timestamp": (frozenset({None}), frozenset()),
    "voltage": (frozenset({"V", "mV", "µV", "kV", "MV"}), MEASUREMENT),
    "volume": (frozenset({"L", "mL", "gal", "fl. oz.", "m³", "ft³", "CCF", "MCF"}), TOTALS),
    "weight": (frozenset({"kg", "g", "mg", "µg", "oz", "lb", "st"}), ANY_STATE_CLASS),
}
BINARY_SENSOR_DEVICE_CLASSES = frozenset({
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window"})


def problems(topic: str, payload: dict[str, Any]) -> list[str]:
    """Everything in one discovery message that Home Assistant's documented schema does not allow."""
    m = DISCOVERY_TOPIC.match(topic)
    if not m:
        return [f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config"]
    component = m["component"]
    if component not in PLATFORM_KEYS:
        return [f"{topic}: platform {component!r} not checked here"]
    out = [f"unknown key {k!r}" for k in sorted(payload.keys() - PLATFORM_KEYS[component])]
    out += [f"missing required {k!r}" for k in sorted(REQUIRED_KEYS - payload.keys())]
    out += [f"{k} must be a non-empty string" for k in STRING_KEYS & payload.keys()
            if not isinstance(payload[k], str) or not payload[k]]
    out += _topics(payload) + _device(payload) + _templates(payload)
    if payload.get("qos", 0) not in (0, 1, 2):
        out.append(f"qos {payload['qos']!r}")
    if "icon" in payload and not re.fullmatch(r"mdi:[a-z0-9-]+", str(payload["icon"])):
        out.append(f"icon {payload['icon']!r}")
    out += _sensor(payload) if component == "sensor" else _binary_sensor(payload)
    return [f"{topic}: {p}" for p in out]


def _topics(payload: dict[str, Any]) -> list[str]:
    return [f"{k} {payload[k]!r} is not a plain topic" for k in ("state_topic", "availability_topic",
                                                                  "json_attributes_topic")
            if isinstance(payload.get(k), str) and (set(payload[k]) & {"#", "+"} or payload[k].startswith("/"))]


def _device(payload: dict[str, Any]) -> list[str]:
    out: list[str] = []
    device, origin = payload.get("device"), payload.get("origin")
    if device is not None:
        if "unique_id" not in payload:
            out.append("device without unique_id (HA ignores the device then)")
        out += [f"unknown device key {k!r}" for k in sorted(set(device) - DEVICE_KEYS)]
        if not device.get("identifiers") and not device.get("connections"):
            out.append("device needs identifiers or connections")
    if origin is not None:
        out += [f"unknown origin key {k!r}" for k in sorted(set(origin) - ORIGIN_KEYS)]
        if not origin.get("name"):
            out.append("origin needs a name")
    if "json_attributes_template" in payload and "json_attributes_topic" not in payload:
        out.append("json_attributes_template without json_attributes_topic")
    return out


def _templates(payload: dict[str, Any]) -> list[str]:
    out = []
    for key in ("value_template", "json_attributes_template"):
        if key in payload:
            try:
                ENV.parse(payload[key])
            except jinja2.TemplateSyntaxError as exc:
                out.append(f"{key}: {exc}")
    return out


def _sensor(payload: dict[str, Any]) -> list[str]:
    out = []
    dc, sc, unit = payload.get("device_class"), payload.get("state_class"), payload.get("unit_of_measurement")
    if sc is not None and sc not in STATE_CLASSES:
        out.append(f"state_class {sc!r}")
    if payload.get("entity_category") not in (None, "diagnostic"):
        out.append("a sensor's entity_category must be diagnostic")
    if "options" in payload and (dc != "enum" or sc or unit):
        out.append("options only with device_class enum, without state_class and unit")
    if "last_reset_value_template" in payload and sc != "total":
        out.append("last_reset_value_template needs state_class total")
    if dc is None:
        return out
    if dc not in SENSOR_DEVICE_CLASSES:
        return [*out, f"sensor device_class {dc!r}"]
    units, state_classes = SENSOR_DEVICE_CLASSES[dc]
    if unit not in units:
        out.append(f"unit {unit!r} not allowed for device_class {dc} ({sorted(map(str, units))})")
    if sc is not None and sc not in state_classes:
        out.append(f"state_class {sc!r} not allowed for device_class {dc}")
    if dc in NON_NUMERIC and "suggested_display_precision" in payload:
        out.append(f"suggested_display_precision on non-numeric device_class {dc}")
    return out


def _binary_sensor(payload: dict[str, Any]) -> list[str]:
    dc = payload.get("device_class")
    return [f"binary_sensor device_class {dc!r}"] if dc is not None and dc not in BINARY_SENSOR_DEVICE_CLASSES else []


# -- template semantics ------------------------------------------------------------------------


def _as_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value)


ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)  # stricter than HA: a miss is an error
ENV.globals.update(as_datetime=_as_datetime, timedelta=timedelta)
ENV.filters["tojson"] = lambda v: json.dumps(v)  # HA's own tojson: plain JSON, no HTML escaping


@dataclass
class This:
    state: str = "unknown"
    attributes: dict[str, Any] = field(default_factory=dict)


class Entity:
    """One MQTT entity as Home Assistant documents it updates its state from its topics."""

    def __init__(self, component: str, payload: dict[str, Any]) -> None:
        self.component = component
        self.config = payload
        self.this = This()
        self.warnings: list[str] = []
        dc = payload.get("device_class")
        self.numeric = component == "sensor" and dc not in NON_NUMERIC and any(
            k in payload for k in ("device_class", "state_class", "unit_of_measurement",
                                   "suggested_display_precision"))

    @property
    def state(self) -> str:
        return self.this.state

    def receive(self, topic: str, payload: str) -> None:
        if topic == self.config["state_topic"]:
            self._state(payload)
        if topic == self.config.get("json_attributes_topic"):
            self._attributes(payload)

    def _render(self, template: str, payload: str) -> str:
        try:
            value_json = json.loads(payload)
        except ValueError:
            value_json = None
        return ENV.from_string(template).render(value=payload, value_json=value_json, this=self.this).strip()

    def _state(self, payload: str) -> None:
        try:
            value = self._render(self.config["value_template"], payload) if "value_template" in self.config \
                else payload
        except Exception as exc:  # noqa: BLE001 - HA: "the current state will be used instead"
            self.warnings.append(f"template error: {exc}")
            return
        if self.component == "binary_sensor":
            self._binary(value)
        else:
            self._sensor(value)

    def _binary(self, value: str) -> None:
        if not value:
            return
        states = {self.config.get("payload_on", "ON"): "on", self.config.get("payload_off", "OFF"): "off",
                  "None": "unknown"}
        if value not in states:
            self.warnings.append(f"no matching payload: {value!r}")
            return
        self.this.state = states[value]

    def _sensor(self, value: str) -> None:
        if value == "None":
            self.this.state = "unknown"
        elif self.numeric:
            if value != "":
                float(value)  # HA raises on a non-numeric state of a numeric sensor: so do we
                self.this.state = value
        elif self.config.get("device_class") == "timestamp":
            try:
                at = datetime.fromisoformat(value)
                if at.tzinfo is None:
                    raise ValueError("no time zone")
                self.this.state = at.astimezone(UTC).isoformat(timespec="seconds")
            except ValueError:
                self.warnings.append(f"invalid state {value!r}")
                self.this.state = "unknown"
        elif len(value) > 255:
            self.warnings.append("state longer than 255 characters")
            self.this.state = "unknown"
        else:
            self.this.state = value

    def _attributes(self, payload: str) -> None:
        try:
            attrs = json.loads(self._render(self.config["json_attributes_template"], payload))
        except Exception as exc:  # noqa: BLE001
            self.warnings.append(f"attributes: {exc}")
            return
        if isinstance(attrs, dict):
            self.this.attributes = attrs
        else:
            self.warnings.append("JSON result was not a dictionary")
