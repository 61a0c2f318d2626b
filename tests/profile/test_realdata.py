"""Real cars' captures through the shipped vehicle profiles (../shared/realdata, not copied here)."""

from __future__ import annotations

from pathlib import Path

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
