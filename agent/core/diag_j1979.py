"""The standard OBD-II PIDs carfriend polls when a car supports them, written from SAE J1979 (no IO).

Service 01 PIDs 0x00, 0x20, ... 0xA0 are the "supported PIDs" bitmaps (bit 7 of byte A is the
next PID, down to bit 0 of byte D: PID base + 32, which says whether the next bitmap exists).
Each value below is (formula per J1979, VSS path):

  0x01  monitor status: byte A bit 7 = MIL on, bits 0-6 = confirmed emission DTC count
  0x0D  vehicle speed: A km/h
  0x42  control module voltage: (256 A + B) / 1000 V   (the 12 V rail as the ECU sees it)
  0x5B  hybrid/EV battery pack remaining: A * 100 / 255 %
  0xA6  odometer: (A B C D as a 32-bit integer) / 10 km
Services 03 / 07 / 0A read stored / pending / permanent DTCs (agent.core.diag_plan.parse_obd_dtcs).
"""

from __future__ import annotations

from dataclasses import replace

from agent.core import vss
from agent.core.diag_plan import BitSpec, DiagPlan, DiagValue, PlanKind
from agent.core.diag_profile import FUNCTIONAL_ID, OBD_RESPONSE_IDS, DiagnosticsConfig

MIL_ON = "Vehicle.OBD.Status.IsMILOn"
DTC_COUNT = "Vehicle.OBD.Status.DTCCount"
BITMAP_PIDS = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0)


def _value(key: str, path: str, bit: int, length: int, scale: float, ndigits: int, kind: str = "number") -> DiagValue:
    lo, hi = vss.PLAUSIBLE.get(path, (None, None))
    return DiagValue(key=key, path=path, spec=BitSpec(bit, length), kind=kind, scale=scale, lo=lo, hi=hi,
                     ndigits=ndigits)


# PID -> its values
STANDARD_PIDS: dict[int, tuple[DiagValue, ...]] = {
    0x01: (_value("MIL", MIL_ON, 0, 1, 1.0, 0, "bool"), _value("DTC_CNT", DTC_COUNT, 1, 7, 1.0, 0)),
    0x0D: (_value("VSS", vss.SPEED, 0, 8, 1.0, 0),),
    0x42: (_value("VPWR", vss.AUX_VOLTAGE, 0, 16, 0.001, 3),),
    0x5B: (_value("BAT_SOC", vss.SOC, 0, 8, 100.0 / 255.0, 1),),
    0xA6: (_value("ODO", vss.ODOMETER, 0, 32, 0.1, 1),),
}
STANDARD_PATHS = frozenset(v.path for values in STANDARD_PIDS.values() for v in values if v.path)
DTC_KINDS: dict[int, PlanKind] = {0x03: "dtc_stored", 0x07: "dtc_pending", 0x0A: "dtc_permanent"}


def parse_supported(base: int, payload: bytes) -> set[int] | None:
    """PIDs a `41 <base> A B C D` response says are supported; None when malformed."""
    if len(payload) < 6 or payload[0] != 0x41 or payload[1] != base:
        return None
    bits = int.from_bytes(payload[2:6], "big")
    return {base + 1 + i for i in range(32) if bits >> (31 - i) & 1}


def bitmap_plan(base: int, rx_id: int | None = None) -> DiagPlan:
    """Ask which PIDs base+1..base+32 are supported: functionally, or of one ECU."""
    tx = FUNCTIONAL_ID if rx_id is None else rx_id - 8
    rx = frozenset(OBD_RESPONSE_IDS) if rx_id is None else frozenset({rx_id})
    return DiagPlan(key=f"{tx:X}.01{base:02X}", label=f"supported PIDs {base + 1:02X}-{base + 32:02X}",
                    tx_id=tx, rx_ids=rx, extended=False, request=bytes([0x01, base]),
                    periods={"driving": 0.0, "charging": 0.0, "parked": 0.0}, timeout_s=1.0,
                    kind="supported", functional=rx_id is None, source="SAE J1979")


def pid_plan(pid: int, rx_id: int, diag: DiagnosticsConfig, skip_paths: frozenset[str] = frozenset()) -> DiagPlan:
    """Poll one standard PID of the ECU answering at rx_id (physical addressing)."""
    p = diag.periods
    values = [replace(v) for v in STANDARD_PIDS[pid]]
    for v in values:
        if v.path in skip_paths:
            v.path = None  # the car's own signal set says it better
    return DiagPlan(key=f"{rx_id - 8:X}.01{pid:02X}", label=f"OBD-II PID {pid:02X}", tx_id=rx_id - 8,
                    rx_ids=frozenset({rx_id}), extended=False, request=bytes([0x01, pid]),
                    periods={"driving": p.driving, "charging": p.charging, "parked": p.parked},
                    values=values, source="SAE J1979")


def dtc_plan(service: int, rx_id: int, diag: DiagnosticsConfig) -> DiagPlan:
    period = diag.dtc_period_s
    return DiagPlan(key=f"{rx_id - 8:X}.{service:02X}", label=f"OBD-II service {service:02X}", tx_id=rx_id - 8,
                    rx_ids=frozenset({rx_id}), extended=False, request=bytes([service]),
                    periods={"driving": period, "charging": period, "parked": period},
                    kind=DTC_KINDS[service], source="SAE J1979")


def plans_for(rx_id: int, supported: set[int], diag: DiagnosticsConfig, skip_paths: frozenset[str],
              taken_pids: set[int]) -> list[DiagPlan]:
    """What to poll at one ECU once its supported PIDs are known; each PID at one ECU only."""
    out = []
    for pid in sorted(STANDARD_PIDS):
        if pid in supported and pid not in taken_pids:
            if all(v.path in skip_paths for v in STANDARD_PIDS[pid]):
                continue
            taken_pids.add(pid)
            out.append(pid_plan(pid, rx_id, diag, skip_paths))
    if diag.dtc_period_s and supported:
        out += [dtc_plan(s, rx_id, diag) for s in (0x03, 0x07, 0x0A)]
    return out


def replay_plans(diag: DiagnosticsConfig, skip_paths: frozenset[str]) -> list[DiagPlan]:
    """Every standard plan at every OBD response id: a recorded session is matched by its echo."""
    out: list[DiagPlan] = []
    for rx in OBD_RESPONSE_IDS:
        out += [pid_plan(pid, rx, diag, skip_paths) for pid in sorted(STANDARD_PIDS)]
        out += [dtc_plan(s, rx, diag) for s in (0x03, 0x07, 0x0A)]
    return out
