"""What real DBCs do to a mapping: overlapping signals, wrong ranges, DTC 0, placeholder messages,
signals past the payload, and where drops come from."""

from __future__ import annotations

from pathlib import Path

import cantools
import pytest
from frames import EV_DBC, START, encode

from agent.cli.check_config import check_config
from agent.core import vss
from agent.core.errors import ConfigError
from agent.core.pipeline import Pipeline
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

# 0x100: Speed and SpeedLowByte share bits (integers: the precompiled path); 0x101: the same with
# a float signal (cantools decodes it, one mapped signal at a time); 0x102 declares a signal
# reaching past its 4 bytes; 0x103 a pack current with a DBC range that forbids discharge.
DBC = """VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 Overlap: 8 ECU
 SG_ Speed : 0|16@1+ (0.01,0) [0|300] "km/h" ECU
 SG_ SpeedLowByte : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ SOC : 16|8@1+ (0.5,0) [0|100] "%" ECU
BO_ 257 OverlapFloat: 8 ECU
 SG_ Temp : 0|32@1- (1,0) [-50|90] "degC" ECU
 SG_ TempByte : 8|8@1+ (1,0) [0|255] "" ECU
 SG_ Voltage : 32|16@1+ (0.1,0) [0|1000] "V" ECU
BO_ 258 PastEnd: 4 ECU
 SG_ Far : 24|16@1+ (1,0) [0|0] "" ECU
BO_ 259 Pack: 8 ECU
 SG_ Battery_Current : 0|16@1+ (0.1,-819.2) [0|819] "A" ECU
BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX
 SG_ Displayed_SOC : 0|8@1+ (0.5,0) [0|100] "%" Vector__XXX
SIG_VALTYPE_ 257 Temp : 1;
"""


def profile(tmp_path: Path, signals: str, dbc: str = DBC) -> Path:
    (tmp_path / "car.dbc").write_text(dbc)
    path = tmp_path / "car.toml"
    path.write_text(f'[vehicle]\nid = "t"\n[can]\ninterface = "virtual"\ndbc = ["car.dbc"]\n[signals]\n{signals}')
    return path


def db() -> cantools.database.Database:
    return cantools.database.load_string(DBC, strict=False)  # type: ignore[return-value]


def test_non_overlapping_mapped_signals_of_an_overlapping_message_get_values(tmp_path: Path) -> None:
    config = load_config(profile(tmp_path, '"Vehicle.Speed" = "Overlap.Speed"\n'
                                           f'"{vss.SOC}" = "Overlap.SOC"\n'
                                           f'"{vss.PACK_TEMP}" = "OverlapFloat.Temp"\n'
                                           f'"{vss.PACK_VOLTAGE}" = "OverlapFloat.Voltage"\n'), environ={})
    vehicle = load_vehicle(config)
    assert any("overlapping signals (Speed, SpeedLowByte)" in w for w in vehicle.warnings)
    decoder = vehicle.new_decoder()
    speed = (4242).to_bytes(2, "little") + bytes([150]) + bytes(5)  # 42.42 km/h, SOC 75 %
    volts = bytes.fromhex("0000c841") + (3601).to_bytes(2, "little") + bytes(2)  # 25.0 degC as a float
    decoder.decode(START, 0x100, speed)
    decoder.decode(START, 0x101, volts)
    values = decoder.state.values
    assert values["Vehicle.Speed"] == 42.42 and values[vss.SOC] == 75.0
    assert values[vss.PACK_TEMP] == 25.0 and values[vss.PACK_VOLTAGE] == 360.1
    assert decoder.drops.decode_error == 0


def test_a_signal_reaching_past_its_message_is_named_by_check_config(tmp_path: Path) -> None:
    problems, _notes = check_config(profile(tmp_path, '"Vehicle.Speed" = "PastEnd.Far"\n'))
    assert any('"PastEnd.Far" cannot be decoded' in p and "past the message's 4 bytes" in p for p in problems)


def test_a_mapping_range_replaces_the_dbc_range(tmp_path: Path) -> None:
    discharge = ((-50.0 + 819.2) / 0.1).__round__().to_bytes(2, "little") + bytes(6)  # -50 A
    strict = load_vehicle(load_config(profile(tmp_path, f'"{vss.PACK_CURRENT}" = "Pack.Battery_Current"\n'),
                                      environ={})).new_decoder()
    strict.decode(START, 0x103, discharge)
    assert vss.PACK_CURRENT not in strict.state.values and strict.drops.out_of_range == 1  # the DBC's [0|819]
    own = load_vehicle(load_config(profile(
        tmp_path, f'"{vss.PACK_CURRENT}" = {{ source = "Pack.Battery_Current", min = -1000, max = 1000 }}\n'),
        environ={})).new_decoder()
    own.decode(START, 0x103, discharge)
    assert own.state.values[vss.PACK_CURRENT] == -50.0 and own.drops.out_of_range == 0
    own.decode(START + 1, 0x103, (20000).to_bytes(2, "little") + bytes(6))  # 1180.8 A: past the mapping's max
    assert own.state.values[vss.PACK_CURRENT] == -50.0 and own.drops.implausible == 1


def test_a_signal_of_the_placeholder_message_is_explained(tmp_path: Path) -> None:
    problems, _ = check_config(profile(tmp_path, f'"{vss.SOC}" = "VECTOR__INDEPENDENT_SIG_MSG.Displayed_SOC"\n'))
    assert len(problems) == 1
    assert "not a CAN message" in problems[0] and "never appears on the bus" in problems[0]
    assert "in none of the DBC files" not in problems[0]


def dtc_vehicle(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "dtc.toml"
    path.write_text(f'[vehicle]\nid = "t"\n[can]\ninterface = "virtual"\ndbc = ["{EV_DBC}"]\n[signals]\n'
                    f'"{vss.DTC_LIST}" = "DTC_Broadcast.DTC_Code"\n')  # no status signal: every code is active
    return load_vehicle(load_config(path, environ={}))


def test_a_dtc_of_value_0_means_an_empty_dtc_list_never_p0000(tmp_path: Path) -> None:
    decoder = dtc_vehicle(tmp_path).new_decoder()
    fid, zero = encode("DTC_Broadcast", DTC_Code=0, DTC_Index=0, DTC_Count=0)
    assert decoder.decode(START, fid, zero) == (vss.DTC_LIST,)
    assert decoder.state.values[vss.DTC_LIST] == []
    fid, fault = encode("DTC_Broadcast", DTC_Code=0x0A80, DTC_Index=0, DTC_Count=1)
    decoder.decode(START + 1, fid, fault)
    assert decoder.state.values[vss.DTC_LIST] == ["P0A80"]
    decoder.decode(START + 2, fid, zero)  # the ECU says: no code any more
    assert decoder.state.values[vss.DTC_LIST] == [] and not decoder.state.dtc_seen


def test_a_replay_with_one_real_fault_sends_one_dtc_message(tmp_path: Path) -> None:
    sent = []
    pipeline = Pipeline(dtc_vehicle(tmp_path), sent.append)
    fid, zero = encode("DTC_Broadcast", DTC_Code=0)
    fid, fault = encode("DTC_Broadcast", DTC_Code=0x0A80, DTC_Count=1)
    frames = [(START + i, fid, fault if 100 <= i < 200 else zero) for i in range(300)]
    pipeline.process_frames(frames)
    assert [(m.kind, m.data["code"]) for m in sent] == [("dtc.new", "P0A80")]


def test_drops_say_which_id_message_and_signal(tmp_path: Path) -> None:
    config = load_config(profile(tmp_path, f'"{vss.PACK_CURRENT}" = "Pack.Battery_Current"\n'
                                           f'"{vss.SOC}" = "Overlap.SOC"\n'), environ={})
    pipeline = Pipeline(load_vehicle(config), lambda m: None, trace_drops=True)
    discharge = (8000).to_bytes(2, "little") + bytes(6)  # -19.2 A: outside the DBC's range
    frames = [(START + i, 0x103, discharge[:1] if i == 5 else discharge[:1] + bytes([30 + i % 2]) + bytes(6))
              for i in range(10)]
    frames += [(START + 20 + i, 0x7DF if i % 3 else 0x123, b"\x00") for i in range(9)]
    pipeline.process_frames(frames)
    top = pipeline.decoder.drops.top()
    # 9 full frames, but the one after the short frame repeats the last decoded payload: 8 decodes
    assert top["out_of_range"] == [("Pack.Battery_Current", 8)]
    assert top["short_payload"] == [("Pack", 1)]
    assert top["unknown_id"] == [("0x7DF", 6), ("0x123", 3)]


def test_the_live_decoder_counts_unknown_ids_per_id_too(tmp_path: Path) -> None:
    decoder = load_vehicle(load_config(profile(tmp_path, f'"{vss.SOC}" = "Overlap.SOC"\n'), environ={})).new_decoder()
    for fid in (0x7DF, 0x7DF, 0x18DAF110):
        decoder.decode(START, fid, b"\x00")
    assert decoder.drops.top()["unknown_id"] == [("0x7DF", 2), ("0x18DAF110", 1)]


def test_a_load_failure_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_vehicle(load_config(profile(tmp_path, '"Vehicle.Speed" = "PastEnd.Far"\n'
                                                   f'"{vss.SOC}" = "Nope.SOC"\n'), environ={}))
    assert len(exc.value.problems) == 2


def test_check_config_reports_schema_and_mapping_errors_in_one_run(tmp_path: Path) -> None:
    path = profile(tmp_path, f'"{vss.SOC}" = "Overlap.SOCC"\n'
                             '"Vehicle.Speed" = { source = "Overlap.Speed", sclae = 2 }\n'
                             f'"{vss.PACK_VOLTAGE}" = "OverlapFloat.Voltage"\n')
    path.write_text(path.read_text().replace('id = "t"', 'id = "t"\npersna = "typo"'))
    problems, _ = check_config(path)
    assert any("[vehicle] persna: Extra inputs are not permitted" in p for p in problems)
    assert any('"Vehicle.Speed".sclae: Extra inputs are not permitted' in p for p in problems)
    assert any('has no signal "SOCC" (did you mean "SOC"?)' in p for p in problems)
    assert not any("OverlapFloat" in p for p in problems)  # the valid mapping is fine


def test_check_config_does_not_guess_mappings_when_the_dbc_list_is_invalid(tmp_path: Path) -> None:
    path = profile(tmp_path, f'"{vss.SOC}" = "Overlap.SOCC"\n')
    path.write_text(path.read_text().replace('dbc = ["car.dbc"]', 'dbc = "car.dbc"\npersna = 1'))
    problems, _ = check_config(path)
    assert problems and not any("SOCC" in p for p in problems)
