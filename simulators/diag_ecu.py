"""The reference EV's diagnostic ECUs: OBD-II PIDs and UDS DIDs over ISO-TP, from the model (no IO).

ECUs (request id -> response id):
  0x7E0 -> 0x7E8  VCU: OBD-II service 01 (supported PIDs, 01 MIL/DTC count, 0D speed, 42 control
                  module voltage, A6 odometer), 03/07/0A DTCs
  0x7E4 -> 0x7EC  BMS: OBD-II 01 (00, 01, 20, 40, 5B battery remaining) and UDS 22 0101-0105, laid out
                  as a Kona Electric's BMS answers them (the community's published positions)
  0x7E5 -> 0x7ED  charger: UDS 22 0200 (charge power, time to complete, charge limit, state)
Functional requests to 0x7DF reach the OBD-II ECUs. Answers come after a latency, sometimes
as responsePending (0x7F 78) first or as a conditionsNotCorrect NRC (0x7F 22), an unknown DID
gets requestOutOfRange (0x31); an asleep car answers nothing. Multi-frame answers wait for
the tester's flow control, as the Kona's ECUs do. ISO-TP is can-isotp's, as in the agent.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import can
import isotp

from simulators.model import EVModel
from simulators.scenario import dtc_number

FUNCTIONAL_ID = 0x7DF
VCU, BMS, OBC = 0x7E0, 0x7E4, 0x7E5
PENDING_DELAY_S = 0.1
LATENCY_S = 0.02  # mean; each answer takes 0.5x-1.5x of it
NRC_RATE = 0.01  # share of answers that are conditionsNotCorrect (0x7F xx 22) instead
PENDING_RATE = 0.02  # share of answers preceded by responsePending (0x7F xx 78)


def _bitmap(pids: set[int], base: int) -> bytes:
    """Supported PIDs base+1..base+32; the last bit says whether the next bitmap exists."""
    shown = {p for p in pids if base < p <= base + 32}
    if any(p > base + 32 for p in pids):
        shown.add(base + 32)
    bits = 0
    for pid in shown:
        bits |= 1 << (32 - (pid - base))
    return bits.to_bytes(4, "big")


def _u8(x: float) -> int:
    return max(0, min(255, round(x)))


def _u16(x: float) -> int:
    return max(0, min(0xFFFF, round(x)))


def bms_0101(m: EVModel) -> bytes:
    """The Kona-layout BMS block: SOC, charging and plug flags, current, voltage, temperatures, 12 V."""
    d = bytearray(59)
    d[0:4] = b"\xff\xf7\xe7\xff"
    d[4] = _u8(m.displayed_soc_pct * 2)
    charging = m.charger.state == "CHARGING"
    d[9] = (0x80 if charging else 0) | (0x40 if m.charger.plugged and m.charger.kind == "DC" else 0) | \
        (0x20 if m.charger.plugged and m.charger.kind == "AC" else 0)
    d[10:12] = struct.pack(">h", max(-32768, min(32767, round(m.pack_current_a * 10))))  # + = discharge
    d[12:14] = struct.pack(">H", _u16(m.pack_voltage_v * 10))
    t = round(m.pack_temp_c)
    d[14], d[15] = (t + 2) & 0xFF, (t - 1) & 0xFF
    d[16:20] = bytes([t & 0xFF] * 4)
    d[22] = (t - 2) & 0xFF
    cell = m.pack_voltage_v / 96
    d[23], d[24], d[25], d[26] = _u8(cell * 50 + 0.5), 7, _u8(cell * 50 - 0.5), 61
    d[29] = _u8(m.aux_voltage_v * 10)
    d[50] = 0x04 if m.ignition != "OFF" else 0
    d[51:53] = struct.pack(">H", _u16(m.pack_voltage_v))
    d[57:59] = struct.pack(">H", 3000)
    return bytes(d)


def bms_cells(m: EVModel, block: int) -> bytes:
    cell = _u8(m.pack_voltage_v / 96 * 50)
    return b"\xff\xff\xff\xff" + bytes([cell] * 32)


def bms_0105(m: EVModel) -> bytes:
    d = bytearray(43)
    d[25:27] = struct.pack(">H", 976)  # state of health 97.6 %
    d[31] = _u8(m.displayed_soc_pct * 2)
    cell = _u8(m.pack_voltage_v / 96 * 50)
    d[34], d[35] = cell, cell
    return bytes(d)


def charger_0200(m: EVModel) -> bytes:
    ttc = m.time_to_complete_min()
    return struct.pack(">HHBBB", _u16(m.charger.power_kw * 100), 0xFFFF if ttc >= 4095 else ttc,
                       m.charge_limit_pct, {"IDLE": 0, "SCHEDULED": 1, "CHARGING": 2, "COMPLETE": 3,
                                            "STOPPED": 4, "FAULT": 5}[m.charger.state], int(m.charger.plugged))


def _dtcs(m: EVModel, statuses: tuple[str, ...]) -> bytes:
    codes = [dtc_number(c) for c, s in m.dtcs.items() if s in statuses]
    return bytes([len(codes)]) + b"".join(c.to_bytes(2, "big") for c in codes)


Answer = Callable[[EVModel], bytes]


@dataclass
class Ecu:
    tx_id: int  # the tester's request id
    rx_id: int  # this ECU's response id
    pids: dict[int, Answer] = field(default_factory=dict)  # service 01
    dids: dict[int, Answer] = field(default_factory=dict)  # service 22
    obd_dtcs: bool = False

    def answer(self, m: EVModel, request: bytes) -> bytes | None:
        """The positive or negative response; None: silence (an unsupported OBD-II PID)."""
        service = request[0]
        if service == 0x01 and len(request) == 2:
            pid = request[1]
            if pid in self.pids:
                return bytes([0x41, pid]) + self.pids[pid](m)
            if pid % 0x20 == 0 and (pid == 0 or any(p > pid for p in self.pids)):
                return bytes([0x41, pid]) + _bitmap(set(self.pids), pid)
            return None
        if service in (0x03, 0x07, 0x0A) and self.obd_dtcs:
            status = {0x03: ("ACTIVE",), 0x07: ("PENDING",), 0x0A: ("ACTIVE",)}[service]
            return bytes([service + 0x40]) + _dtcs(m, status)
        if service == 0x22 and len(request) == 3 and self.dids:
            did = int.from_bytes(request[1:3], "big")
            if did in self.dids:
                return bytes([0x62]) + request[1:3] + self.dids[did](m)
            return bytes([0x7F, 0x22, 0x31])
        if service in (0x01, 0x03, 0x07, 0x0A):
            return None
        return bytes([0x7F, service, 0x11])  # serviceNotSupported


def reference_ecus() -> list[Ecu]:
    vcu = Ecu(VCU, VCU + 8, obd_dtcs=True, pids={
        0x01: lambda m: bytes([(0x80 if any(s == "ACTIVE" for s in m.dtcs.values()) else 0)
                               | min(127, sum(s == "ACTIVE" for s in m.dtcs.values())), 0x07, 0xE5, 0x00]),
        0x0D: lambda m: bytes([_u8(m.speed_kmh)]),
        0x42: lambda m: _u16(m.aux_voltage_v * 1000).to_bytes(2, "big"),
        0xA6: lambda m: round(m.odometer_km * 10).to_bytes(4, "big"),
    })
    bms = Ecu(BMS, BMS + 8, pids={
        0x01: lambda m: b"\x00\x07\xe5\x00",
        0x5B: lambda m: bytes([_u8(m.displayed_soc_pct * 255 / 100)]),
    }, dids={0x0101: bms_0101, 0x0102: lambda m: bms_cells(m, 1), 0x0103: lambda m: bms_cells(m, 2),
             0x0104: lambda m: bms_cells(m, 3), 0x0105: bms_0105})
    obc = Ecu(OBC, OBC + 8, dids={0x0200: charger_0200})
    return [vcu, bms, obc]


@dataclass
class _Pending:
    at: float
    payload: bytes
    ecu: Ecu


class DiagEcus:
    """The car's diagnostic side: requests in (frames), responses out (frames), on simulated time."""

    def __init__(self, model: EVModel, seed: int = 0, *, latency_s: float | None = None,
                 nrc_rate: float | None = None, pending_rate: float | None = None) -> None:
        self.model = model
        self.rng = random.Random(seed * 31 + 5)
        self.latency_s = LATENCY_S if latency_s is None else latency_s
        self.nrc_rate = NRC_RATE if nrc_rate is None else nrc_rate
        self.pending_rate = PENDING_RATE if pending_rate is None else pending_rate
        self.ecus = {e.tx_id: e for e in reference_ecus()}
        self.out: list[can.Message] = []
        self._now = 0.0
        self._queue: list[_Pending] = []
        self._layers = {tx: self._layer(e) for tx, e in self.ecus.items()}
        self.requests = 0
        self.answered = 0

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self.ecus) | {FUNCTIONAL_ID}

    def _layer(self, ecu: Ecu) -> isotp.TransportLayerLogic:
        rx: list[isotp.CanMessage] = []

        def txfn(msg: isotp.CanMessage) -> None:
            self.out.append(can.Message(timestamp=round(self._now, 6), arbitration_id=msg.arbitration_id,
                                        data=bytes(msg.data), is_extended_id=False))
            self._now += 0.0005  # back-to-back consecutive frames at 500 kbit/s

        layer = isotp.TransportLayerLogic(
            rxfn=lambda _t: rx.pop(0) if rx else None, txfn=txfn,
            address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=ecu.rx_id, rxid=ecu.tx_id),
            params={"tx_padding": 0xAA, "blocksize": 0, "stmin": 0, "logger_name": "carfriend.sim.isotp",
                    "wait_func": lambda _s: None})
        layer.rx_frames = rx  # type: ignore[attr-defined]
        return layer

    def on_frame(self, frame_id: int, data: bytes, now: float, awake: bool) -> None:
        """A frame from the tester: a request (or a flow control for an answer under way)."""
        if not awake:
            return  # asleep: ECUs hear nothing, answer nothing
        targets = [t for t in self.ecus if frame_id == t or (frame_id == FUNCTIONAL_ID and self.ecus[t].pids)]
        for tx in targets:
            layer = self._layers[tx]
            layer.rx_frames.append(isotp.CanMessage(arbitration_id=tx, data=data))  # type: ignore[attr-defined]
            self._now = now
            layer.process()
            while (request := layer.recv()) is not None:
                self._request(self.ecus[tx], bytes(request), now, functional=frame_id == FUNCTIONAL_ID)

    def _request(self, ecu: Ecu, request: bytes, now: float, functional: bool) -> None:
        self.requests += 1
        answer = ecu.answer(self.model, request)
        if answer is None:
            return
        at = now + self.latency_s * (0.5 + self.rng.random())
        if answer[0] != 0x7F and not functional:
            roll = self.rng.random()
            if roll < self.nrc_rate:
                answer = bytes([0x7F, request[0], 0x22])
            elif roll < self.nrc_rate + self.pending_rate:
                self._queue.append(_Pending(at, bytes([0x7F, request[0], 0x78]), ecu))
                at += PENDING_DELAY_S
        self._queue.append(_Pending(at, answer, ecu))

    def due(self, now: float) -> list[can.Message]:
        """Response frames whose time has come, in order."""
        ready = sorted((p for p in self._queue if p.at <= now), key=lambda p: p.at)
        self._queue = [p for p in self._queue if p.at > now]
        for p in ready:
            layer = self._layers[p.ecu.tx_id]
            self._now = p.at
            if layer.transmitting():
                layer.stop_sending()  # the tester never sent its flow control: give up that answer
            layer.send(p.payload)
            layer.process()
            self.answered += 1
        out, self.out = self.out, []
        return out

    def next_at(self) -> float | None:
        return min((p.at for p in self._queue), default=None)
