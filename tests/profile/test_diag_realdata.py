"""OBDb's recorded Kona Electric responses through carfriend's ISO-TP reassembly and signal-set loader.

One case per recorded response (../shared/realdata/obdb, CC BY-SA, not shipped). Each is fed
frame by frame to an IsoTpPort in listen mode, as `carfriend replay` does; the last complete
payload is decoded with the plans the signal-set loader built, and every numeric expected
value must come out within the signal's resolution. OBDb's own decoder clamps a value outside
the signal's min/max to the limit; carfriend refuses such a value instead (never stored), so
there the expected value must be that limit. A few recordings are corrupt (log lines run
together or cut: a 16-byte "frame", a half byte); those must yield no value at all, counted.

Each case is decoded with the plans of its model year (`[vehicle] model_year`, the folder the
recording is in): the signal set's `filter`/`dbgfilter` must keep its command. The 8 corrupt
recordings are all of 2024 and are not a matter of the year: the Kona set has no `filter` at
all, so every year decodes a command's bytes alike; each has a line holding two frames run
together, and OBDb's expected values for them come from the shifted bytes (a drive time of
4,093,743,446 where the recordings before and after read ~26,300,000; an inverter value of
60,456 = 0xEC28, the next frame's id read as data).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.core.diag_plan import DiagPlan, DiagValue, check_value
from agent.core.diag_profile import DiagnosticsConfig
from agent.io.isotp_link import IsoTpPort
from agent.profile.signalset import SignalSetBuilder, parse_signalset

ROOT = Path(__file__).resolve().parents[2]
KONA = ROOT.parent / "shared" / "realdata" / "obdb" / "hyundai-kona-electric"


def _cases() -> list[Any]:
    if not KONA.is_dir():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(
            reason=f"OBDb real data not present at {KONA} (a clone outside the workspace)"))]
    out = []
    for path in sorted(KONA.glob("test_cases/*/commands/*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for i, case in enumerate(doc["test_cases"]):
            out.append(pytest.param(path, case["response"], case["expected_values"],
                                    id=f"{path.parent.parent.name}-{path.stem}-{i}"))
    return out


def build(model_year: int | None) -> dict[str, DiagPlan]:
    sset, problems = parse_signalset((KONA / "signalset-v3.json").read_bytes(), "kona")
    assert sset is not None, problems
    builder = SignalSetBuilder(sset, "kona", DiagnosticsConfig(), {}, model_year)
    built = builder.plans()
    assert not builder.problems
    return {p.key: p for p in built}


@pytest.fixture(scope="module")
def plans() -> dict[str, DiagPlan]:
    return build(None)


@pytest.fixture(scope="module")
def plans_of_year() -> dict[int, dict[str, DiagPlan]]:
    return {int(d.name): build(int(d.name)) for d in sorted(KONA.glob("test_cases/*")) if d.name.isdigit()}


def frames(text: str) -> tuple[list[tuple[int, bytes]], int]:
    """(id, data) per recorded line; lines that are no whole frame (a cut half byte) are skipped."""
    out, unreadable = [], 0
    for line in text.split():
        try:
            out.append((int(line[:3], 16), bytes.fromhex(line[3:])))
        except ValueError:
            unreadable += 1
    return out, unreadable


def reassemble(plan: DiagPlan, text: str) -> tuple[list[bytes], Counter[str]]:
    counts: Counter[str] = Counter()
    (rx,) = plan.rx_ids
    port = IsoTpPort(plan.tx_id, rx, plan.extended, send=None, counts=counts)
    payloads: list[bytes] = []
    recorded, counts["unreadable_line"] = frames(text)
    for can_id, data in recorded:
        if can_id == rx:
            payloads += port.feed(data)
    return [p for p in payloads if p.startswith(plan.echo)], counts


def _value(plan: DiagPlan, key: str) -> DiagValue:
    return next(v for v in plan.values if v.key == key)


@pytest.mark.parametrize(("path", "response", "expected"), _cases())
def test_recorded_kona_response_decodes_to_obdb_expected_values(
        plans_of_year: dict[int, dict[str, DiagPlan]], path: Path, response: str, expected: dict[str, float]) -> None:
    hdr, rax, cmd = path.stem.split("_")[0].split(".")
    year = int(path.parent.parent.name)
    plan = plans_of_year[year].get(f"{hdr}.{cmd}")
    assert plan is not None, f"{hdr}.{cmd} recorded in {year} but not polled for model year {year}"
    assert plan.rx_ids == {int(rax, 16)}
    payloads, counts = reassemble(plan, response)
    if not payloads:  # a corrupt recording: nothing decoded, and the reason counted
        assert counts["isotp_malformed"] + counts["unreadable_line"] > 0, counts
        assert counts["isotp_out_of_order"] + counts["isotp_interrupted"] + counts["isotp_malformed"] > 0
        return
    data = payloads[-1][len(plan.echo):]
    for key, want in expected.items():
        v = _value(plan, key)
        raw = v.spec.raw(data)
        assert raw is not None, f"{key}: response too short"
        got = v.physical(raw)
        resolution = abs(v.scale) / 2 + 1e-9
        if v.src_max is not None and got > v.src_max + 1e-9:
            assert want == pytest.approx(v.src_max), key  # OBDb clamps; carfriend refuses it
            assert check_value(v, data).reason in ("out_of_range", "not_available"), key
        elif v.src_min is not None and got < v.src_min - 1e-9:
            assert want == pytest.approx(v.src_min), key
            assert check_value(v, data).reason in ("out_of_range", "not_available"), key
        else:
            assert abs(got - want) <= resolution, f"{key}: {got} != {want}"


def test_corrupt_recordings_are_few_and_counted(plans: dict[str, DiagPlan]) -> None:
    if not KONA.is_dir():
        pytest.skip(f"OBDb real data not present at {KONA}")
    decoded = corrupt = 0
    years: set[str] = set()
    for path in sorted(KONA.glob("test_cases/*/commands/*.yaml")):
        hdr, _rax, cmd = path.stem.split("_")[0].split(".")
        for case in yaml.safe_load(path.read_text())["test_cases"]:
            payloads, _ = reassemble(plans[f"{hdr}.{cmd}"], case["response"])
            decoded += bool(payloads)
            corrupt += not payloads
            if not payloads:
                years.add(path.parent.parent.name)
                lines = case["response"].split()  # a whole frame is 3 + 16 hex digits, or fewer
                assert any(len(line) > 19 and "7EC" in line[3:] for line in lines), case["response"]
    assert decoded == 487 and corrupt == 8 and years == {"2024"}


def test_the_kona_set_has_no_year_specific_layout() -> None:
    """So a model year cannot make a corrupt recording decode: no `filter` picks another layout."""
    if not KONA.is_dir():
        pytest.skip(f"OBDb real data not present at {KONA}")
    sset, _ = parse_signalset((KONA / "signalset-v3.json").read_bytes(), "kona")
    assert sset is not None
    assert all(c.filter is None for c in sset.commands)
    keys = [(c.hdr, tuple(c.cmd.items())) for c in sset.commands]
    assert len(keys) == len(set(keys))


def supported_by_obdb(year_dir: Path, key: str) -> list[str]:
    """The signal-set commands ("7E4.220101") OBDb's command_support.yaml lists under `key`."""
    doc = yaml.safe_load((year_dir / "command_support.yaml").read_text())
    out = []
    for commands in (doc.get(key) or {}).values():
        for c in commands:
            parts = c.split(":")[0].split("|")[0].split(".")
            if len(parts) == 3:  # hdr.rax.cmd: the set's own (the bare "0101" are SAE J1979)
                out.append(f"{parts[0]}.{parts[2]}")
    return out


def test_the_commands_polled_for_each_model_year_are_those_obdb_found_there(
        plans: dict[str, DiagPlan], plans_of_year: dict[int, dict[str, DiagPlan]]) -> None:
    """filter/dbgfilter against OBDb's own record of what each year's car answered (2017: not the
    BMS; 2019: none of the set; 2020-2023: all eight; 2024: all but 7E2 2101)."""
    if not KONA.is_dir():
        pytest.skip(f"OBDb real data not present at {KONA}")
    ours = {key for key in plans if not key.startswith("7DF")}
    assert len(ours) == 8  # without a year: every command, as before
    for year, built in plans_of_year.items():
        year_dir = KONA / "test_cases" / str(year)
        supported = set(supported_by_obdb(year_dir, "supported_commands_by_ecu")) & ours
        unsupported = set(supported_by_obdb(year_dir, "unsupported_commands_by_ecu")) & ours
        assert set(built) == supported, year
        assert not unsupported & set(built), year
    assert set(plans_of_year[2019]) == set()
    assert "7E2.2101" not in plans_of_year[2024] and "7E4.220101" in plans_of_year[2024]


def test_signalset_maps_suggested_metrics_to_vss_with_unit_conversion(plans: dict[str, DiagPlan]) -> None:
    if not KONA.is_dir():
        pytest.skip(f"OBDb real data not present at {KONA}")
    by_path = {v.path: v for p in plans.values() for v in p.values if v.path}
    assert by_path["Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"].key == "KONAEV_HVBAT_SOC"
    assert by_path["Vehicle.LowVoltageBattery.CurrentVoltage"].key == "KONAEV_VPWR"
    speed = by_path["Vehicle.Speed"]
    assert speed.key == "KONAEV_VSS" and speed.map_scale == pytest.approx(1.609344)  # mph -> km/h
    tire = by_path["Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure"]
    assert tire.map_scale == pytest.approx(6.894757)  # psi -> kPa
    plugged = by_path["Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected"]
    assert plugged.kind == "bool" and len(plugged.any_of) == 1  # rapid OR normal charge port
