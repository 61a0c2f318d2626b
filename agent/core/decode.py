"""The hot path: CAN frame -> checked VSS values written into the vehicle state (no IO).

Per frame this does a dict lookup, a masked compare with the previous payload of that id
(counter and checksum bits masked out) and, only when something changed, extracts the mapped
signals alone with precompiled shifts and masks (cantools decodes the whole message only for
float or nested-multiplexed messages), then scales and checks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cantools.database.can import Message

from agent.core.state import VehicleState

NO_CHANGE: tuple[str, ...] = ()


DROP_REASONS = ("unknown_id", "short_payload", "error_frame", "malformed_line", "decode_error",
                "not_available", "out_of_range", "implausible")
MAX_SITES = 256  # distinct places kept per reason; the rest are counted under OTHER_SITE
OTHER_SITE = "(others)"
OTHER_ID = -1  # unknown_ids' key for OTHER_SITE


def ndigits(step: float) -> int:
    """Decimals a scaling step can carry (0.1 V steps round to 1 decimal)."""
    step = abs(step)
    if step == 0 or step >= 1:
        return 0 if step == int(step) else 2
    digits = -math.log10(step)
    exact = abs(digits - round(digits)) < 1e-9
    return min(6, math.ceil(digits - 1e-9) + (0 if exact else 1))


@dataclass(slots=True)
class DropCounts:
    """Frames and values dropped, by reason, and where: never raised, only counted.

    ``sites`` says where, per reason: the id (unknown_id), the message (short_payload,
    decode_error) or the mapped "Message.Signal" (not_available, out_of_range, implausible).
    """

    unknown_id: int = 0
    short_payload: int = 0
    error_frame: int = 0
    malformed_line: int = 0  # a line of a log file that is no frame (replay only)
    decode_error: int = 0
    not_available: int = 0
    out_of_range: int = 0
    implausible: int = 0
    sites: dict[str, dict[str, int]] = field(default_factory=dict)
    unknown_ids: dict[int, int] = field(default_factory=dict)  # unknown_id's sites, kept as ints (cheap)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in DROP_REASONS}

    def total(self) -> int:
        return sum(self.as_dict().values())

    def add(self, reason: str, where: str, n: int = 1) -> None:
        """Count n drops for reason at where (not for the hot path: drops are the exception)."""
        setattr(self, reason, getattr(self, reason) + n)
        by = self.sites.setdefault(reason, {})
        if where not in by and len(by) >= MAX_SITES:
            where = OTHER_SITE
        by[where] = by.get(where, 0) + n

    def unknown(self, can_id: int) -> None:
        """One frame of an id no mapping needs."""
        self.unknown_id += 1
        known = self.unknown_ids
        if can_id not in known and len(known) >= MAX_SITES:
            can_id = OTHER_ID
        known[can_id] = known.get(can_id, 0) + 1

    def add_unknown_ids(self, counts: dict[int, int]) -> None:
        """Frames of ids no mapping needs, counted per id by the caller's loop."""
        known = self.unknown_ids
        for can_id, n in counts.items():
            self.unknown_id += n
            key = can_id if can_id in known or len(known) < MAX_SITES else OTHER_ID
            known[key] = known.get(key, 0) + n

    def top(self, n: int = 3) -> dict[str, list[tuple[str, int]]]:
        """The n places with the most drops, per reason that has any, most first."""
        sites = dict(self.sites)
        if self.unknown_ids:
            sites["unknown_id"] = {OTHER_SITE if i == OTHER_ID else f"0x{i:X}": c
                                   for i, c in self.unknown_ids.items()}
        return {reason: sorted(by.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
                for reason in DROP_REASONS if (by := sites.get(reason))}


@dataclass(frozen=True, slots=True)
class BitField:
    """Where a signal's raw value sits in the payload read as one integer.

    Intel signals are read from the little-endian integer of the payload, Motorola ones from
    the big-endian integer of the message's length: either way one shift and one mask.
    """

    big: bool
    shift: int
    bits: int  # mask of `length` ones
    sign: int  # the sign bit's value for signed signals, else 0

    def raw(self, le: int, be: int) -> int:
        v = ((be if self.big else le) >> self.shift) & self.bits
        return v - (self.sign << 1) if v & self.sign else v


@dataclass(slots=True)
class SignalPlan:
    """How one mapped DBC signal becomes one VSS value."""

    path: str
    name: str
    kind: str  # number | bool | enum | dtc
    scale: float  # DBC scaling: physical = raw * scale + offset
    offset: float
    map_scale: float  # mapping: VSS value = physical * map_scale + map_offset
    map_offset: float
    dbc_min: float | None
    dbc_max: float | None
    lo: float | None
    hi: float | None
    na_raw: int | None
    choices: dict[int, Any] | None  # raw -> the VSS value (a choice name, or its VSS translation)
    true_raw: frozenset[int] | None = None
    where: str = ""  # "Message.Signal", for the drop counters
    integer: bool = False  # the VSS datatype is an integer: publish ints
    strict_choices: bool = False  # a raw value not in choices has no VSS value: drop it
    # Decoded alone by cantools (a message whose signals overlap cannot be decoded whole)
    solo: Message | None = None
    # dtc only: the status signal and its raw values meaning "active"
    status_name: str | None = None
    active_raw: frozenset[int] | None = None
    dtc_bits: int = 16
    ndigits: int = 6  # decimals the scaling can carry; 0.1 V steps round to 1 decimal
    # Precompiled extraction (None: the message is decoded by cantools)
    bitfield: BitField | None = None
    mux: BitField | None = None  # the multiplexer, when the signal is on some pages only
    mux_ids: frozenset[int] | None = None
    status_field: BitField | None = None


@dataclass(slots=True)
class MessagePlan:
    frame_id: int
    message: Message
    length: int
    mask: int
    signals: list[SignalPlan]
    compiled: bool = False  # every mapped signal has a BitField: no cantools call per decode
    big_endian: bool = False  # some field reads the big-endian integer
    mux: BitField | None = None  # the message's multiplexer (compiled plans only)
    mux_pages: frozenset[int] = frozenset()  # its values that select a page
    per_signal: bool = False  # cantools decodes each mapped signal alone (overlapping signals)
    last_key: int = -1
    last_data: bytes | None = None
    last_paths: tuple[str, ...] = NO_CHANGE


@dataclass(slots=True)
class Decoder:
    """Decodes the frames of mapped messages into a VehicleState."""

    plans: dict[int, MessagePlan]
    state: VehicleState
    drops: DropCounts = field(default_factory=DropCounts)
    frames: int = 0
    decoded: int = 0
    unchanged: int = 0

    def decode(self, ts: float, can_id: int, data: bytes) -> tuple[str, ...]:
        """Apply one frame; return the VSS paths whose value changed (NO_CHANGE, mostly)."""
        self.frames += 1
        plan = self.plans.get(can_id)
        if plan is None:
            self.drops.unknown(can_id)
            return NO_CHANGE
        # An exact repeat is the cheapest test; the masked one also ignores counters/checksums.
        if data != plan.last_data:
            if len(data) < plan.length:
                self.drops.add("short_payload", plan.message.name)
                return NO_CHANGE
            le = _from_bytes(data, "little")
            key = le & plan.mask
            if key != plan.last_key:
                return self._decode(plan, ts, le, key, data)
            plan.last_data = data
        self.unchanged += 1
        state = self.state
        stamps = state.stamps  # VehicleState.touch, inlined: this runs for ~80 % of frames
        for path in plan.last_paths:
            stamps[path] = ts
        if ts > state.now:
            state.now = ts
        return NO_CHANGE

    def _decode(self, plan: MessagePlan, ts: float, le: int, key: int, data: bytes) -> tuple[str, ...]:
        if plan.compiled:
            values = _extract(plan, le, data)
            if values is None:
                # a multiplexer value no page has, as cantools says
                self.drops.add("decode_error", plan.message.name)
                return NO_CHANGE
        elif plan.per_signal:
            values = self._one_by_one(plan, le, data)
        else:
            try:
                raw: Any = plan.message.decode(data, decode_choices=False, scaling=False)
            except Exception:  # noqa: BLE001 - any cantools failure is one bad frame, counted
                self.drops.add("decode_error", plan.message.name)
                return NO_CHANGE
            values = [(sp, raw.get(sp.name), raw.get(sp.status_name) if sp.status_name else None)  # type: ignore[misc]
                      for sp in plan.signals]
        self.decoded += 1
        plan.last_key, plan.last_data = key, data
        accepted: list[str] = []
        changed: list[str] = []
        state = self.state
        for sp, value, status in values:
            if value is None:
                continue  # another multiplexer page
            checked = self._check(sp, value, status)
            if checked is _DROP:
                state.mark_unusable(sp.path, ts)  # the kept value is not this frame's
                continue
            accepted.append(sp.path)
            if sp.kind == "dtc":
                if state.set_dtc(checked[0], checked[1], ts) if checked[0] else state.no_dtcs(ts):
                    changed.append(sp.path)
            elif state.set(sp.path, checked, ts):
                changed.append(sp.path)
        plan.last_paths = tuple(accepted)
        return tuple(changed) if changed else NO_CHANGE

    def _one_by_one(self, plan: MessagePlan, le: int, data: bytes) -> list[tuple[SignalPlan, Any, Any]]:
        """A message cantools cannot decode whole (overlapping signals): each mapped signal alone."""
        out: list[tuple[SignalPlan, Any, Any]] = []
        be = _from_bytes(data[:plan.length], "big")
        for sp in plan.signals:
            if sp.mux is not None and sp.mux.raw(le, be) not in sp.mux_ids:  # type: ignore[operator]
                continue  # another multiplexer page
            try:
                raw: Any = sp.solo.decode(data, decode_choices=False, scaling=False)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - this signal, this frame: counted
                self.drops.add("decode_error", sp.where)
                continue
            out.append((sp, raw.get(sp.name), raw.get(sp.status_name) if sp.status_name else None))
        return out

    def _check(self, sp: SignalPlan, raw_value: Any, status: Any) -> Any:
        if sp.na_raw is not None and raw_value == sp.na_raw:
            self.drops.add("not_available", sp.where)
            return _DROP
        if sp.kind == "bool":
            return raw_value in sp.true_raw  # type: ignore[operator]
        if sp.kind == "enum":
            if sp.choices is None:
                return raw_value
            if sp.strict_choices and raw_value not in sp.choices:
                self.drops.add("implausible", sp.where)  # no VSS value for it (e.g. gear "SNA")
                return _DROP
            return sp.choices.get(raw_value, raw_value)
        if sp.kind == "dtc":
            code = int(raw_value)
            if code == 0:
                return ("", False)  # 0 is "no code": the DTC list is empty
            active = True if sp.active_raw is None else status in sp.active_raw
            return (format_dtc(code, sp.dtc_bits), active)
        physical = raw_value * sp.scale + sp.offset
        if (sp.dbc_min is not None and physical < sp.dbc_min) or (
                sp.dbc_max is not None and physical > sp.dbc_max):
            self.drops.add("out_of_range", sp.where)
            return _DROP
        value = physical * sp.map_scale + sp.map_offset
        if (sp.lo is not None and value < sp.lo) or (sp.hi is not None and value > sp.hi):
            self.drops.add("implausible", sp.where)
            return _DROP
        return int(round(value)) if sp.integer else round(value, sp.ndigits)


_DROP: Any = object()
_from_bytes = int.from_bytes  # a global name, not an attribute lookup per frame


def _extract(plan: MessagePlan, le: int, data: bytes) -> list[tuple[SignalPlan, int | None, int | None]] | None:
    """The mapped signals' raw values (and DTC status) by precompiled shift and mask."""
    be = _from_bytes(data[:plan.length], "big") if plan.big_endian else 0
    if plan.mux is not None and plan.mux.raw(le, be) not in plan.mux_pages:
        return None
    out: list[tuple[SignalPlan, int | None, int | None]] = []
    for sp in plan.signals:
        if sp.mux is not None and sp.mux.raw(le, be) not in sp.mux_ids:  # type: ignore[operator]
            continue  # another multiplexer page
        f: BitField = sp.bitfield  # type: ignore[assignment]
        v = ((be if f.big else le) >> f.shift) & f.bits
        if v & f.sign:
            v -= f.sign << 1
        out.append((sp, v, sp.status_field.raw(le, be) if sp.status_field is not None else None))
    return out

_DTC_SYSTEMS = "PCBU"


def format_dtc(code: int, bits: int = 16) -> str:
    """SAE J2012 text of a 16-bit DTC (P0A80); a 24-bit one gets its failure type byte (P0A80-1C)."""
    if bits >= 24:
        base, ftb = code >> 8, code & 0xFF
        return f"{format_dtc(base)}-{ftb:02X}"
    return f"{_DTC_SYSTEMS[(code >> 14) & 3]}{(code >> 12) & 3}{code & 0xFFF:03X}"
