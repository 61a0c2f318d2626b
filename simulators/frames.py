"""The simulated car's CAN frames: model state -> payloads with cantools, commands -> actions (no IO).

Counters and checksums follow the DBC's comments: a 4-bit rolling counter, +1 per frame, and
CRC-8/SAE-J1850 (poly 0x1D, init 0xFF, final xor 0xFF) over payload bytes 0..6 in byte 7.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cantools
from cantools.database.can import Database, Message

from agent.core.errors import ConfigError
from simulators.model import NOT_AVAILABLE_MIN, EVModel
from simulators.scenario import dtc_number

DEFAULT_DBC = Path(__file__).resolve().parents[1] / "dbc" / "carfriend_ev.dbc"

# Every status frame the car sends, with the signals the simulator fills in.
STATUS_SIGNALS: dict[str, tuple[str, ...]] = {
    "Drive_State": ("VehicleSpeed", "Gear", "Ignition", "ReadyState", "AccelPedal",
                    "Drive_Counter", "Drive_Checksum"),
    "BMS_Status": ("SOC", "PackVoltage", "PackCurrent", "BMS_Counter", "BMS_Checksum"),
    "BMS_Temperatures": ("Temp_Min", "Temp_Max", "Temp_Avg", "Coolant_Inlet"),
    "BMS_Power": ("PackPower", "MaxChargePower", "MaxDischargePower"),
    "Charger_Status": ("ChargerState", "PlugState", "ChargeType", "ACPower", "DCPower",
                       "TimeToComplete", "ChargeLimit"),
    "Charger_Schedule": ("ScheduleMode", "ScheduledStart"),
    "LV_System": ("LV_Voltage", "LV_Current", "DCDC_State", "LV_SOC"),
    "Climate_Status": ("ClimateActive", "CabinTemp", "TargetTemp", "OutsideTemp", "HVAC_Power"),
    "Odometer_Service": ("ODO_Mux", "Odometer", "DaysToService", "KmToService"),
    "DTC_Broadcast": ("DTC_Code", "DTC_Status", "DTC_Index", "DTC_Count"),
}
COMMAND_SIGNALS: dict[str, tuple[str, ...]] = {
    "TCU_ClimateCmd": ("ClimateRequest", "TargetTempRequest"),
    "TCU_ChargeCmd": ("ChargeRequest",),
    "TCU_ChargeLimitCmd": ("ChargeLimitRequest",),
    "TCU_ChargeScheduleCmd": ("ScheduleRequest", "StartMinutesRequest"),
}
_PROTECTED = {"Drive_State": "Drive", "BMS_Status": "BMS"}


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_J1850 = _crc8_table(0x1D)


def crc8_j1850(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc = _J1850[crc ^ byte]
    return crc ^ 0xFF


def load_car_dbc(path: Path | None = None) -> Database:
    """The DBC the simulator encodes with; every message and signal it needs must be there."""
    path = path or DEFAULT_DBC
    try:
        db = cantools.database.load_file(str(path), strict=False)
    except (OSError, cantools.database.UnsupportedDatabaseFormatError) as exc:
        raise ConfigError(f"{path}: cannot load DBC: {' '.join(str(exc).split())}") from None
    if not isinstance(db, Database):
        raise ConfigError(f"{path}: not a CAN database")
    problems = []
    for name, signals in {**STATUS_SIGNALS, **COMMAND_SIGNALS}.items():
        try:
            message = db.get_message_by_name(name)
        except KeyError:
            problems.append(f"{path}: no message {name!r} (the simulator sends or reads it)")
            continue
        have = {s.name for s in message.signals}
        problems += [f"{path}: message {name!r} has no signal {s!r} (the simulator needs it)"
                     for s in signals if s not in have]
    if problems:
        raise ConfigError(problems)
    return db


class FrameEncoder:
    """Encodes the car's status frames; keeps the rolling counters and the mux/DTC rotation."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.messages: dict[str, Message] = {n: db.get_message_by_name(n) for n in STATUS_SIGNALS}
        self._counters: dict[str, int] = dict.fromkeys(STATUS_SIGNALS, 0)
        # Most frames repeat the previous values: the last payload per message is reused.
        self._last: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        self._values: dict[str, Callable[[EVModel], dict[str, Any]]] = {
            "Drive_State": _drive, "BMS_Status": _bms, "BMS_Temperatures": _temps,
            "BMS_Power": _power, "Charger_Status": _charger, "Charger_Schedule": _schedule,
            "LV_System": _lv, "Climate_Status": _climate,
            "Odometer_Service": self._odometer, "DTC_Broadcast": self._dtc,
        }

    def cycle_s(self, name: str) -> float:
        cycle_ms = self.messages[name].cycle_time
        return (cycle_ms or 1000) / 1000.0

    def encode(self, name: str, model: EVModel) -> tuple[int, bool, bytes]:
        """(frame id, extended, payload) of one frame of message `name` now."""
        message = self.messages[name]
        values = self._values[name](model)
        prefix = _PROTECTED.get(name)
        if prefix:
            values[f"{prefix}_Counter"] = self._counters[name] & 0x0F
            values[f"{prefix}_Checksum"] = 0
        self._counters[name] += 1
        key = tuple(values.values())
        last = self._last.get(name)
        if last is not None and last[0] == key:
            return message.frame_id, message.is_extended_frame, last[1]
        data = bytearray(message.encode(_clamped(message, values), strict=False))
        if prefix:
            data[7] = crc8_j1850(bytes(data[:7]))
        self._last[name] = (key, bytes(data))
        return message.frame_id, message.is_extended_frame, bytes(data)

    def _odometer(self, model: EVModel) -> dict[str, Any]:
        page = self._counters["Odometer_Service"] % 2
        if page == 0:
            return {"ODO_Mux": 0, "Odometer": model.odometer_km}
        return {"ODO_Mux": 1, "DaysToService": int(model.days_to_service // 1),
                "KmToService": round(model.km_to_service)}

    def _dtc(self, model: EVModel) -> dict[str, Any]:
        codes = list(model.dtcs.items())
        if not codes:
            return {"DTC_Code": 0, "DTC_Status": "NONE", "DTC_Index": 0, "DTC_Count": 0}
        index = self._counters["DTC_Broadcast"] % len(codes)
        code, status = codes[index]
        return {"DTC_Code": dtc_number(code), "DTC_Status": status, "DTC_Index": index,
                "DTC_Count": min(15, len(codes))}


def _clamped(message: Message, values: dict[str, Any]) -> dict[str, Any]:
    """Physical values held inside each signal's DBC range; sentinels (raw all-ones) pass."""
    for signal in message.signals:
        value = values.get(signal.name)
        if isinstance(value, str) or value is None:
            continue
        if signal.name == "TimeToComplete" and value == NOT_AVAILABLE_MIN:
            continue
        if signal.minimum is not None and value < signal.minimum:
            values[signal.name] = signal.minimum
        elif signal.maximum is not None and value > signal.maximum:
            values[signal.name] = signal.maximum
    return values


def _drive(m: EVModel) -> dict[str, Any]:
    pedal = min(100.0, 15.0 + m.speed_kmh * 0.3) if m.speed_kmh > 0.5 else 0.0
    return {"VehicleSpeed": m.speed_kmh, "Gear": m.gear, "Ignition": m.ignition,
            "ReadyState": "READY" if m.ready else "NOT_READY", "AccelPedal": pedal}


def _bms(m: EVModel) -> dict[str, Any]:
    return {"SOC": round(m.displayed_soc_pct, 2), "PackVoltage": m.pack_voltage_v,
            "PackCurrent": m.pack_current_a}


def _temps(m: EVModel) -> dict[str, Any]:
    t = m.pack_temp_c
    return {"Temp_Min": round(t - 1.5), "Temp_Max": round(t + 2.0), "Temp_Avg": round(t, 1),
            "Coolant_Inlet": round(t - 2.5)}


def _power(m: EVModel) -> dict[str, Any]:
    # The BMS lets less charging power in when the pack is cold.
    cold = max(0.3, min(1.0, (m.pack_temp_c + 5.0) / 25.0))
    return {"PackPower": m.pack_power_kw, "MaxChargePower": 150.0 * cold,
            "MaxDischargePower": 200.0 * cold}


def _charger(m: EVModel) -> dict[str, Any]:
    c = m.charger
    return {"ChargerState": c.state, "PlugState": "CONNECTED" if c.plugged else "DISCONNECTED",
            "ChargeType": c.kind, "ACPower": c.power_kw if c.kind == "AC" else 0.0,
            "DCPower": c.power_kw if c.kind == "DC" else 0.0,
            "TimeToComplete": m.time_to_complete_min(), "ChargeLimit": m.charge_limit_pct}


def _schedule(m: EVModel) -> dict[str, Any]:
    return {"ScheduleMode": m.charger.schedule, "ScheduledStart": m.charger.schedule_min}


def _lv(m: EVModel) -> dict[str, Any]:
    return {"LV_Voltage": round(m.aux_voltage_v, 2), "LV_Current": m.aux_current_a,
            "DCDC_State": m.dcdc_state, "LV_SOC": round(m.aux_soc * 100.0)}


def _climate(m: EVModel) -> dict[str, Any]:
    return {"ClimateActive": "ON" if m.climate_on else "OFF", "CabinTemp": m.cabin_c,
            "TargetTemp": m.climate_target_c, "OutsideTemp": m.ambient_c, "HVAC_Power": m.hvac_kw}


class CommandDecoder:
    """Turns the TCU's command frames into model actions; other frames are ignored."""

    def __init__(self, db: Database) -> None:
        self._by_id = {db.get_message_by_name(n).frame_id: db.get_message_by_name(n)
                       for n in COMMAND_SIGNALS}

    def apply(self, model: EVModel, frame_id: int, data: bytes) -> str | None:
        """Apply one frame; the command's name when it was one, else None."""
        message = self._by_id.get(frame_id)
        if message is None:
            return None
        try:
            v: dict[str, Any] = dict(message.decode(data, decode_choices=True))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a malformed command is ignored, as an ECU would
            return None
        name = message.name
        if name == "TCU_ClimateCmd":
            target = float(v["TargetTempRequest"]) or None
            request = str(v["ClimateRequest"])
            on = model.climate_on if request == "NO_REQUEST" else request == "ON"
            model.set_climate(on, target)
        elif name == "TCU_ChargeCmd":
            if str(v["ChargeRequest"]) == "START":
                model.start_charging()
            elif str(v["ChargeRequest"]) == "STOP":
                model.stop_charging()
        elif name == "TCU_ChargeLimitCmd":
            model.set_charge_limit(int(v["ChargeLimitRequest"]))
        elif name == "TCU_ChargeScheduleCmd":
            model.set_schedule(str(v["ScheduleRequest"]), int(v["StartMinutesRequest"]))
        return name
