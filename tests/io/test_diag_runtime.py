"""Bad diagnostic traffic into the agent's ISO-TP ports: counted by reason, never fatal, never a wrong value."""

from __future__ import annotations

from pathlib import Path

import can
import pytest
from diag_helpers import polling

from agent.core import vss
from agent.core.model import PersonaMessage
from agent.core.pipeline import Pipeline
from agent.io.diag_runtime import DiagRuntime
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

ROOT = Path(__file__).resolve().parents[2]
OBD_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev-obd.toml"


def bms_response(soc_raw: int) -> list[bytes]:
    """A 62-byte 22 0101 answer from the BMS in ISO-TP frames (first frame + 8 consecutive)."""
    payload = bytearray(b"\x62\x01\x01" + bytes(59))
    payload[3 + 4] = soc_raw
    frames = [bytes([0x10, len(payload)]) + payload[:6]]
    rest, seq = payload[6:], 1
    while rest:
        frames.append(bytes([0x20 | seq]) + rest[:7].ljust(7, b"\xaa"))
        rest, seq = rest[7:], (seq + 1) & 0xF
    return frames


class Harness:
    def __init__(self) -> None:
        config = load_config(OBD_CONFIG, environ={})
        vehicle = load_vehicle(config)
        self.messages: list[PersonaMessage] = []
        self.pipeline = Pipeline(vehicle, self.messages.append)
        self.sent: list[can.Message] = []
        assert vehicle.diagnostics is not None
        self.diag = DiagRuntime(vehicle.diagnostics, self.pipeline, self.sent.append)
        self.t = 1_000_000.0

    def car(self, n: int = 1) -> None:
        for _ in range(n):
            self.t += 0.1
            assert not self.diag.on_frame(self.t, 0x510, b"\x10\x01" + bytes(6))

    def ask_bms(self) -> None:
        """Poll until the BMS request goes out (other ECUs' requests are let time out)."""
        for _ in range(200):
            self.car()
            before = len(self.sent)
            self.diag.poll(self.t)
            if any(m.arbitration_id == 0x7E4 and m.data[1:4] == b"\x22\x01\x01" for m in self.sent[before:]):
                return
        raise AssertionError("no BMS request")

    def feed(self, can_id: int, data: bytes) -> None:
        self.t += 0.001
        assert self.diag.on_frame(self.t, can_id, data)


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_good_multi_frame_answer_sends_flow_control_and_sets_the_value(h: Harness) -> None:
    h.ask_bms()
    first, *rest = bms_response(101)
    h.feed(0x7EC, first)
    assert h.sent[-1].arbitration_id == 0x7E4 and h.sent[-1].data[0] == 0x30  # flow control to the BMS
    for f in rest:
        h.feed(0x7EC, f)
    assert h.pipeline.state.values[vss.SOC] == 50.5


@pytest.mark.parametrize(("frames", "reason"), [
    (lambda fs: [fs[0], fs[1], fs[3], *fs[4:]], "isotp_out_of_order"),  # a consecutive frame lost
    (lambda fs: [fs[0] + b"\x00" * 8, *fs[1:]], "isotp_malformed"),  # 16 bytes: no classic CAN frame
    (lambda fs: [fs[0], *fs[1:5], *bms_response(40)], "isotp_interrupted"),  # truncated, a new answer
    (lambda fs: fs[1:], "isotp_unexpected_consecutive"),  # no first frame
])
def test_bad_iso_tp_sequences_are_counted_and_never_give_a_wrong_value(h: Harness, frames, reason: str) -> None:  # type: ignore[no-untyped-def]
    h.ask_bms()
    for f in frames(bms_response(101)):
        h.feed(0x7EC, f)
    assert h.diag.counts[reason] >= 1
    assert h.pipeline.state.values.get(vss.SOC) in (None, 20.0)  # 101 never lands; the whole re-sent answer may


def test_foreign_unsolicited_negative_and_short_answers_are_counted(h: Harness) -> None:
    h.feed(0x7E4, b"\x03\x22\x01\x01")  # another tester's request: diagnostic traffic, not the car's
    assert h.diag.poller.last_heard == float("-inf")
    h.feed(0x7EC, b"\x04\x62\x99\x99\x00")  # an answer nobody asked for
    assert h.diag.counts["unsolicited"] == 1
    h.ask_bms()
    h.feed(0x7EC, b"\x03\x7f\x22\x22")  # conditions not correct
    assert h.diag.counts["nrc_0x22"] == 1
    h.t += 40
    h.ask_bms()
    h.feed(0x7EC, b"\x05\x62\x01\x01\x00\x00")  # too short for its values
    assert h.diag.counts["too_short"] >= 1
    assert vss.SOC not in h.pipeline.state.values
    assert h.messages == []


EXTENDED = """
[vehicle]
id = "ext-car"
[can]
interface = "virtual"
[diagnostics]
standard_pids = false
[[diagnostics.request]]
tx_id = 0x18DA44F1
rx_id = 0x18DAF144
service = 0x22
identifier = 0x0101
[[diagnostics.request.signal]]
path = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
bit = 32
length = 8
scale = 0.5
"""


def test_29_bit_ids_request_flow_control_and_answer(tmp_path: Path) -> None:
    path = tmp_path / "ext.toml"
    path.write_text(EXTENDED)
    diag, sent = polling(path)
    t = 1000.0
    assert not diag.on_frame(t, 0x510, bytes(8))  # the car talks
    diag.poll(t)
    assert [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in sent] == [
        (0x18DA44F1, True, b"\x03\x22\x01\x01\xaa\xaa\xaa\xaa")]  # padded to 8 bytes
    first, *rest = bms_response(150)
    assert diag.on_frame(t + 0.02, 0x18DAF144, first)
    assert sent[-1].arbitration_id == 0x18DA44F1 and sent[-1].is_extended_id and sent[-1].data[0] == 0x30
    for f in rest:
        diag.on_frame(t + 0.03, 0x18DAF144, f)
    assert diag.pipeline.state.values[vss.SOC] == 75.0
    assert diag.pipeline.vehicle.can_filters() is None  # nothing broadcast mapped: every frame shows the car awake


AWAKE = f"""
[vehicle]
id = "awake-car"
[can]
interface = "virtual"
dbc = ["{ROOT / 'dbc' / 'carfriend_ev.dbc'}"]
[signals]
"Vehicle.Powertrain.TractionBattery.Charging.IsCharging" = {{ source = "Charger_Status.ChargerState", true_values = ["CHARGING"] }}
[diagnostics]
standard_pids = false
awake_ids = [0x510]
awake_signal = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"
periods = {{ driving = 1, charging = 1, parked = 1 }}
[[diagnostics.request]]
tx_id = 0x7E4
rx_id = 0x7EC
service = 0x22
identifier = 0x0101
[[diagnostics.request.signal]]
path = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
bit = 32
length = 8
scale = 0.5
"""


def test_awake_ids_pass_the_filters_of_a_virtual_bus_and_the_awake_signal_counts_from_broadcast_frames(
        tmp_path: Path) -> None:
    path = tmp_path / "awake.toml"
    path.write_text(AWAKE)
    vehicle = load_vehicle(load_config(path, environ={}))
    assert vehicle.diagnostics is not None
    filters = vehicle.can_filters()
    assert filters is not None and {f["can_id"] for f in filters} == {0x3A0, 0x7EC, 0x510}
    pipeline = Pipeline(vehicle, lambda m: None)
    channel = f"awake-{id(tmp_path)}"
    with can.Bus(interface="virtual", channel=channel, can_filters=filters) as agent_bus, \
            can.Bus(interface="virtual", channel=channel) as car:
        diag = DiagRuntime(vehicle.diagnostics, pipeline, agent_bus.send)
        car.send(can.Message(arbitration_id=0x123, data=bytes(8), is_extended_id=False))  # filtered out
        car.send(can.Message(arbitration_id=0x510, data=b"\x10\x01" + bytes(6), is_extended_id=False))
        got = [agent_bus.recv(timeout=1.0) for _ in range(1)]
        assert [m.arbitration_id for m in got if m is not None] == [0x510]
        assert agent_bus.recv(timeout=0.05) is None  # 0x123 never reached the agent
        t = 1000.0
        assert not diag.on_frame(t, 0x510, bytes(got[0].data))  # type: ignore[union-attr]
        diag.poll(t)
        request = car.recv(timeout=1.0)
        assert request is not None and bytes(request.data[:4]) == b"\x03\x22\x01\x01"
    # The awake signal, decoded from the car's own Charger_Status frame: true counts, false does not.
    for state, counted in ((0, 0), (2, 1)):
        t += 10.0
        assert not diag.on_frame(t, 0x3A0, bytes([state]) + bytes(7))
        pipeline.process(t, 0x3A0, bytes([state]) + bytes(7))
        diag.after_broadcast(t, 0x3A0)
        assert diag.counts["awake_signal"] == counted


def test_an_awake_signal_that_is_polled_or_not_broadcast_is_refused(tmp_path: Path) -> None:
    polled = AWAKE.replace('awake_signal = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"',
                           'awake_signal = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"')
    path = tmp_path / "polled.toml"
    path.write_text(polled)
    with pytest.raises(Exception, match=r"polled.toml: \[diagnostics\] awake_signal .*not mapped from a DBC"):
        load_vehicle(load_config(path, environ={}))


def test_an_awake_signal_that_a_diagnostic_request_also_polls_is_refused(tmp_path: Path) -> None:
    polled = AWAKE + """[[diagnostics.request.signal]]
path = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"
bit = 0
length = 1
"""
    path = tmp_path / "polled.toml"
    path.write_text(polled)
    with pytest.raises(Exception, match=r"awake_signal .*IsCharging\": also polled by request 7E4.220101"):
        load_vehicle(load_config(path, environ={}))
