"""The [diagnostics] profile: validation, read-only services, signal sets, standard PIDs, DTCs (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli.check_config import check_config
from agent.core import vss
from agent.core.diag_j1979 import STANDARD_PIDS, parse_supported, pid_plan
from agent.core.diag_plan import (
    PENDING_DTC_LIST,
    DiagDecoder,
    check_value,
    parse_obd_dtcs,
    parse_uds_dtcs,
)
from agent.core.diag_profile import DiagnosticsConfig
from agent.core.errors import ConfigError
from agent.core.state import VehicleState
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

BASE = """
[vehicle]
id = "obd-car"
[can]
interface = "virtual"
"""
REQUEST = """
[diagnostics]
[[diagnostics.request]]
name = "bms"
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


def write(tmp_path: Path, text: str, name: str = "car.toml") -> Path:
    path = tmp_path / name
    path.write_text(BASE + text)
    return path


def test_a_diagnostics_only_profile_needs_no_dbc_and_maps_its_paths(tmp_path: Path) -> None:
    vehicle = load_vehicle(load_config(write(tmp_path, REQUEST)))
    assert vehicle.diagnostics is not None
    (plan,) = vehicle.diagnostics.plans
    assert plan.key == "7E4.220101" and plan.request == b"\x22\x01\x01" and plan.echo == b"\x62\x01\x01"
    assert vss.SOC in vehicle.mapped_paths and vss.AUX_VOLTAGE in vehicle.mapped_paths  # + standard PIDs
    assert vehicle.can_filters() is None  # nothing broadcast is mapped: every frame tells "awake"


@pytest.mark.parametrize(("service", "what"), [(0x2E, "writes data (WriteDataByIdentifier)"), (0x31, "runs a routine (RoutineControl)"),
                                               (0x11, "resets the ECU"), (0x27, "unlocks security access"),
                                               (0x14, "clears DTCs")])
def test_write_and_control_services_are_refused_naming_file_request_and_field(
        tmp_path: Path, service: int, what: str) -> None:
    path = write(tmp_path, REQUEST.replace("service = 0x22", f"service = {service:#x}"))
    problems, _ = check_config(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: [diagnostics] request.0: ")
    assert f'request "bms": service 0x{service:02X} {what}: only read services are allowed' in problems[0]


def test_every_problem_of_a_request_table_is_reported_at_once(tmp_path: Path) -> None:
    bad = REQUEST.replace("bit = 32", "bit = -1").replace('name = "bms"', 'name = "bms"\nretries = 3')
    problems, _ = check_config(write(tmp_path, bad))
    text = "\n".join(problems)
    assert "request.0.retries: Extra inputs are not permitted" in text
    assert "request.0.signal.0.bit" in text
    assert len(problems) == 2


def test_a_signalset_mapping_without_a_signalset_is_a_problem(tmp_path: Path) -> None:
    text = REQUEST + '[signals]\n"Vehicle.Speed" = "signalset.KONAEV_VSS"\n'
    problems, _ = check_config(write(tmp_path, text))
    assert problems == [f'{tmp_path / "car.toml"}: [signals] "Vehicle.Speed": "signalset.KONAEV_VSS" needs '
                        "[diagnostics] signalset"]


SIGNALSET = {"commands": [
    {"hdr": "7E4", "rax": "7EC", "fcm1": True, "cmd": {"22": "0101"}, "freq": 1, "signals": [
        {"id": "SOC", "fmt": {"bix": 32, "len": 8, "max": 100, "div": 2, "unit": "percent"},
         "suggestedMetric": "stateOfCharge"},
        {"id": "ODO_MI", "fmt": {"bix": 40, "len": 16, "max": 65535, "unit": "miles"}},
    ]},
]}


def test_signalset_overrides_and_unit_conversion(tmp_path: Path) -> None:
    (tmp_path / "set.json").write_text(json.dumps(SIGNALSET))
    text = '[diagnostics]\nsignalset = "set.json"\nstandard_pids = false\n[signals]\n' \
           '"Vehicle.TraveledDistance" = "signalset.ODO_MI"\n'
    vehicle = load_vehicle(load_config(write(tmp_path, text)))
    assert vehicle.diagnostics is not None
    (plan,) = vehicle.diagnostics.plans
    assert plan.periods == {"driving": 10.0, "charging": 10.0, "parked": 300.0}  # freq 1 s is the floor
    decoder = DiagDecoder(VehicleState())
    payload = b"\x62\x01\x01" + bytes([0, 0, 0, 0, 101, 0x27, 0x10])  # SOC 50.5 %, 10000 miles
    assert set(decoder.apply(plan, payload, 100.0)) == {vss.SOC, vss.ODOMETER}
    assert decoder.state.values[vss.SOC] == 50.5
    assert decoder.state.values[vss.ODOMETER] == pytest.approx(16093.44)


def test_a_malformed_signalset_names_file_command_signal_and_problem(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SIGNALSET))
    bad["commands"][0]["signals"][1]["fmt"]["len"] = 0
    bad["commands"][0]["signals"][0]["fmt"]["bixx"] = 3
    bad["commands"].append({"hdr": "7E4", "rax": "7EC", "cmd": {"2E": "0101"}, "signals": []})
    (tmp_path / "set.json").write_text(json.dumps(bad))
    problems, _ = check_config(write(tmp_path, '[diagnostics]\nsignalset = "set.json"\n'))
    text = "\n".join(problems)
    assert f"{tmp_path / 'set.json'}: command #1, signal #2, fmt.len: Input should be greater than or equal to 1" in text
    assert "command #1, signal #1, fmt.bixx: Extra inputs are not permitted" in text
    assert len(problems) == 2  # the write service is found once the file parses


def test_a_write_service_in_a_signalset_is_refused(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SIGNALSET))
    bad["commands"].append({"hdr": "7E4", "rax": "7EC", "cmd": {"2E": "0101"}, "signals": []})
    (tmp_path / "set.json").write_text(json.dumps(bad))
    problems, _ = check_config(write(tmp_path, '[diagnostics]\nsignalset = "set.json"\n'))
    assert len(problems) == 1 and "command #2 (7E4 {'2E': '0101'}): service 0x2E writes data" in problems[0]


@pytest.mark.parametrize(("pid", "data", "path", "value"), [
    (0x0D, b"\x41\x0d\x58", vss.SPEED, 88),
    (0x42, b"\x41\x42\x31\x9c", vss.AUX_VOLTAGE, 12.7),
    (0x5B, b"\x41\x5b\x80", vss.SOC, 50.2),
    (0xA6, b"\x41\xa6\x00\x01\xe2\x40", vss.ODOMETER, 12345.6),
])
def test_standard_pids_decode_per_sae_j1979(pid: int, data: bytes, path: str, value: float) -> None:
    plan = pid_plan(pid, 0x7E8, DiagnosticsConfig())
    decoder = DiagDecoder(VehicleState())
    assert decoder.apply(plan, data, 1.0) == (path,)
    assert decoder.state.values[path] == pytest.approx(value)


def test_mil_and_dtc_count_from_pid_01() -> None:
    plan = pid_plan(0x01, 0x7E8, DiagnosticsConfig())
    decoder = DiagDecoder(VehicleState())
    decoder.apply(plan, b"\x41\x01\x83\x07\xe5\x00", 1.0)
    assert decoder.state.values["Vehicle.OBD.Status.IsMILOn"] is True
    assert decoder.state.values["Vehicle.OBD.Status.DTCCount"] == 3
    assert set(STANDARD_PIDS) == {0x01, 0x0D, 0x42, 0x5B, 0xA6}


def test_supported_pid_bitmaps() -> None:
    assert parse_supported(0x00, b"\x41\x00\xbe\x1f\xa8\x13") == {
        0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x13, 0x15, 0x1C, 0x1F, 0x20}
    assert parse_supported(0x20, b"\x41\x00\xff\xff\xff\xff") is None  # the wrong bitmap
    assert parse_supported(0x00, b"\x41\x00\xff") is None  # too short


def test_dtc_responses_zero_is_no_code_and_truncated_is_refused() -> None:
    assert parse_obd_dtcs(b"\x43\x00") == []
    assert parse_obd_dtcs(b"\x43\x02\x0a\x80\x00\x00") == ["P0A80"]  # 0000: padding, never P0000
    assert parse_obd_dtcs(b"\x43\x02\x41\x23\xc1\x00") == ["C0123", "U0100"]
    assert parse_obd_dtcs(b"\x43\x03\x0a\x80") is None
    assert parse_uds_dtcs(b"\x59\x02\xff\x0a\x80\x1c\x08\x0b\x01\x00\x04") == (["P0A80-1C"], ["P0B01-00"])


def test_stored_codes_feed_the_dtc_list_and_pending_ones_stay_apart() -> None:
    diag = DiagnosticsConfig()
    from agent.core.diag_j1979 import dtc_plan

    stored, pending = dtc_plan(0x03, 0x7E8, diag), dtc_plan(0x07, 0x7E8, diag)
    decoder = DiagDecoder(VehicleState(dtc_clear_after_s=1000))
    assert decoder.apply(stored, b"\x43\x00", 1.0) == (vss.DTC_LIST,)
    assert decoder.state.values[vss.DTC_LIST] == []  # known: no codes
    assert decoder.apply(pending, b"\x47\x01\x0a\x80", 2.0) == (PENDING_DTC_LIST,)
    assert decoder.state.values[vss.DTC_LIST] == [] and decoder.state.values[PENDING_DTC_LIST] == ["P0A80"]
    assert decoder.apply(stored, b"\x43\x01\x0a\x80", 3.0) == (vss.DTC_LIST,)
    assert decoder.state.values[vss.DTC_LIST] == ["P0A80"]
    assert decoder.apply(stored, b"\x43\x00", 4.0) == (vss.DTC_LIST,)  # cleared
    assert decoder.state.values[vss.DTC_LIST] == []


def test_a_response_too_short_or_with_a_wrong_echo_writes_nothing(tmp_path: Path) -> None:
    vehicle = load_vehicle(load_config(write(tmp_path, REQUEST)))
    assert vehicle.diagnostics is not None
    (plan,) = vehicle.diagnostics.plans
    decoder = DiagDecoder(VehicleState())
    assert decoder.apply(plan, b"\x62\x01\x01\x00\x00", 1.0) == ()
    assert decoder.apply(plan, b"\x62\x01\x02\x00\x00\x00\x00\x50", 1.0) == ()
    assert decoder.state.values == {}
    assert decoder.drops == {"too_short": 1, "wrong_echo": 1}
    assert check_value(plan.values[0], bytes([0, 0, 0, 0, 0xFE])).reason == "implausible"  # 127 %


def test_load_vehicle_raises_every_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "set.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        load_vehicle(load_config(write(tmp_path, '[diagnostics]\nsignalset = "set.json"\n')))
    assert err.value.problems[0].startswith(f"{tmp_path / 'set.json'}: (top level): Invalid JSON")


YEARS_SET = {"commands": [  # two generations answer 22 0101 with SOC at different places
    {"hdr": "7E4", "rax": "7EC", "cmd": {"22": "0101"}, "freq": 1, "filter": {"to": 2019}, "signals": [
        {"id": "SOC_GEN1", "fmt": {"bix": 32, "len": 8, "div": 2, "unit": "percent"}, "suggestedMetric": "stateOfCharge"}]},
    {"hdr": "7E4", "rax": "7EC", "cmd": {"22": "0101"}, "freq": 1, "filter": {"from": 2020}, "signals": [
        {"id": "SOC_GEN2", "fmt": {"bix": 48, "len": 8, "div": 2, "unit": "percent"}, "suggestedMetric": "stateOfCharge"}]},
    {"hdr": "7E4", "rax": "7EC", "cmd": {"22": "0105"}, "freq": 1, "dbgfilter": {"years": [2019], "from": 2024},
     "signals": [{"id": "SOH", "fmt": {"bix": 0, "len": 8}, "suggestedMetric": "stateOfHealth"}]},
]}


def test_the_model_year_picks_the_signalset_commands_of_that_year(tmp_path: Path) -> None:
    base = BASE.replace("[vehicle]\n", "[vehicle]\nmodel_year = {year}\n")
    path = tmp_path / "car.toml"
    (tmp_path / "set.json").write_text(json.dumps(YEARS_SET))
    notes: list[str] = []
    for year, want in ((2018, [("7E4.220101", ["SOC_GEN1"]), ("7E4.220105", ["SOH"])]),
                       (2021, [("7E4.220101", ["SOC_GEN2"]), ("7E4.220105", ["SOH"])]),
                       (2019, [("7E4.220101", ["SOC_GEN1"])]),  # 0105: not confirmed for 2019
                       (2025, [("7E4.220101", ["SOC_GEN2"])])):
        path.write_text(base.format(year=year) + '[diagnostics]\nsignalset = "set.json"\nstandard_pids = false\n')
        problems, notes = check_config(path)
        assert problems == [], problems
        vehicle = load_vehicle(load_config(path))
        assert vehicle.diagnostics is not None
        assert [(p.key, [v.key for v in p.values]) for p in vehicle.diagnostics.plans] == want, year
        assert any(f"not polled, not for model year {year} (filter): 7E4 220101" in n for n in notes), notes
    assert any("not polled, not confirmed for model year 2025 (dbgfilter; [diagnostics] signalset_unconfirmed"
               " = true polls them): 7E4 220105" in n for n in notes), notes
    # Asked for: the unconfirmed are polled as well; a command its filter excludes never is.
    path.write_text(base.format(year=2025) + '[diagnostics]\nsignalset = "set.json"\nstandard_pids = false\n'
                    "signalset_unconfirmed = true\n")
    vehicle = load_vehicle(load_config(path))
    assert vehicle.diagnostics is not None
    assert [p.key + ":" + p.values[0].key for p in vehicle.diagnostics.plans] == ["7E4.220101:SOC_GEN2",
                                                                                 "7E4.220105:SOH"]


def test_without_a_model_year_a_set_with_year_variants_asks_for_one(tmp_path: Path) -> None:
    (tmp_path / "set.json").write_text(json.dumps(YEARS_SET))
    problems, _ = check_config(write(tmp_path, '[diagnostics]\nsignalset = "set.json"\n'))
    assert problems == [f"{tmp_path / 'set.json'}: commands #1 and #2 ask the same request (7E4.220101) for "
                        "different model years (filter): set [vehicle] model_year"]
    one = json.loads(json.dumps(YEARS_SET))
    del one["commands"][1]  # no variants: without a year every command is polled, filters ignored
    (tmp_path / "set.json").write_text(json.dumps(one))
    vehicle = load_vehicle(load_config(write(tmp_path, '[diagnostics]\nsignalset = "set.json"\n')))
    assert vehicle.diagnostics is not None
    assert [v.key for p in vehicle.diagnostics.plans if p.source.startswith(str(tmp_path)) for v in p.values] == [
        "SOC_GEN1", "SOH"]


@pytest.mark.parametrize(("value", "message"), [
    ("1850", "[vehicle] model_year: Input should be greater than or equal to 1980"),
    ("2101", "[vehicle] model_year: Input should be less than or equal to 2100"),
    ('"twenty"', "[vehicle] model_year: Input should be a valid integer"),
    ("2019.5", "[vehicle] model_year: Input should be a valid integer"),
])
def test_a_bad_model_year_is_refused_naming_the_field(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "car.toml"
    path.write_text(BASE.replace("[vehicle]\n", f"[vehicle]\nmodel_year = {value}\n"))
    problems, _ = check_config(path)
    assert any(message in p for p in problems), problems


def test_a_malformed_year_filter_names_command_and_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(YEARS_SET))
    bad["commands"][2]["dbgfilter"] = {"from": "2024", "until": 2025}
    (tmp_path / "set.json").write_text(json.dumps(bad))
    problems, _ = check_config(write(tmp_path, '[diagnostics]\nsignalset = "set.json"\n'))
    text = "\n".join(problems)
    assert "command #3, dbgfilter.from: Input should be a valid integer" in text
    assert "command #3, dbgfilter.until: Extra inputs are not permitted" in text
