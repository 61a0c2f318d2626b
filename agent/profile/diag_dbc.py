"""A DBC message describing a reassembled diagnostic response ("UDS DBC" style), compiled into
the poller's bit fields (no IO: works on loaded cantools databases).

The message covers the whole response from its first byte (0x62 for UDS 22, 0x41 for OBD-II
01): the multiplexer(s) sit in the echo (one signal of service+identifier, e.g. 0x620101, or the
identifier alone, or nested service and identifier multiplexers), and the request selects the
pages whose multiplexer values its own echo carries. Each signal of a selected page that
[signals] maps ("MESSAGE.SIGNAL") becomes a DiagValue counted from the first byte after the
echo, exactly like an inline [[diagnostics.request.signal]].
"""

from __future__ import annotations

from cantools.database.can import Database, Message, Signal

from agent.core import vss
from agent.core.decode import ndigits
from agent.core.diag_plan import BitSpec, DiagPlan, DiagValue
from agent.core.settings import SignalMap


def find_message(databases: list[Database], name: str) -> Message | None:
    for db in databases:
        try:
            return db.get_message_by_name(name)
        except KeyError:
            continue
    return None


def msb_first(signal: Signal) -> BitSpec | None:
    """The signal's bit field counted from the most significant bit of the message's first byte,
    or None for a little-endian layout the bit fields cannot express (not byte-aligned, > 8 bits)."""
    signed = signal.is_signed
    if signal.byte_order == "big_endian":
        return BitSpec((signal.start // 8) * 8 + 7 - signal.start % 8, signal.length, signed)
    if signal.length <= 8 and signal.start % 8 + signal.length <= 8:
        return BitSpec((signal.start // 8) * 8 + 8 - signal.start % 8 - signal.length, signal.length, signed)
    if signal.start % 8 == 0 and signal.length % 8 == 0:
        return BitSpec(signal.start, signal.length, signed, little=True)
    return None


def _selected(message: Message, signal: Signal, echo: bytes) -> bool:
    """True when every multiplexer above the signal has, in this request's echo, a value of its page."""
    while signal.multiplexer_signal is not None:
        mux = message.get_signal_by_name(signal.multiplexer_signal)
        spec = msb_first(mux)
        if spec is None or spec.end_byte > len(echo):
            return False
        if spec.raw(echo) not in (signal.multiplexer_ids or []):
            return False
        signal = mux
    return True


def dbc_values(plan: DiagPlan, message: Message, mappings: dict[str, SignalMap], where: str,
               file_of: str, problems: list[str]) -> list[DiagValue]:
    """The mapped signals of `message` this request's response carries; problems name file,
    request and message."""
    label = f"{where}: [[diagnostics.request]] {plan.label}: dbc_message \"{message.name}\" ({file_of})"
    echo = plan.echo
    if message.length <= len(echo):
        problems.append(f"{label}: {message.length} bytes, too short to hold the echo "
                        f"{echo.hex(' ').upper()} and any data after it")
        return []
    muxes = [s for s in message.signals if s.is_multiplexer]
    for mux in muxes:
        spec = msb_first(mux)
        if spec is None or spec.end_byte > len(echo):
            problems.append(f'{label}: multiplexer "{mux.name}" must lie in the echo '
                            f"({len(echo)} bytes: {echo.hex(' ').upper()})")
            return []
    if muxes and not any(s.multiplexer_signal is not None and _selected(message, s, echo)
                         for s in message.signals):
        problems.append(f"{label}: no page of its multiplexer matches the echo {echo.hex(' ').upper()}")
        return []
    values: list[DiagValue] = []
    for path, m in mappings.items():
        if m.message != message.name:
            continue
        try:
            signal = message.get_signal_by_name(m.signal)
        except KeyError:
            problems.append(f'{label}: [signals] "{path}": no signal "{m.signal}" in the message')
            continue
        if signal.is_multiplexer or not _selected(message, signal, echo):
            continue
        spec = msb_first(signal)
        if spec is None:
            problems.append(f'{label}: signal "{signal.name}": a little-endian signal longer than a byte '
                            "must start on a byte and span whole bytes")
            continue
        if spec.end_byte > message.length:
            problems.append(f'{label}: signal "{signal.name}" ends at byte {spec.end_byte}, '
                            f"beyond the message's {message.length} bytes: too short")
            continue
        if spec.bit < 8 * len(echo):
            problems.append(f'{label}: signal "{signal.name}" overlaps the echo {echo.hex(" ").upper()}')
            continue
        after = BitSpec(spec.bit - 8 * len(echo), spec.length, spec.signed, spec.little)
        boolean = m.true_values is not None or path in vss.BOOLEAN_PATHS
        by_name = {str(n): int(r) for r, n in (signal.choices or {}).items()}
        true_raw = {1}
        if m.true_values is not None:
            bad = [v for v in m.true_values if not isinstance(v, int) and v not in by_name]
            if bad:
                problems.append(f'{label}: [signals] "{path}": true_values {bad} not in the choices of '
                                f'"{signal.name}" ({", ".join(sorted(by_name)) or "none: use raw numbers"})')
                continue
            true_raw = {v if isinstance(v, int) else by_name[v] for v in m.true_values}
        lo, hi = vss.PLAUSIBLE.get(path, (None, None))
        values.append(DiagValue(
            key=f"{message.name}.{signal.name}", path=path, spec=after, kind="bool" if boolean else "number",
            scale=float(signal.scale), offset=float(signal.offset),
            src_min=None if signal.minimum is None else float(signal.minimum),
            src_max=None if signal.maximum is None else float(signal.maximum),
            true_raw=frozenset(true_raw), map_scale=m.scale, map_offset=m.offset,
            lo=m.min if m.min is not None else lo, hi=m.max if m.max is not None else hi,
            ndigits=ndigits(float(signal.scale) * m.scale), unit=signal.unit or ""))
    if not values:
        problems.append(f"{label}: [signals] maps no signal of the message that this response carries")
    return values
