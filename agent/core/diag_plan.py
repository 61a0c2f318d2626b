"""Diagnostic requests compiled for polling, and their responses decoded into the state (no IO).

A response payload (the reassembled ISO-TP message) is checked once: a negative response
(0x7F) is handed back with its code, a wrong echo or a payload too short for a value is
counted, and only values that pass the source's range, its "not available" values and the VSS
plausibility limits reach the VehicleState. A bad response never writes a wrong value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.core import vss
from agent.core.decode import format_dtc
from agent.core.diag_profile import OBD_RESPONSE_IDS, DiagnosticsConfig
from agent.core.state import VehicleState

NEGATIVE_RESPONSE = 0x7F
PENDING_DTC_LIST = "Vehicle.Diagnostics.PendingDTCList"  # carfriend's own: pending codes, apart
PlanKind = Literal["data", "dtc_stored", "dtc_pending", "dtc_permanent", "uds_dtc", "supported"]
DTC_SERVICES: dict[int, PlanKind] = {0x03: "dtc_stored", 0x07: "dtc_pending", 0x0A: "dtc_permanent"}


@dataclass(frozen=True, slots=True)
class BitSpec:
    """Where a raw value sits after the echo: bit 0 is the first byte's most significant bit."""

    bit: int
    length: int
    signed: bool = False
    little: bool = False  # little-endian bytes (byte-aligned, whole bytes)

    @property
    def end_byte(self) -> int:
        """Bytes of data (after the echo) the value needs."""
        return (self.bit + self.length + 7) // 8

    def raw(self, data: bytes) -> int | None:
        """The raw value, or None when the data is too short for it."""
        end = self.end_byte
        if len(data) < end:
            return None
        first = self.bit // 8
        chunk = int.from_bytes(data[first:end], "big")
        value = (chunk >> (8 * (end - first) - (self.bit % 8) - self.length)) & ((1 << self.length) - 1)
        if self.little and self.length > 8:
            value = int.from_bytes(value.to_bytes(self.length // 8, "big"), "little")
        if self.signed and value >> (self.length - 1):
            value -= 1 << self.length
        return value


@dataclass(slots=True)
class DiagValue:
    """One value of a response: raw -> physical (source units) -> VSS value."""

    key: str  # the signal's id (OBDb id, or "<request>.<n>")
    path: str | None  # VSS path; None: decoded (scan, tests) but not stored
    spec: BitSpec
    kind: str = "number"  # number | bool | enum
    scale: float = 1.0  # physical = raw * scale + offset
    offset: float = 0.0
    src_min: float | None = None  # the source's range; outside: dropped (never clamped)
    src_max: float | None = None
    null_min: float | None = None  # physical values at or beyond these mean "not available"
    null_max: float | None = None
    na_raw: frozenset[int] = frozenset()
    true_raw: frozenset[int] = frozenset({1})
    choices: dict[int, str] | None = None
    map_scale: float = 1.0  # VSS value = physical * map_scale + map_offset (units, mapping)
    map_offset: float = 0.0
    lo: float | None = None  # plausible range in VSS units
    hi: float | None = None
    ndigits: int = 6
    unit: str = ""
    any_of: tuple[BitSpec, ...] = ()  # bool only: true when any of these bits is set too

    def physical(self, raw: int) -> float:
        return raw * self.scale + self.offset


@dataclass(slots=True)
class DiagPlan:
    """One request as it is polled: ids, bytes, schedule and the values of its response."""

    key: str  # unique: "<tx id>.<service><identifier>" (e.g. "7E4.220101")
    label: str
    tx_id: int
    rx_ids: frozenset[int]
    extended: bool
    request: bytes  # service + identifier
    periods: dict[str, float]  # mode -> seconds (0: never)
    timeout_s: float = 1.0
    values: list[DiagValue] = field(default_factory=list)
    kind: PlanKind = "data"
    functional: bool = False
    source: str = ""  # where it was configured, for messages

    @property
    def service(self) -> int:
        return self.request[0]

    @property
    def echo(self) -> bytes:
        """What a positive response starts with: service + 0x40, then the identifier."""
        if self.kind in ("dtc_stored", "dtc_pending", "dtc_permanent"):
            return bytes([self.service + 0x40])
        if self.kind == "uds_dtc":
            return bytes([0x59, self.request[1]])
        return bytes([self.service + 0x40]) + self.request[1:]


@dataclass
class DiagProfile:
    """What the poller needs: plans, the VSS paths they feed (with staleness), and notes."""

    config: DiagnosticsConfig
    plans: list[DiagPlan]
    stale_after: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def skip_paths(self) -> frozenset[str]:
        """Paths the car's own requests feed: the standard PIDs leave them alone."""
        return frozenset(v.path for p in self.plans for v in p.values if v.path)

    def response_ids(self) -> set[int]:
        ids = {rx for p in self.plans for rx in p.rx_ids}
        if self.config.standard_pids:
            ids |= set(OBD_RESPONSE_IDS)
        return ids


def negative_response(plan: DiagPlan, payload: bytes) -> int | None:
    """The NRC when this is a negative response to the plan's service, else None."""
    if len(payload) >= 3 and payload[0] == NEGATIVE_RESPONSE and payload[1] == plan.service:
        return payload[2]
    return None


def is_response_to(plan: DiagPlan, payload: bytes) -> bool:
    return payload.startswith(plan.echo) or negative_response(plan, payload) is not None


@dataclass(slots=True)
class Checked:
    """A value that passed every check, or the reason it was dropped."""

    value: Any = None
    reason: str = ""


def check_value(v: DiagValue, data: bytes) -> Checked:
    """Decode one value from the data after the echo, with every check (no state)."""
    raw = v.spec.raw(data)
    if raw is None:
        return Checked(reason="too_short")
    if raw in v.na_raw:
        return Checked(reason="not_available")
    if v.kind == "bool":
        extra = (s.raw(data) for s in v.any_of)
        return Checked(raw in v.true_raw or any(r is not None and r in v.true_raw for r in extra))
    if v.kind == "enum":
        return Checked(v.choices.get(raw, raw) if v.choices else raw)
    physical = v.physical(raw)
    if (v.null_max is not None and physical >= v.null_max) or (v.null_min is not None and physical <= v.null_min):
        return Checked(reason="not_available")
    if (v.src_min is not None and physical < v.src_min - 1e-9) or (v.src_max is not None and physical > v.src_max + 1e-9):
        return Checked(reason="out_of_range")
    value = physical * v.map_scale + v.map_offset
    if (v.lo is not None and value < v.lo) or (v.hi is not None and value > v.hi):
        return Checked(reason="implausible")
    return Checked(round(value, v.ndigits))


def parse_obd_dtcs(payload: bytes) -> list[str] | None:
    """Service 03/07/0A over CAN: 4x, count, then two bytes per code. None when malformed.

    A code of 0x0000 is padding (no code), never "P0000".
    """
    if len(payload) < 2:
        return None
    count = payload[1]
    body = payload[2:]
    if len(body) < 2 * count:
        return None
    codes = {format_dtc(int.from_bytes(body[i:i + 2], "big")) for i in range(0, 2 * count, 2)
             if body[i:i + 2] != b"\x00\x00"}
    return sorted(codes)


def parse_uds_dtcs(payload: bytes) -> tuple[list[str], list[str]] | None:
    """UDS 59 02 mask, then DTC (3 bytes) + status per code: (confirmed, pending) codes."""
    body = payload[3:]
    if len(payload) < 3 or len(body) % 4:
        return None
    confirmed, pending = set(), set()
    for i in range(0, len(body), 4):
        code, status = int.from_bytes(body[i:i + 3], "big"), body[i + 3]
        if code == 0:
            continue
        text = format_dtc(code, 24)
        if status & 0x08:
            confirmed.add(text)
        elif status & 0x04:
            pending.add(text)
    return sorted(confirmed), sorted(pending)


class DiagDecoder:
    """Writes checked values of positive responses into the VehicleState; counts the rest."""

    def __init__(self, state: VehicleState) -> None:
        self.state = state
        self.drops: Counter[str] = Counter()
        self.responses = 0
        self._dtcs: dict[str, set[str]] = {}  # plan key -> stored/permanent codes it last reported
        self._pending: dict[str, list[str]] = {}

    def apply(self, plan: DiagPlan, payload: bytes, ts: float) -> tuple[str, ...]:
        """A positive response to `plan`: the VSS paths whose value changed."""
        if not payload.startswith(plan.echo):
            self.drops["wrong_echo"] += 1
            return ()
        self.responses += 1
        if plan.kind != "data":
            return self._dtc(plan, payload, ts)
        data = payload[len(plan.echo):]
        changed: list[str] = []
        for v in plan.values:
            if v.path is None:
                continue
            checked = check_value(v, data)
            if checked.reason:
                self.drops[checked.reason] += 1
            elif self.state.set(v.path, checked.value, ts):
                changed.append(v.path)
        return tuple(changed)

    def _dtc(self, plan: DiagPlan, payload: bytes, ts: float) -> tuple[str, ...]:
        if plan.kind == "uds_dtc":
            parsed = parse_uds_dtcs(payload)
            if parsed is None:
                self.drops["malformed_dtc"] += 1
                return ()
            stored, pending = parsed
            return self._stored(plan.key, stored, ts) + self._pending_codes(plan.key, pending, ts)
        codes = parse_obd_dtcs(payload)
        if codes is None:
            self.drops["malformed_dtc"] += 1
            return ()
        if plan.kind == "dtc_pending":
            return self._pending_codes(plan.key, codes, ts)
        return self._stored(plan.key, codes, ts)

    def _stored(self, key: str, codes: list[str], ts: float) -> tuple[str, ...]:
        before = self._dtcs.get(key, set())
        now = set(codes)
        changed = False
        for code in sorted(now):
            changed |= self.state.set_dtc(code, True, ts)
        others = set().union(*(c for k, c in self._dtcs.items() if k != key))
        for code in sorted(before - now - others):
            changed |= self.state.set_dtc(code, False, ts)
        if not now and not before:
            changed |= self.state.set_dtc("", False, ts)  # "no codes": an empty list, known now
        self._dtcs[key] = now
        return (vss.DTC_LIST,) if changed else ()

    def _pending_codes(self, key: str, codes: list[str], ts: float) -> tuple[str, ...]:
        self._pending[key] = codes
        merged = sorted({c for cs in self._pending.values() for c in cs})
        return (PENDING_DTC_LIST,) if self.state.set(PENDING_DTC_LIST, merged, ts) else ()

