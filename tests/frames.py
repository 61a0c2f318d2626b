"""Test helpers: encode frames of the reference EV DBC with cantools and write real log files."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import can
import cantools

ROOT = Path(__file__).resolve().parents[1]
EV_DBC = ROOT / "dbc" / "carfriend_ev.dbc"
EV_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"
START = datetime.fromisoformat("2026-11-21T18:00:00+09:00").timestamp()

_db = cantools.database.load_file(str(EV_DBC))


def encode(name: str, **values: Any) -> tuple[int, bytes]:
    """A frame of message ``name``; signals not given are 0 (or their minimum when 0 is out of range)."""
    msg = _db.get_message_by_name(name)
    full: dict[str, Any] = {}
    for sig in msg.signals:
        if sig.name in values:
            full[sig.name] = values[sig.name]
        elif sig.minimum is not None and sig.minimum > 0:
            full[sig.name] = sig.minimum
        else:
            full[sig.name] = 0
    return msg.frame_id, msg.encode(full, strict=False)


def message(ts: float, name: str, **values: Any) -> can.Message:
    fid, data = encode(name, **values)
    return can.Message(timestamp=ts, arbitration_id=fid, data=data, is_extended_id=fid > 0x7FF)


def write_log(path: Path, frames: Iterator[can.Message]) -> Path:
    with can.Logger(str(path)) as writer:
        for msg in frames:
            writer.on_message_received(msg)
    return path


def car_frames(ts: float, *, soc: float, charging: bool = False, plugged: bool = False,
               power_kw: float = 0.0, ttc_min: int | None = None, limit: int = 90,
               lv_v: float = 12.6, speed: float = 0.0, gear: str = "P") -> list[can.Message]:
    """One second's status frames of the reference EV."""
    state = "CHARGING" if charging else ("COMPLETE" if plugged and soc >= limit - 0.5 else "IDLE")
    return [
        message(ts, "BMS_Status", SOC=round(soc, 2), PackVoltage=380.0, PackCurrent=0.0),
        message(ts + 0.001, "BMS_Power", PackPower=-power_kw),
        message(ts + 0.002, "Charger_Status", ChargerState=state, PlugState="CONNECTED" if plugged else "DISCONNECTED",
                ACPower=0.0, DCPower=power_kw if charging else 0.0,
                TimeToComplete=4095 if ttc_min is None else ttc_min, ChargeLimit=limit),
        message(ts + 0.003, "LV_System", LV_Voltage=lv_v),
        message(ts + 0.004, "Drive_State", VehicleSpeed=speed, Gear=gear),
    ]


def acceptance_frames(seed: int = 7) -> Iterator[can.Message]:
    """The core issue's Done-when log, at 1 Hz from START:

    SOC drifts from 24 % to 17 % with +-0.8 noise (600 s), is plugged in and DC-charges at
    50 kW with the taper above 80 % to the 90 % limit, then the 12 V rail dips below 11.8 V
    for 90 s and, later, for 30 s.
    Expected messages: battery.low, charge.started (eta), charge.completed, aux_battery.low.
    """
    rng = random.Random(seed)
    t = START
    for i in range(600):  # driving home, SOC drifting down across 20 % with noise
        soc = 24.0 - 7.0 * i / 600 + rng.uniform(-0.8, 0.8)
        yield from car_frames(t, soc=soc)
        t += 1.0
    for _ in range(5):  # plugged in, charger handshake
        yield from car_frames(t, soc=17.0, plugged=True)
        t += 1.0
    soc, capacity, p_max, limit = 17.0, 64.0, 50.0, 90
    while soc < limit:
        factor = 1.0 if soc <= 80 else max(0.3, 1.0 - 0.7 * (soc - 80) / 20)
        power = p_max * factor
        yield from car_frames(t, soc=soc, charging=True, plugged=True, power_kw=round(power, 1), limit=limit)
        soc += power / 3600.0 / capacity * 100.0
        t += 1.0
    for i in range(1500):  # parked at the limit, plugged; two 12 V dips
        lv = 11.5 if 600 <= i < 690 or 1200 <= i < 1230 else 12.6
        yield from car_frames(t, soc=90.0, plugged=True, lv_v=lv, limit=limit)
        t += 1.0


def charge_completion_time(seed: int = 7) -> float:
    """Event time of the first frame at the limit in acceptance_frames (for ETA checks)."""
    for msg in acceptance_frames(seed):
        if msg.arbitration_id == _db.get_message_by_name("Charger_Status").frame_id:
            decoded = _db.decode_message(msg.arbitration_id, msg.data)
            if str(decoded["ChargerState"]) == "COMPLETE":
                return msg.timestamp
    raise AssertionError("the log never completes its charge")
