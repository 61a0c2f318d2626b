"""COVESA VSS paths the agent knows: their unit, datatype and plausible range, in one table (no IO).

The state topic publishes every path of ``SPECS`` in its VSS unit and datatype (VSS 4.x, as
Eclipse Kuksa's DBC overlays use it). Where VSS has no node for something carfriend needs, the
path is a carfriend extension (``vss=False``) and docs/topics.md says so; docs/topics.md's
table is generated from ``units_markdown()`` (a test keeps them equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

TB: Final = "Vehicle.Powertrain.TractionBattery"
SOC: Final = f"{TB}.StateOfCharge.Displayed"
PACK_VOLTAGE: Final = f"{TB}.CurrentVoltage"
PACK_CURRENT: Final = f"{TB}.CurrentCurrent"
PACK_POWER: Final = f"{TB}.CurrentPower"  # W, positive into the battery
PACK_TEMP: Final = f"{TB}.Temperature.Average"
IS_CHARGING: Final = f"{TB}.Charging.IsCharging"
CABLE_CONNECTED: Final = f"{TB}.Charging.IsChargingCableConnected"
TIME_TO_COMPLETE: Final = f"{TB}.Charging.TimeToComplete"
CHARGE_LIMIT: Final = f"{TB}.Charging.ChargeLimit"
# Charging power in kW: a carfriend extension (VSS 4.x/5.x have none; Charging.ChargeRate is km/h
# of range added, Charging.AveragePower/MaxPower are per charging event).
CHARGE_POWER: Final = f"{TB}.Charging.ChargingPower"
CHARGE_RATE: Final = f"{TB}.Charging.ChargeRate"  # VSS: km of range added per hour
TIMER_MODE: Final = f"{TB}.Charging.Timer.Mode"  # a scheduled start is armed unless INACTIVE
TIMER_TIME: Final = f"{TB}.Charging.Timer.Time"  # VSS: an ISO 8601 UTC instant
# Minutes after local midnight of a scheduled start: a carfriend extension (the reference EV's
# DBC carries a time of day, which is not VSS's Timer.Time instant).
TIMER_START_MINUTE: Final = f"{TB}.Charging.Timer.StartMinuteOfDay"
AUX_VOLTAGE: Final = "Vehicle.LowVoltageBattery.CurrentVoltage"
ODOMETER: Final = "Vehicle.TraveledDistance"
SPEED: Final = "Vehicle.Speed"
RANGE: Final = "Vehicle.Powertrain.Range"  # VSS: metres
GEAR: Final = "Vehicle.Powertrain.Transmission.SelectedGear"  # VSS int8: 126 = P, 127 = D
TIME_TO_SERVICE: Final = "Vehicle.Service.TimeToService"
DISTANCE_TO_SERVICE: Final = "Vehicle.Service.DistanceToService"
DTC_LIST: Final = "Vehicle.Diagnostics.DTCList"
HVAC_ON: Final = "Vehicle.Cabin.HVAC.IsAirConditioningActive"
CABIN_TEMP: Final = "Vehicle.Cabin.HVAC.AmbientAirTemperature"

GEAR_PARK: Final = 126
GEAR_DRIVE: Final = 127

INTEGER_TYPES: Final = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


@dataclass(frozen=True, slots=True)
class Spec:
    """One VSS path as carfriend publishes it."""

    unit: str | None  # the VSS unit name (percent, V, A, W, kW, celsius, s, km, km/h, min), None: none
    datatype: str  # float, boolean, string, string[], int8, uint8, uint16, int32, uint32
    vss: bool = True  # False: a carfriend extension, not a VSS 4.x/5.x node
    allowed: tuple[str, ...] = ()  # a string's VSS allowed values
    note: str = ""

    @property
    def integer(self) -> bool:
        return self.datatype in INTEGER_TYPES


SPECS: Final[dict[str, Spec]] = {
    SOC: Spec("percent", "float"),
    f"{TB}.StateOfCharge.Current": Spec("percent", "float"),
    PACK_VOLTAGE: Spec("V", "float"),
    PACK_CURRENT: Spec("A", "float", note="positive into the battery (charging)"),
    PACK_POWER: Spec("W", "float", note="positive into the battery (charging)"),
    PACK_TEMP: Spec("celsius", "float"),
    f"{TB}.Temperature.Min": Spec("celsius", "float"),
    f"{TB}.Temperature.Max": Spec("celsius", "float"),
    f"{TB}.CellVoltage.Min": Spec("V", "float"),
    f"{TB}.CellVoltage.Max": Spec("V", "float"),
    IS_CHARGING: Spec(None, "boolean"),
    CABLE_CONNECTED: Spec(None, "boolean"),
    TIME_TO_COMPLETE: Spec("s", "uint32"),
    CHARGE_LIMIT: Spec("percent", "uint8"),
    CHARGE_RATE: Spec("km/h", "float", note="km of range added per hour, not power"),
    CHARGE_POWER: Spec("kW", "float", vss=False, note="charging power, positive into the car"),
    TIMER_MODE: Spec(None, "string", allowed=("INACTIVE", "START_TIME", "END_TIME")),
    TIMER_TIME: Spec("iso8601", "string", note="an ISO 8601 UTC time"),
    TIMER_START_MINUTE: Spec("min", "uint16", vss=False, note="minutes after local midnight"),
    AUX_VOLTAGE: Spec("V", "float"),
    "Vehicle.LowVoltageBattery.NominalVoltage": Spec("V", "uint16"),
    ODOMETER: Spec("km", "float"),
    SPEED: Spec("km/h", "float"),
    RANGE: Spec("m", "uint32"),
    GEAR: Spec(None, "int8", note="0 N, 1.. forward, -1.. reverse, 126 P, 127 D"),
    TIME_TO_SERVICE: Spec("s", "int32"),
    DISTANCE_TO_SERVICE: Spec("km", "float"),
    DTC_LIST: Spec(None, "string[]", note='SAE J2012 codes, e.g. "P0A80"'),
    HVAC_ON: Spec(None, "boolean"),
    CABIN_TEMP: Spec("celsius", "float"),
    "Vehicle.Cabin.HVAC.Station.Row1.Driver.Temperature": Spec("celsius", "int8"),
    "Vehicle.Exterior.AirTemperature": Spec("celsius", "float"),
}

# Physically plausible values in VSS units. A decoded value outside is dropped, whatever the DBC
# says: real DBCs declare loose ranges (Tesla's v12vBattVoltage261 allows 0-22.3 V and reads 0.049 V).
PLAUSIBLE: Final[dict[str, tuple[float, float]]] = {
    SOC: (0.0, 100.0),
    PACK_VOLTAGE: (0.0, 1000.0),  # 0 V is real: contactors open
    PACK_CURRENT: (-2000.0, 2000.0),
    PACK_POWER: (-1_000_000.0, 1_000_000.0),
    PACK_TEMP: (-40.0, 90.0),
    TIME_TO_COMPLETE: (0.0, 7 * 86400.0),
    CHARGE_LIMIT: (0.0, 100.0),
    CHARGE_POWER: (-500.0, 500.0),
    CHARGE_RATE: (-2000.0, 2000.0),
    TIMER_START_MINUTE: (0.0, 1439.0),
    AUX_VOLTAGE: (6.0, 18.0),
    ODOMETER: (0.0, 2_000_000.0),
    SPEED: (-60.0, 400.0),
    TIME_TO_SERVICE: (-3 * 365 * 86400.0, 5 * 365 * 86400.0),
    DISTANCE_TO_SERVICE: (-100_000.0, 200_000.0),
    CABIN_TEMP: (-50.0, 90.0),
}

BOOLEAN_PATHS: Final = frozenset(p for p, s in SPECS.items() if s.datatype == "boolean")

# DBC choice names (upper case, a prefix like "DI_GEAR_" stripped) -> VSS values.
_GEAR_NAMES: Final = {"P": GEAR_PARK, "PARK": GEAR_PARK, "PARKED": GEAR_PARK, "D": GEAR_DRIVE,
                      "DRIVE": GEAR_DRIVE, "B": GEAR_DRIVE, "N": 0, "NEUTRAL": 0, "R": -1, "REVERSE": -1}
_TIMER_MODES: Final = {"OFF": "INACTIVE", "NONE": "INACTIVE", "DISABLED": "INACTIVE", "INACTIVE": "INACTIVE",
                       "ONCE": "START_TIME", "DAILY": "START_TIME", "START": "START_TIME",
                       "START_TIME": "START_TIME", "END": "END_TIME", "END_TIME": "END_TIME",
                       "DEPARTURE": "END_TIME"}
_TRANSLATIONS: Final[dict[str, dict[str, Any]]] = {GEAR: _GEAR_NAMES, TIMER_MODE: _TIMER_MODES}


def translate_choice(path: str, name: str) -> Any:
    """The VSS value a DBC choice name stands for at path, or None when it has none.

    Only paths whose VSS values are not the DBC's own names are translated (SelectedGear's
    int8, Timer.Mode's allowed strings); for any other path the name itself is returned.
    """
    table = _TRANSLATIONS.get(path)
    if table is None:
        return name
    key = name.strip().upper().replace(" ", "_").replace("/", "_")
    for candidate in (key, key.rsplit("_", 1)[-1], key.split("_", 1)[0]):
        if candidate in table:
            return table[candidate]
    return None


# DBC unit spellings -> (quantity, factor to the quantity's base unit). Unknown spellings are
# not checked: DBC files write units freely ("%+1", "status", "-").
_UNITS: Final[dict[str, tuple[str, float]]] = {
    "%": ("ratio", 1.0), "percent": ("ratio", 1.0), "pct": ("ratio", 1.0),
    "v": ("V", 1.0), "volt": ("V", 1.0), "volts": ("V", 1.0), "mv": ("V", 0.001),
    "a": ("A", 1.0), "amp": ("A", 1.0), "amps": ("A", 1.0), "ampere": ("A", 1.0), "ma": ("A", 0.001),
    "w": ("W", 1.0), "watt": ("W", 1.0), "watts": ("W", 1.0), "kw": ("W", 1000.0), "kilowatt": ("W", 1000.0),
    "wh": ("Wh", 1.0), "kwh": ("Wh", 1000.0),
    "degc": ("degC", 1.0), "°c": ("degC", 1.0), "c": ("degC", 1.0), "celsius": ("degC", 1.0),
    "deg_c": ("degC", 1.0), "degreec": ("degC", 1.0),
    "s": ("s", 1.0), "sec": ("s", 1.0), "secs": ("s", 1.0), "second": ("s", 1.0), "seconds": ("s", 1.0), "ms": ("s", 0.001),
    "min": ("s", 60.0), "mins": ("s", 60.0), "minute": ("s", 60.0), "minutes": ("s", 60.0),
    "h": ("s", 3600.0), "hr": ("s", 3600.0), "hour": ("s", 3600.0), "hours": ("s", 3600.0),
    "d": ("s", 86400.0), "day": ("s", 86400.0), "days": ("s", 86400.0),
    "km": ("m", 1000.0), "m": ("m", 1.0), "mi": ("m", 1609.344), "mile": ("m", 1609.344),
    "miles": ("m", 1609.344),
    "km/h": ("m/s", 1 / 3.6), "kph": ("m/s", 1 / 3.6), "kmh": ("m/s", 1 / 3.6), "mph": ("m/s", 0.44704),
    "m/s": ("m/s", 1.0),
}
_VSS_UNITS: Final[dict[str, tuple[str, float]]] = {**_UNITS, "celsius": ("degC", 1.0)}


def unit_factor(dbc_unit: str | None, path: str) -> tuple[float | None, str | None]:
    """The factor from a DBC signal's unit to path's VSS unit, or (None, why not) when known
    to be incompatible; (None, None) when either unit is unknown (nothing to check)."""
    spec = SPECS.get(path)
    if spec is None or spec.unit is None or not dbc_unit:
        return None, None
    have = _UNITS.get(re.sub(r"\s+", "", dbc_unit.strip().lower()))
    want = _VSS_UNITS.get(spec.unit.lower())
    if have is None or want is None:
        return None, None
    if have[0] != want[0]:
        return None, f'the DBC unit "{dbc_unit}" cannot become the VSS unit "{spec.unit}"'
    return have[1] / want[1], None


def publish_value(spec: Spec, value: Any) -> Any:
    """A checked numeric value in the spec's datatype (ints for integer types)."""
    if spec.integer and isinstance(value, float):
        return int(round(value))
    return value


def units_markdown() -> str:
    """docs/topics.md's table of every path carfriend knows, with its unit and datatype."""
    rows = ["| VSS path | unit | datatype | |", "|---|---|---|---|"]
    for path, spec in sorted(SPECS.items()):
        notes = ([] if spec.vss else ["**carfriend extension** (no VSS node)"]) + (
            [" / ".join(spec.allowed)] if spec.allowed else []) + ([spec.note] if spec.note else [])
        rows.append(f"| `{path}` | {spec.unit or ''} | {spec.datatype} | {'; '.join(notes)} |")
    return "\n".join(rows) + "\n"
