"""A vehicle profile: config + DBCs resolved into decode plans, with every problem collected (reads files)."""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path

from cantools.database.can import Database, Message, Signal

from agent.core import vss
from agent.core.decode import BitField, MessagePlan, SignalPlan, ndigits
from agent.core.errors import ConfigError, DbcError
from agent.core.settings import AgentConfig, SignalMap
from agent.core.state import DEFAULT_STALE_AFTER_S
from agent.core.vehicle import Vehicle
from agent.profile.dbc import PLACEHOLDER_MESSAGE, check_c_bitstruct, load_dbc
from agent.profile.diagnostics import diag_mappings, load_diagnostics

# Signals whose bits change every frame without carrying information: masked out of the
# "payload unchanged" test so that a rolling counter does not force a decode per frame.
VOLATILE_SIGNAL_RE = re.compile(r"(counter|cnt|crc|checksum|chksum|csum|alive|rolling|prun|parity)", re.IGNORECASE)
NOT_AVAILABLE_NAME_RE = re.compile(r"^(sna|n/?a|invalid|not_?available|unavailable|error|fault)$|_sna$", re.I)


def load_vehicle(config: AgentConfig) -> Vehicle:
    """Load the config's DBCs and resolve its mapping; ConfigError lists every problem."""
    where = str(config.source or "config")
    problems: list[str] = []
    databases: list[Database] = []
    try:
        check_c_bitstruct()
    except DbcError as exc:
        problems.append(str(exc))
    named: list[tuple[str, Database]] = []
    for path in config.can.dbc:
        try:
            databases.append(load_dbc(Path(path), strict=config.can.strict_dbc))
            named.append((str(path), databases[-1]))
        except DbcError as exc:
            problems.append(str(exc))
    diagnostics, diag_problems = load_diagnostics(config, named)
    problems.extend(diag_problems)
    if not config.can.dbc and diagnostics is None and not diag_problems:
        problems.append(f"{where}: [can] dbc: no DBC file given (set [can] dbc or pass --dbc FILE, "
                        "or poll the car with [diagnostics])")
    plans: dict[int, MessagePlan] = {}
    stale_after: dict[str, float] = {}
    polled = diag_mappings(config)
    warnings: list[str] = []
    if databases:
        builder = _PlanBuilder(config, databases, where)
        for vss_path, mapping in config.mappings().items():
            if vss_path not in polled:
                builder.add(vss_path, mapping)
        problems.extend(builder.problems)
        plans, stale_after, warnings = builder.plans, builder.stale_after, builder.warnings
    if diagnostics is not None:
        for both in sorted(set(stale_after) & diagnostics.skip_paths):
            problems.append(f'{where}: "{both}" is mapped to a DBC signal and polled by [diagnostics]: '
                            "choose one")
        for polled_path, stale in diagnostics.stale_after.items():
            stale_after.setdefault(polled_path, stale)
        warnings += diagnostics.notes
    if problems:
        raise ConfigError(problems)
    return Vehicle(config, databases, plans, stale_after, warnings, diagnostics=diagnostics)


class _PlanBuilder:
    def __init__(self, config: AgentConfig, databases: list[Database], where: str) -> None:
        self.config = config
        self.databases = databases
        self.where = where
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.plans: dict[int, MessagePlan] = {}
        self.stale_after: dict[str, float] = {}
        self._messages = {m.name: m for db in reversed(databases) for m in db.messages}

    def fail(self, path: str, text: str) -> None:
        self.problems.append(f'{self.where}: [signals] "{path}": {text}')

    def add(self, path: str, mapping: SignalMap) -> None:
        resolved = self._resolve(path, mapping.source)
        if resolved is None:
            return
        message, signal = resolved
        why = undecodable(message, signal)
        if why:
            self.fail(path, f'"{message.name}.{signal.name}" cannot be decoded: {why}')
            return
        kind = self._kind(path, mapping, signal)
        if not self._fits_vss(path, kind, mapping, signal):
            return
        plan = self._plan_for(message)
        own_range = mapping.min is not None or mapping.max is not None  # replaces the DBC's [min|max]
        sp = SignalPlan(
            path=path, name=signal.name, kind=kind,
            scale=float(signal.scale), offset=float(signal.offset),
            map_scale=mapping.scale, map_offset=mapping.offset,
            dbc_min=None if own_range else _limit(signal, "minimum"),
            dbc_max=None if own_range else _limit(signal, "maximum"),
            lo=mapping.min if mapping.min is not None else vss.PLAUSIBLE.get(path, (None, None))[0],
            hi=mapping.max if mapping.max is not None else vss.PLAUSIBLE.get(path, (None, None))[1],
            na_raw=_not_available_raw(signal), choices=_choices(signal),
            ndigits=ndigits(float(signal.scale) * mapping.scale), dtc_bits=signal.length,
            where=f"{message.name}.{signal.name}",
            integer=path in vss.SPECS and vss.SPECS[path].integer,
        )
        if kind == "bool":
            sp.true_raw = self._true_raw(path, mapping, signal)
        elif kind == "dtc":
            self._dtc_status(path, mapping, message, sp)
        elif kind == "enum":
            self._translate_choices(path, sp)
        if plan.compiled:
            _compile(sp, message, signal)
            plan.big_endian |= any(f is not None and f.big for f in (sp.bitfield, sp.mux, sp.status_field))
        elif plan.per_signal:
            sp.solo = _solo(message, [signal.name, sp.status_name])
            if signal.multiplexer_ids:  # which page it is on, read without cantools
                sp.mux = bit_field(message.get_signal_by_name(str(signal.multiplexer_signal)), message.length)
                sp.mux_ids = frozenset(signal.multiplexer_ids)
        plan.signals.append(sp)
        self.stale_after[path] = self._stale_after(mapping, message)

    def _fits_vss(self, path: str, kind: str, mapping: SignalMap, signal: Signal) -> bool:
        """The mapping can give the path's VSS datatype; a unit that looks wrong is a warning."""
        spec = vss.SPECS.get(path)
        if spec is None:
            return True
        if spec.datatype.startswith("string") and kind == "number":
            self.fail(path, f'VSS type {spec.datatype}{" (" + spec.unit + ")" if spec.unit else ""}, '
                            f'but "{signal.name}" is a number without choices')
            return False
        if kind == "number" and spec.unit is not None:
            factor, why = vss.unit_factor(signal.unit, path)
            if why:
                self.warnings.append(f'{self.where}: [signals] "{path}": {why}')
            elif factor is not None and not math.isclose(abs(mapping.scale), factor, rel_tol=1e-6):
                self.warnings.append(
                    f'{self.where}: [signals] "{path}": "{signal.name}" is in {signal.unit} and {path} in '
                    f'{spec.unit}: expected scale = {factor:g} (or {-factor:g}), not {mapping.scale:g}')
        return True

    def _translate_choices(self, path: str, sp: SignalPlan) -> None:
        """Choice names -> the path's VSS values (e.g. gear "P" -> 126); untranslatable ones dropped."""
        if sp.choices is None or path not in vss.SPECS:
            return
        translated = {raw: vss.translate_choice(path, str(name)) for raw, name in sp.choices.items()}
        if all(t == sp.choices[raw] for raw, t in translated.items()):
            return
        sp.choices = {raw: t for raw, t in translated.items() if t is not None}
        sp.strict_choices = True
        if not sp.choices:
            self.fail(path, f'no choice of "{sp.name}" has a VSS value for {path} '
                            f"(choices: {', '.join(sorted(str(n) for n in translated))})")

    def _resolve(self, path: str, source: str) -> tuple[Message, Signal] | None:
        msg_name, sig_name = source.split(".", 1)
        message = self._messages.get(msg_name)
        if message is None and msg_name == PLACEHOLDER_MESSAGE:
            self.fail(path, f'"{source}": {PLACEHOLDER_MESSAGE} is not a CAN message but the DBC editor\'s '
                            f'placeholder for signals that no frame carries, so "{sig_name}" never appears on '
                            "the bus; map the signal of the message that sends it (or move the signal into "
                            "its message in the DBC)")
            return None
        if message is None:
            self.fail(path, f'message "{msg_name}" is in none of the DBC files{_hint(msg_name, self._messages)}')
            return None
        signal = next((s for s in message.signals if s.name == sig_name), None)
        if signal is None:
            names = {s.name: s for s in message.signals}
            self.fail(path, f'message "{msg_name}" has no signal "{sig_name}"{_hint(sig_name, names)}')
            return None
        return message, signal

    def _plan_for(self, message: Message) -> MessagePlan:
        plan = self.plans.get(message.frame_id)
        if plan is None:
            mask = (1 << (8 * message.length)) - 1
            for s in message.signals:
                if VOLATILE_SIGNAL_RE.search(s.name):
                    mask &= ~_signal_bits(s)
            plan = MessagePlan(message.frame_id, message, message.length, mask, [],
                               compiled=compilable(message))
            if _overlapping(message):
                plan.per_signal = not plan.compiled
                self.warnings.append(
                    f'{self.where}: message "{message.name}" has overlapping signals '
                    f'({", ".join(overlapping_signals(message)[:6])}): a message decode of it fails, so its '
                    "mapped signals are decoded one by one")
            mux = next((s for s in message.signals if s.is_multiplexer), None)
            if plan.compiled and mux is not None:
                plan.mux = bit_field(mux, message.length)
                plan.big_endian = plan.mux.big
                plan.mux_pages = frozenset(i for s in message.signals for i in s.multiplexer_ids or ())
            self.plans[message.frame_id] = plan
        return plan

    def _kind(self, path: str, mapping: SignalMap, signal: Signal) -> str:
        if path == vss.DTC_LIST:
            return "dtc"
        if mapping.true_values is not None or path in vss.BOOLEAN_PATHS:
            return "bool"
        if signal.choices and path not in vss.PLAUSIBLE:
            return "enum"
        return "number"

    def _true_raw(self, path: str, mapping: SignalMap, signal: Signal) -> frozenset[int]:
        if mapping.true_values is None:
            if signal.length == 1:
                return frozenset({1})
            self.fail(path, f'boolean VSS signal from {signal.length}-bit "{signal.name}": '
                            "set true_values (choice names or raw numbers meaning true)")
            return frozenset()
        return self._raw_values(path, "true_values", mapping.true_values, signal)

    def _raw_values(self, path: str, field_name: str, values: list[str | int], signal: Signal) -> frozenset[int]:
        by_name = {str(name): int(raw) for raw, name in (signal.choices or {}).items()}
        raws: set[int] = set()
        for v in values:
            if isinstance(v, int):
                raws.add(v)
            elif v in by_name:
                raws.add(by_name[v])
            else:
                known = ", ".join(sorted(by_name)) or "none: use raw numbers"
                self.fail(path, f'{field_name}: "{v}" is not a value of "{signal.name}" (choices: {known})')
        return frozenset(raws)

    def _dtc_status(self, path: str, mapping: SignalMap, message: Message, sp: SignalPlan) -> None:
        if mapping.status is None:
            return
        msg_name, sig_name = mapping.status.split(".", 1)
        status = next((s for s in message.signals if s.name == sig_name), None)
        if msg_name != message.name or status is None:
            self.fail(path, f'status "{mapping.status}" must be a signal of message "{message.name}"')
            return
        sp.status_name = status.name
        sp.active_raw = self._raw_values(path, "active_values", mapping.active_values or [1], status)

    def _stale_after(self, mapping: SignalMap, message: Message) -> float:
        if mapping.stale_after_s is not None:
            return mapping.stale_after_s
        if self.config.can.stale_after_s is not None:
            return self.config.can.stale_after_s
        if message.cycle_time:
            return max(3 * message.cycle_time / 1000.0, 2.0)
        return DEFAULT_STALE_AFTER_S


def compilable(message: Message) -> bool:
    """True when shifts and masks decode it like cantools: integers, at most one mux level.

    Overlapping signals do not matter here: each mapped signal is extracted on its own.
    """
    by_name = {s.name: s for s in message.signals}
    for s in message.signals:
        if s.is_float or undecodable(message, s):
            return False  # floats, and signals reaching past the payload
        mux = by_name.get(str(s.multiplexer_signal)) if s.multiplexer_ids else None
        if s.multiplexer_ids and (mux is None or mux.multiplexer_ids):
            return False  # nested multiplexing: leave it to cantools
    return len([s for s in message.signals if s.is_multiplexer]) <= 1


def undecodable(message: Message, signal: Signal) -> str | None:
    """Why a signal can never be read from its message's payload (lenient DBCs), or None."""
    f = bit_field(signal, message.length)
    if f.shift < 0 or f.shift + signal.length > 8 * message.length:
        return f"its {signal.length} bits from bit {signal.start} reach past the message's {message.length} bytes"
    return None


def _overlapping(message: Message) -> bool:
    """Signals sharing bits on the same page: cantools fails to decode such a message whole."""
    return bool(overlapping_signals(message))


def overlapping_signals(message: Message) -> list[str]:
    """Names of the signals that share bits with another one on the same page."""
    pages: dict[int | None, list[tuple[str, int]]] = {}
    for s in message.signals:
        ids: list[int | None] = list(s.multiplexer_ids or []) or [None]
        for page in ids:
            pages.setdefault(page, []).append((s.name, _signal_bits(s)))
    always = pages.get(None, [])
    out: list[str] = []
    for page, signals in pages.items():
        group = signals if page is None else signals + always
        for i, (name, bits) in enumerate(group):
            if any(bits & other for j, (_n, other) in enumerate(group) if j != i) and name not in out:
                out.append(name)
    return out


def _solo(message: Message, names: list[str | None]) -> Message:
    """A copy of message holding only the named signals (and their multiplexer): decodable alone."""
    keep = [message.get_signal_by_name(n) for n in names if n]
    for s in list(keep):
        if s.multiplexer_ids and s.multiplexer_signal:
            mux = message.get_signal_by_name(str(s.multiplexer_signal))
            if mux not in keep:
                keep.insert(0, mux)
    for i, s in enumerate(keep):
        if s.is_multiplexer and not any(k.multiplexer_signal == s.name for k in keep):
            keep[i] = copy.copy(s)  # a multiplexer read on its own: just a number
            keep[i].is_multiplexer = False
    return Message(frame_id=message.frame_id, name=message.name, length=message.length, signals=keep,
                   is_extended_frame=message.is_extended_frame, is_fd=message.is_fd, strict=False)


def bit_field(signal: Signal, length: int) -> BitField:
    """The shift and mask that read this signal's raw value (see BitField)."""
    bits = (1 << signal.length) - 1
    sign = 1 << (signal.length - 1) if signal.is_signed else 0
    if signal.byte_order == "little_endian":
        return BitField(False, signal.start, bits, sign)
    msb = (length - 1 - signal.start // 8) * 8 + signal.start % 8  # in the big-endian integer
    return BitField(True, msb - signal.length + 1, bits, sign)


def _compile(sp: SignalPlan, message: Message, signal: Signal) -> None:
    sp.bitfield = bit_field(signal, message.length)
    if signal.multiplexer_ids:
        sp.mux = bit_field(message.get_signal_by_name(str(signal.multiplexer_signal)), message.length)
        sp.mux_ids = frozenset(signal.multiplexer_ids)
    if sp.status_name is not None:
        sp.status_field = bit_field(message.get_signal_by_name(sp.status_name), message.length)


def _limit(signal: Signal, attr: str) -> float | None:
    lo, hi = signal.minimum, signal.maximum
    if lo is None or hi is None or lo == hi:
        return None  # DBC files write [0|0] for "no range"
    return float(getattr(signal, attr))


def _choices(signal: Signal) -> dict[int, str] | None:
    if not signal.choices:
        return None
    return {int(raw): str(name) for raw, name in signal.choices.items()}


def _not_available_raw(signal: Signal) -> int | None:
    """The all-bits-set raw value when it means 'not available' for this signal."""
    if signal.is_float or signal.is_signed:
        return None
    all_ones = (1 << signal.length) - 1
    if signal.choices and all_ones in signal.choices:
        return all_ones if NOT_AVAILABLE_NAME_RE.search(str(signal.choices[all_ones])) else None
    if signal.choices or signal.length < 4:
        return None  # small flags and enums use every value
    return all_ones


def _signal_bits(signal: Signal) -> int:
    """Mask of the payload bits (little-endian integer of the payload) a signal occupies."""
    mask = 0
    pos = signal.start
    for _ in range(signal.length):
        mask |= 1 << pos
        if signal.byte_order == "little_endian":
            pos += 1
        else:  # Motorola: walk from the MSB down, wrapping to the next byte's top bit
            pos = pos + 15 if pos % 8 == 0 else pos - 1
    return mask


def _hint(name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
