"""The benchmark's bus traffic: the reference EV's messages plus other ECUs' chatter (writes files).

20 messages, ~150 signals, cycle times 10 ms - 1 s. About 80 % of frames repeat their id's
previous payload apart from rolling counters and checksums (on 7 of the 20 messages), so
exact-repeat detection alone does not help. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cantools
from cantools.database.can import Database, Message

from simulators.frames import crc8_j1850

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"
REFERENCE_DBC = ROOT / "dbc" / "carfriend_ev.dbc"
TESLA_DBC = ROOT.parent / "shared" / "realdata" / "tesla" / "Model3CAN.dbc"
TESLA_CONFIG = ROOT / "config" / "vehicles" / "tesla-model3.toml"

CHANGE_P = 0.2  # chance that a frame carries a new value: ~80 % of frames repeat
# Other ECUs on the same bus (body, chassis, ADAS): (frame id, cycle ms, with counter+checksum)
FILLER = [(0x100, 10, True), (0x101, 10, True), (0x120, 20, True), (0x140, 50, True),
          (0x180, 100, True), (0x200, 100, False), (0x240, 200, False), (0x300, 500, False),
          (0x400, 1000, False), (0x480, 1000, False)]
FILLER_SIGNALS = 10  # 8 x 6-bit data signals, a 4-bit counter, an 8-bit checksum


def filler_dbc_text() -> str:
    lines = ['VERSION ""', "", "NS_ :", "", "BS_:", "", "BU_: ECU", ""]
    for fid, _cycle, _protected in FILLER:
        name = f"Other_{fid:03X}"
        lines.append(f"BO_ {fid} {name}: 8 ECU")
        for i in range(8):
            lines.append(f' SG_ {name}_S{i} : {6 * i}|6@1+ (0.5,0) [0|31.5] "" Vector__XXX')
        lines.append(f' SG_ {name}_Counter : 48|4@1+ (1,0) [0|15] "" Vector__XXX')
        lines.append(f' SG_ {name}_Checksum : 56|8@1+ (1,0) [0|255] "" Vector__XXX')
        lines.append("")
    lines.append('BA_DEF_ BO_  "GenMsgCycleTime" INT 0 65535;')
    lines.append('BA_DEF_DEF_  "GenMsgCycleTime" 0;')
    lines.extend(f'BA_ "GenMsgCycleTime" BO_ {fid} {cycle};' for fid, cycle, _p in FILLER)
    return "\n".join(lines) + "\n"


@dataclass
class Traffic:
    """Frames as (ts, can_id, data) plus the files and database that describe them."""

    frames: list[tuple[float, int, bytes]]
    database: Database
    dbc_files: list[Path]
    messages: int
    signals: int

    @property
    def repeat_share(self) -> float:
        last: dict[int, bytes] = {}
        same = 0
        for _ts, fid, data in self.frames:
            same += last.get(fid) == data
            last[fid] = data
        return same / len(self.frames)


class _Sender:
    """One message's raw values, a random walk; counter and checksum roll on every frame."""

    def __init__(self, message: Message, rng: random.Random, protected: bool) -> None:
        self.message = message
        self.rng = rng
        self.cycle_s = (message.cycle_time or 1000) / 1000.0
        self.counter = next((s for s in message.signals if s.name.endswith("Counter")), None) if protected else None
        self.checksum = next((s for s in message.signals if s.name.endswith("Checksum")), None) if protected else None
        volatile = {s.name for s in (self.counter, self.checksum) if s is not None}
        self.data_signals = [s for s in message.signals if s.name not in volatile and not s.is_multiplexer]
        self.mux = next((s for s in message.signals if s.is_multiplexer), None)
        self.raw = {s.name: self._initial(s) for s in message.signals}
        self.n = 0
        self.payload = self._encode()

    def _initial(self, signal) -> int:  # type: ignore[no-untyped-def]
        lo, hi = self._raw_range(signal)
        return (lo + hi) // 2

    @staticmethod
    def _raw_range(signal) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        if signal.minimum is not None and signal.maximum is not None and signal.minimum != signal.maximum:
            a = round((signal.minimum - signal.offset) / signal.scale)
            b = round((signal.maximum - signal.offset) / signal.scale)
            lo, hi = min(a, b), max(a, b)
        else:
            lo, hi = (-(1 << (signal.length - 1)), (1 << (signal.length - 1)) - 1) if signal.is_signed \
                else (0, (1 << signal.length) - 1)
        top = (1 << signal.length) - 2  # all-ones often means "not available"
        return lo, min(hi, top) if not signal.is_signed else hi

    def next_payload(self) -> bytes:
        self.n += 1
        changed = self.rng.random() < CHANGE_P
        if changed and self.data_signals:
            s = self.rng.choice(self.data_signals)
            lo, hi = self._raw_range(s)
            self.raw[s.name] = max(lo, min(hi, self.raw[s.name] + self.rng.choice((-1, 1))))
        if self.mux is not None:  # multiplexed pages alternate
            self.raw[self.mux.name] = self.n % 2
        if changed or self.counter is not None or self.mux is not None:
            self.payload = self._encode()
        return self.payload

    def _encode(self) -> bytes:
        if self.counter is not None:
            self.raw[self.counter.name] = self.n % 16
        data = bytearray(self.message.encode(self.raw, scaling=False, strict=False, padding=False))
        if self.checksum is not None:
            data[self.checksum.start // 8] = crc8_j1850(bytes(data[:7]))
        return bytes(data)


def generate(workdir: Path, n_frames: int, seed: int = 6) -> Traffic:
    """The same traffic for a seed: frames in time order, the DBCs written under workdir."""
    filler = workdir / "other_ecus.dbc"
    filler.write_text(filler_dbc_text())
    db = cantools.database.Database(strict=False)
    db.add_dbc_file(str(REFERENCE_DBC))
    db.add_dbc_file(str(filler))
    rng = random.Random(seed)
    protected = {fid for fid, _c, p in FILLER if p} | {0xA0, 0x1F2}
    senders = [_Sender(m, rng, m.frame_id in protected) for m in db.messages if m.cycle_time]
    frames: list[tuple[float, int, bytes]] = []
    t0 = 1_700_000_000.0
    ticks = {id(s): 0 for s in senders}
    while len(frames) < n_frames:
        s = min(senders, key=lambda s: ticks[id(s)] * s.cycle_s)
        ts = t0 + ticks[id(s)] * s.cycle_s
        ticks[id(s)] += 1
        frames.append((ts, s.message.frame_id, s.next_payload()))
    return Traffic(frames, db, [REFERENCE_DBC, filler], len(senders),
                   sum(len(s.message.signals) for s in senders))
