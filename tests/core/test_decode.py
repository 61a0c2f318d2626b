"""Decoding: bad frames are counted, never raised; only checked values reach the state."""

from __future__ import annotations

from frames import EV_CONFIG, encode
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import vss
from agent.core.decode import format_dtc
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

VEHICLE = load_vehicle(load_config(EV_CONFIG))
IDS = sorted(VEHICLE.plans)


def test_unknown_id_and_short_payload_are_counted_not_raised() -> None:
    decoder = VEHICLE.new_decoder()
    decoder.decode(0.0, 0x7FF, b"\x00" * 8)
    fid, data = encode("BMS_Status", SOC=50)
    decoder.decode(0.0, fid, data[:3])
    assert decoder.drops.unknown_id == 1 and decoder.drops.short_payload == 1
    assert decoder.state.values == {}


def test_counter_only_change_skips_decoding_but_keeps_values_fresh() -> None:
    decoder = VEHICLE.new_decoder()
    for i in range(10):
        fid, data = encode("Drive_State", VehicleSpeed=42.0, Gear="D", Drive_Counter=i % 16, Drive_Checksum=i * 7 % 256)
        decoder.decode(float(i), fid, data)
    assert decoder.decoded == 1 and decoder.unchanged == 9
    assert decoder.state.stamps[vss.SPEED] == 9.0 and decoder.state.values[vss.SPEED] == 42.0


def test_not_available_time_to_complete_never_reaches_state() -> None:
    decoder = VEHICLE.new_decoder()
    fid, data = encode("Charger_Status", TimeToComplete=4095, ChargeLimit=80)
    decoder.decode(0.0, fid, data)
    assert vss.TIME_TO_COMPLETE not in decoder.state.values
    assert decoder.state.values[vss.CHARGE_LIMIT] == 80
    assert decoder.drops.not_available == 1


def test_value_outside_dbc_range_is_dropped() -> None:
    decoder = VEHICLE.new_decoder()
    fid, data = encode("BMS_Status", SOC=50)
    raw = bytearray(data)
    raw[0:2] = (20000).to_bytes(2, "little")  # 200.00 %: beyond the DBC's [0|100]
    decoder.decode(0.0, fid, bytes(raw))
    assert vss.SOC not in decoder.state.values and decoder.drops.out_of_range >= 1


def test_enum_and_boolean_mappings() -> None:
    decoder = VEHICLE.new_decoder()
    fid, data = encode("Charger_Status", ChargerState="CHARGING", PlugState="CONNECTED", ChargeLimit=90)
    decoder.decode(0.0, fid, data)
    fid, data = encode("Drive_State", Gear="P")
    decoder.decode(0.0, fid, data)
    assert decoder.state.values[vss.IS_CHARGING] is True
    assert decoder.state.values[vss.CABLE_CONNECTED] is True
    assert decoder.state.values[vss.GEAR] == vss.GEAR_PARK  # VSS int8: 126 = P


def test_dtc_broadcast_becomes_sae_code_in_dtc_list() -> None:
    decoder = VEHICLE.new_decoder()
    fid, data = encode("DTC_Broadcast", DTC_Code=0x0A80, DTC_Status="ACTIVE")
    assert decoder.decode(0.0, fid, data) == (vss.DTC_LIST,)
    assert decoder.state.values[vss.DTC_LIST] == ["P0A80"]
    fid, data = encode("DTC_Broadcast", DTC_Code=0x0A80, DTC_Status="INACTIVE")
    decoder.decode(1.0, fid, data)
    assert decoder.state.values[vss.DTC_LIST] == []


def test_format_dtc() -> None:
    assert format_dtc(0x0A80) == "P0A80"
    assert format_dtc(0xC100) == "U0100"
    assert format_dtc(0x0A801C, 24) == "P0A80-1C"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(IDS + [0x123, 0x7FF, 0x1FFFFFFF]), st.binary(max_size=8)), max_size=50))
def test_random_frames_never_raise_and_never_put_implausible_values_in_state(frames: list[tuple[int, bytes]]) -> None:
    decoder = VEHICLE.new_decoder()
    for i, (fid, data) in enumerate(frames):
        decoder.decode(float(i), fid, data)
    assert decoder.frames == len(frames)
    for path, (lo, hi) in vss.PLAUSIBLE.items():
        value = decoder.state.values.get(path)
        assert value is None or lo <= value <= hi, (path, value)
