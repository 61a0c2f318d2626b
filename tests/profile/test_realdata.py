"""Real cars' captures through the shipped vehicle profiles (../shared/realdata, not copied here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.replay import replay
from agent.core import vss
from agent.core.pipeline import Pipeline
from agent.io.sources import read_log
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

PROFILES = Path(__file__).resolve().parents[2] / "config" / "vehicles"


def run_profile(profile: str, dbc: Path, log: Path) -> tuple[Pipeline, list[list[tuple[float, float]]]]:
    vehicle = load_vehicle(load_config(PROFILES / profile, dbc_override=[dbc], environ={}))
    pipeline = Pipeline(vehicle, lambda m: None)
    return pipeline, []


def test_kona_bench_idle(realdata: Path) -> None:
    pipeline, _ = run_profile("kona-ev.toml", realdata / "kona/pcan.dbc", realdata / "kona/bms-idle-30s.asc")
    replay(pipeline, realdata / "kona/bms-idle-30s.asc")
    values = pipeline.state.values
    assert values[vss.SOC] == 50.0
    assert abs(values[vss.PACK_VOLTAGE] - 360.8) < 0.2
    assert abs(values[vss.AUX_VOLTAGE] - 12.2) < 0.1


def test_kona_power_off_on_12v_rises_at_ready(realdata: Path) -> None:
    log = realdata / "kona/230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
    pipeline, _ = run_profile("kona-ev.toml", realdata / "kona/pcan.dbc", log)
    aux: list[float] = []
    pack: list[float] = []
    for ts, can_id, data in read_log(log):
        if can_id is not None:
            pipeline.process(ts, can_id, data)
        values = pipeline.state.values
        if vss.AUX_VOLTAGE in values and (not aux or aux[-1] != values[vss.AUX_VOLTAGE]):
            aux.append(values[vss.AUX_VOLTAGE])
        if vss.PACK_VOLTAGE in values:
            pack.append(values[vss.PACK_VOLTAGE])
    assert abs(aux[0] - 12.0) <= 0.2, aux[:5]
    assert abs(max(aux) - 13.4) <= 0.2
    assert min(pack) == 0.0 and abs(max(pack) - 355) < 5  # contactors open, then closed at READY
    assert abs(pipeline.state.values[vss.SOC] - 36.5) < 1.0


def test_tesla_implausible_12v_never_reaches_state(realdata: Path) -> None:
    log = realdata / "tesla/openccs-2019-model3.csv"
    pipeline, _ = run_profile("tesla-model3.toml", realdata / "tesla/Model3CAN.dbc", log)
    replay(pipeline, log)
    values = pipeline.state.values
    assert vss.AUX_VOLTAGE not in values  # 0.049 V every time: rejected by plausibility
    assert pipeline.decoder.drops.implausible > 0
    assert abs(values[vss.SOC] - 59) < 1.5 and abs(values[vss.PACK_VOLTAGE] - 370) < 5
    assert abs(values["Vehicle.LowVoltageBattery.NominalVoltage"] - 13.9) < 0.2
    assert values[vss.IS_CHARGING] is False
    assert vss.TIME_TO_COMPLETE not in values  # 4095 = not available


def test_leaf_profile_resolves_against_the_aze0_dbc(realdata: Path) -> None:
    vehicle = load_vehicle(load_config(PROFILES / "nissan-leaf.toml",
                                       dbc_override=[realdata / "leaf/EV-can_AZE0.dbc"], environ={}))
    assert {vss.SOC, vss.IS_CHARGING, vss.TIME_TO_COMPLETE} <= vehicle.mapped_paths


def test_dbcs_that_strict_cantools_rejects_load_with_a_warning(realdata: Path, caplog) -> None:
    from agent.profile.dbc import load_dbc

    assert len(load_dbc(realdata / "leaf/EV-can_ZE1.dbc").messages) == 52  # overlapping signals
    assert len(load_dbc(realdata / "kona/pcan.dbc").messages) == 107  # no BS_:/BU_: lines
    assert sum("lenient mode" in r.message for r in caplog.records) == 2


I3_PROFILE = """[vehicle]
id = "i3-0001"
battery_capacity_kwh = 33.0
[can]
interface = "virtual"
dbc = ["{dbc}"]
[signals]
"Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed" = "BMSMsg432.Display_SOC"
"Vehicle.Powertrain.TractionBattery.CurrentVoltage" = "BMSMsg112.Battery_Volts"
# The DBC says [0|819] with offset -819.2: every discharge value would be out of range.
"Vehicle.Powertrain.TractionBattery.CurrentCurrent" = {{ source = "BMSMsg112.Battery_Current"{range} }}
# LIMMsg3B4 has overlapping signals (PP_Status/HW_Charger_EN/CHG_Flap_Status); these two are not.
"Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected" = {{ source = "LIMMsg3B4.Plug_Connection", true_values = ["Plugged"] }}
# The control pilot's duty cycle: the current the charging station allows.
"Vehicle.Powertrain.TractionBattery.Charging.MaximumChargingCurrent.Phase1" = "LIMMsg3B4.Pilot_Current"
"""


def i3_pipeline(realdata: Path, tmp_path: Path, range_: str = "") -> Pipeline:
    path = tmp_path / "i3.toml"
    path.write_text(I3_PROFILE.format(dbc=realdata / "bmw-i3/i3_LIM_dbc1.dbc", range=range_))
    return Pipeline(load_vehicle(load_config(path, environ={})), lambda m: None, trace_drops=True)


def test_i3_signals_of_a_message_with_overlapping_signals_decode(realdata: Path, tmp_path: Path) -> None:
    pipeline = i3_pipeline(realdata, tmp_path)
    replay(pipeline, realdata / "bmw-i3/i3_2014_ac_start_cut.csv")
    values = pipeline.state.values
    assert values[vss.CABLE_CONNECTED] is True  # an AC charge starts: plugged
    assert values[f"{vss.TB}.Charging.MaximumChargingCurrent.Phase1"] > 0
    assert pipeline.decoder.drops.decode_error == 0
    assert abs(values[vss.SOC] - 50.5) < 1 and abs(values[vss.PACK_VOLTAGE] - 372) < 5


def test_i3_mapping_range_keeps_the_discharge_current_the_dbc_range_drops(realdata: Path, tmp_path: Path) -> None:
    log = realdata / "bmw-i3/i3_2015_69pct_ac_start_end.csv"  # the AC charge ends: current turns negative
    dbc_range = i3_pipeline(realdata, tmp_path)
    replay(dbc_range, log)
    assert dbc_range.decoder.drops.top()["out_of_range"] == [("BMSMsg112.Battery_Current", 74)]  # the 74
    assert dbc_range.state.values[vss.PACK_CURRENT] > 0  # a stale charging current
    own_range = i3_pipeline(realdata, tmp_path, ", min = -1000, max = 1000")
    replay(own_range, log)
    assert own_range.decoder.drops.out_of_range == 0
    assert own_range.state.values[vss.PACK_CURRENT] < 0  # discharging after the charge ended


@pytest.mark.parametrize("variant", ["bom", "dlc"])
def test_kona_gvret_variants_replay_like_the_plain_csv(realdata: Path, tmp_path: Path, variant: str) -> None:
    plain = realdata / "kona/230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
    text = plain.read_bytes()
    other = tmp_path / f"{variant}.csv"
    other.write_bytes(b"\xef\xbb\xbf" + text if variant == "bom" else text.replace(b",LEN,", b",DLC,", 1))
    results = []
    for log in (plain, other):
        pipeline, _ = run_profile("kona-ev.toml", realdata / "kona/pcan.dbc", log)
        replay(pipeline, log)
        results.append((pipeline.counters(), pipeline.state.snapshot("kona")))
    assert results[0] == results[1] and results[0][0]["frames"] == 39546


def test_replay_stats_names_the_signal_behind_the_drops(realdata: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    path = tmp_path / "i3.toml"
    path.write_text(I3_PROFILE.format(dbc=realdata / "bmw-i3/i3_LIM_dbc1.dbc", range=""))
    assert main(["replay", "--config", str(path), str(realdata / "bmw-i3/i3_2015_69pct_ac_start_end.csv"),
                 "--stats"]) == 0
    err = capsys.readouterr().err
    assert "out_of_range 74: BMSMsg112.Battery_Current 74" in err
    assert "unknown_id 6156: 0x100 518, " in err
    assert "1,000,000 frames/s" in err  # its Time Stamp column is the row index


def test_the_kona_replay_in_docs_new_vehicle_is_what_replay_prints(realdata: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    log = realdata / "kona/230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
    assert main(["replay", "--config", str(PROFILES / "kona-ev.toml"), "--dbc", str(realdata / "kona/pcan.dbc"),
                 str(log), "--stats"]) == 0
    err = capsys.readouterr().err
    doc = (PROFILES.parents[1] / "docs" / "new-vehicle.md").read_text()
    for quoted in ("39546 frames read, 290 decoded, 206 unchanged (skipped), dropped: unknown_id 39050, "
                   "implausible 149; 0 messages",
                   "unknown_id 39050: 0x153 2170, 0x2B0 1726, 0x220 1358, 0x354 1086, 0x371 1086",
                   "implausible 149: BatteryCharging.Voltage_12V 76, BatteryCharging.uwe596_6_TAkkuL 73"):
        assert quoted in doc and quoted in err, quoted
