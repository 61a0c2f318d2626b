"""OBDb's recorded Kona Electric responses through carfriend's ISO-TP reassembly and signal-set loader.

One case per recorded response (../shared/realdata/obdb, CC BY-SA, not shipped). Each is fed
frame by frame to an IsoTpPort in listen mode, as `carfriend replay` does; the last complete
payload is decoded with the plans the signal-set loader built, and every numeric expected
value must come out within the signal's resolution. OBDb's own decoder clamps a value outside
the signal's min/max to the limit; carfriend refuses such a value instead (never stored), so
there the expected value must be that limit. A few recordings are corrupt (log lines run
together or cut: a 16-byte "frame", a half byte); those must yield no value at all, counted.
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


@pytest.fixture(scope="module")
def plans() -> dict[str, DiagPlan]:
    sset, problems = parse_signalset((KONA / "signalset-v3.json").read_bytes(), "kona")
    assert sset is not None, problems
    builder = SignalSetBuilder(sset, "kona", DiagnosticsConfig(), {})
    built = builder.plans()
    assert not builder.problems
    return {p.key: p for p in built}


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
        plans: dict[str, DiagPlan], path: Path, response: str, expected: dict[str, float]) -> None:
    hdr, rax, cmd = path.stem.split("_")[0].split(".")
    plan = plans[f"{hdr}.{cmd}"]
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
    for path in sorted(KONA.glob("test_cases/*/commands/*.yaml")):
        hdr, _rax, cmd = path.stem.split("_")[0].split(".")
        for case in yaml.safe_load(path.read_text())["test_cases"]:
            payloads, _ = reassemble(plans[f"{hdr}.{cmd}"], case["response"])
            decoded += bool(payloads)
            corrupt += not payloads
    assert decoded == 487 and corrupt == 8


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
