"""The simulated EV's physics and its reaction to commands, with plain values (no bus, no clock)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.frames import CommandDecoder, crc8_j1850, load_car_dbc
from simulators.model import EVModel, hours_to_charge, taper_factor
from simulators.scenario import CarSetup, dtc_number

TOKYO = ZoneInfo("Asia/Tokyo")
EVENING = datetime(2026, 11, 21, 19, 0, tzinfo=TOKYO).timestamp()


def car(**setup: object) -> EVModel:
    return EVModel.from_setup(CarSetup(**setup), TOKYO, EVENING, seed=1)  # type: ignore[arg-type]


def run_until(model: EVModel, done: object, limit_s: float = 48 * 3600) -> float:
    start = model.now
    while not done(model):  # type: ignore[operator]
        model.step(1.0)
        assert model.now - start < limit_s, "condition never reached"
    return model.now


def test_taper_is_flat_below_80_and_falls_linearly_to_30_percent_at_100() -> None:
    assert taper_factor(10) == taper_factor(79.9) == 1.0
    assert taper_factor(90) == pytest.approx(0.65)
    assert taper_factor(100) == pytest.approx(0.3)


@given(soc=st.floats(0, 99), limit=st.integers(50, 100), power=st.floats(2, 150))
def test_hours_to_charge_matches_integrating_the_taper(soc: float, limit: int, power: float) -> None:
    steps, hours, s = 20000, 0.0, soc
    ds = max(0.0, limit - soc) / steps
    for _ in range(steps):
        hours += 64 * ds / 100 / (power * taper_factor(s + ds / 2))
        s += ds
    assert hours_to_charge(soc, limit, 64, power) == pytest.approx(hours, rel=1e-4, abs=1e-6)


def test_charging_ramps_up_within_seconds_and_stops_at_the_limit() -> None:
    model = car(soc_pct=30, charge_limit_pct=90)
    model.plug_in("AC", 7.4)
    for _ in range(6):
        model.step(1.0)
    assert model.charger.power_kw == pytest.approx(7.4)
    run_until(model, lambda m: m.charger.state != "CHARGING")
    assert model.charger.state == "COMPLETE"
    assert model.soc_pct == pytest.approx(90, abs=0.01)


def test_charging_slows_above_80_percent() -> None:
    model = car(soc_pct=70, charge_limit_pct=100)
    model.plug_in("DC", 100.0)
    t70 = model.now
    t80 = run_until(model, lambda m: m.soc_pct >= 80)
    t90 = run_until(model, lambda m: m.soc_pct >= 90)
    t100 = run_until(model, lambda m: m.charger.state == "COMPLETE")
    assert (t90 - t80) > 1.15 * (t80 - t70)
    assert (t100 - t90) > 1.8 * (t80 - t70)


def test_time_to_complete_is_an_honest_estimate_all_along_the_charge() -> None:
    model = car(soc_pct=18, charge_limit_pct=95)
    model.plug_in("AC", 11.0)
    predictions = []
    while model.charger.state == "CHARGING":
        if int(model.now) % 600 == 0:
            predictions.append(model.now + 60 * model.time_to_complete_min())
        model.step(1.0)
    finished = model.charger.completed_at
    assert finished is not None and len(predictions) > 10
    for predicted in predictions:
        assert abs(predicted - finished) <= 120


def test_time_to_complete_is_not_available_unless_charging() -> None:
    model = car(soc_pct=50)
    assert model.time_to_complete_min() == 4095


def test_a_delayed_charge_waits_for_the_local_time_then_charges() -> None:
    model = car(soc_pct=40, schedule="once", schedule_start="23:00")
    model.plug_in("AC", 7.4)
    assert model.charger.state == "SCHEDULED"
    started = run_until(model, lambda m: m.charger.state == "CHARGING")
    assert datetime.fromtimestamp(started, TOKYO).strftime("%H:%M") == "23:00"
    assert model.soc_pct == pytest.approx(40, abs=0.01)
    assert model.charger.schedule == "OFF"  # ONCE is used up


def test_12v_drains_while_parked_and_recharges_while_ready() -> None:
    model = car(aux_soc_pct=60, parasitic_drain_a=0.5)
    v0 = model.aux_voltage_v
    for _ in range(24):
        model.step(3600.0)
    assert model.aux_voltage_v < v0 - 0.2
    parked_soc = model.aux_soc
    model.ignition, model.ready = "ON", True
    model.step(600.0)
    assert model.aux_voltage_v > 13.0
    assert model.aux_soc > parked_soc


def test_driving_uses_energy_and_counts_down_the_service() -> None:
    model = car(soc_pct=80, km_to_service=1000, odometer_km=500)
    model.ignition, model.ready, model.gear, model.target_speed_kmh = "ON", True, "D", 60.0
    for _ in range(3600):
        model.step(1.0)
    driven = model.odometer_km - 500
    assert 50 < driven < 70
    assert model.km_to_service == pytest.approx(1000 - driven)
    assert 80 - model.soc_pct == pytest.approx(driven * 0.16 / 64 * 100, rel=0.1)


class Commands:
    def __init__(self) -> None:
        self.db = load_car_dbc()
        self.decoder = CommandDecoder(self.db)

    def send(self, model: EVModel, name: str, **values: object) -> str | None:
        message = self.db.get_message_by_name(name)
        return self.decoder.apply(model, message.frame_id, message.encode(values))


def test_commands_switch_the_climate_and_set_its_target() -> None:
    model, cmd = car(), Commands()
    assert cmd.send(model, "TCU_ClimateCmd", ClimateRequest="ON", TargetTempRequest=24.5) == "TCU_ClimateCmd"
    assert model.climate_on and model.climate_target_c == 24.5
    cmd.send(model, "TCU_ClimateCmd", ClimateRequest="OFF", TargetTempRequest=0)
    assert not model.climate_on and model.climate_target_c == 24.5


def test_commands_stop_start_limit_and_delay_a_charge() -> None:
    model, cmd = car(soc_pct=50), Commands()
    model.plug_in("AC", 7.4)
    cmd.send(model, "TCU_ChargeCmd", ChargeRequest="STOP")
    assert model.charger.state == "STOPPED"
    cmd.send(model, "TCU_ChargeCmd", ChargeRequest="START")
    assert model.charger.state == "CHARGING"
    cmd.send(model, "TCU_ChargeLimitCmd", ChargeLimitRequest=80)
    assert model.charge_limit_pct == 80
    cmd.send(model, "TCU_ChargeScheduleCmd", ScheduleRequest="ONCE", StartMinutesRequest=23 * 60)
    assert model.charger.state == "SCHEDULED"
    assert datetime.fromtimestamp(model.charger.due_at or 0, TOKYO).strftime("%H:%M") == "23:00"


def test_a_frame_that_is_no_command_is_ignored() -> None:
    model = car()
    assert CommandDecoder(load_car_dbc()).apply(model, 0x1F2, bytes(8)) is None


def test_dtc_text_becomes_the_16_bit_sae_number() -> None:
    assert dtc_number("P0A80") == 0x0A80
    assert dtc_number("U0100") == 0xC100
    assert dtc_number("C0750") == 0x4750


def test_checksum_is_crc8_sae_j1850() -> None:
    assert crc8_j1850(b"123456789") == 0x4B  # the catalogued check value
