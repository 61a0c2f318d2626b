"""The state topic speaks VSS: every path the shipped profiles map is in agent.core.vss.SPECS, its
DBC unit is converted by the mapping, and the state topic carries it in its VSS unit and datatype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from frames import EV_CONFIG

import simulators
from agent.cli.replay import replay
from agent.core import vss
from agent.core.pipeline import Pipeline
from agent.core.statepub import StateReporter
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "config" / "vehicles"
SHIPPED = {"carfriend-ev.toml": None, "carfriend-ev-fd.toml": None, "kona-ev.toml": "kona/pcan.dbc", "nissan-leaf.toml": "leaf/EV-can_AZE0.dbc",
           "tesla-model3.toml": "tesla/Model3CAN.dbc"}


def test_docs_topics_unit_table_is_generated_from_the_code() -> None:
    text = (ROOT / "docs" / "topics.md").read_text()
    table = text.split("<!-- vss-units:begin -->\n", 1)[1].split("<!-- vss-units:end -->", 1)[0]
    assert table == vss.units_markdown(), "regenerate docs/topics.md's table from agent.core.vss.units_markdown()"


@pytest.mark.parametrize("profile", sorted(SHIPPED))
def test_every_path_a_shipped_profile_maps_is_in_the_vss_table_with_its_unit_converted(
        profile: str, realdata: Path) -> None:
    dbc = SHIPPED[profile]
    override = [realdata / dbc] if dbc else None
    vehicle = load_vehicle(load_config(PROFILES / profile, dbc_override=override, environ={}))
    assert sorted(vehicle.mapped_paths - set(vss.SPECS)) == []
    assert [w for w in vehicle.warnings if "scale" in w or "unit" in w] == []


def assert_vss_types(signals: dict[str, dict[str, Any]]) -> None:
    for path, entry in signals.items():
        spec, value = vss.SPECS[path], entry["value"]
        if spec.datatype == "boolean":
            assert isinstance(value, bool), (path, value)
        elif spec.integer:
            assert isinstance(value, int) and not isinstance(value, bool), (path, value)
        elif spec.datatype == "float":
            assert isinstance(value, int | float) and not isinstance(value, bool), (path, value)
        elif spec.datatype == "string":
            assert isinstance(value, str) and (not spec.allowed or value in spec.allowed), (path, value)
        else:
            assert spec.datatype == "string[]" and all(isinstance(v, str) for v in value), (path, value)


def test_the_reference_evs_state_topic_is_in_vss_units_and_types() -> None:
    pipeline = Pipeline(load_vehicle(load_config(EV_CONFIG, environ={})), lambda m: None)
    reporter = StateReporter("carfriend-ev-0001", min_interval_s=5, full_interval_s=900)
    docs: list[dict[str, Any]] = []
    for msg in simulators.frames("overnight-charge", speed=600, duration_s=3 * 3600):
        pipeline.process(msg.timestamp, msg.arbitration_id, bytes(msg.data))
        due = reporter.poll(pipeline.state, msg.timestamp)
        if due is not None:
            docs.append(due[0])
    charging = [d["signals"] for d in docs if d["full"] and
                d["signals"].get(vss.IS_CHARGING, {}).get("value") is True and vss.PACK_POWER in d["signals"]]
    assert charging, "no full snapshot while charging"
    for signals in charging + [d["signals"] for d in docs]:
        assert_vss_types(signals)
    power_w = charging[-1][vss.PACK_POWER]["value"]
    assert 6000 < power_w < 8000  # 7.4 kW into the battery, in W (VSS), positive while charging
    assert charging[-1][vss.GEAR]["value"] == vss.GEAR_PARK
    assert charging[-1][vss.TIMER_MODE]["value"] in ("INACTIVE", "START_TIME")


@pytest.mark.parametrize(("profile", "log"), [("kona-ev.toml", "kona/230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"),
                                              ("tesla-model3.toml", "tesla/openccs-2019-model3.csv")])
def test_real_captures_reach_the_state_in_vss_types(realdata: Path, profile: str, log: str) -> None:
    vehicle = load_vehicle(load_config(PROFILES / profile, dbc_override=[realdata / SHIPPED[profile]],  # type: ignore[operator]
                                       environ={}))
    pipeline = Pipeline(vehicle, lambda m: None)
    replay(pipeline, realdata / log)
    signals = pipeline.state.snapshot("x")["signals"]
    assert len(signals) >= 4
    assert_vss_types(signals)


def test_unit_factors_between_dbc_and_vss_units() -> None:
    assert vss.unit_factor("kW", vss.PACK_POWER) == (1000.0, None)
    assert vss.unit_factor("Min", vss.TIME_TO_COMPLETE) == (60.0, None)
    assert vss.unit_factor("kph", vss.SPEED) == (pytest.approx(1.0), None)
    assert vss.unit_factor("%+1", vss.SOC) == (None, None)  # a spelling nobody can check
    factor, why = vss.unit_factor("kW", vss.CHARGE_RATE)
    assert factor is None and why is not None and '"kW" cannot become the VSS unit "km/h"' in why


def test_a_kw_signal_mapped_to_current_power_without_converting_is_warned(tmp_path: Path) -> None:
    text = EV_CONFIG.read_text().replace('source = "BMS_Power.PackPower", scale = -1000', 'source = "BMS_Power.PackPower", scale = -1')
    text = text.replace('"../../dbc/', f'"{ROOT}/dbc/')
    (tmp_path / "old.toml").write_text(text)
    vehicle = load_vehicle(load_config(tmp_path / "old.toml", environ={}))
    assert any('"PackPower" is in kW' in w and "expected scale = 1000 (or -1000), not -1" in w
               for w in vehicle.warnings)
