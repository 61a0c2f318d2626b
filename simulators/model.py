"""The simulated EV: battery, charger, 12 V system, drive, climate, service and DTCs (no IO).

Time is passed in (``now``, epoch seconds of simulated time); nothing here reads a clock.
The charging power follows the documented taper shape the agent's ETA assumes: full power
below 80 % SOC, then linearly down to 30 % of it at 100 %.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from simulators.scenario import CarSetup

TAPER_START_PCT = 80.0
TAPER_FLOOR = 0.3
CELLS_IN_SERIES = 96
PACK_RESISTANCE_OHM = 0.08
RAMP_S = 5.0  # charging power reaches the charger's maximum this long after starting
AUX_RESISTANCE_OHM = 0.025
DCDC_VOLTAGE_V = 13.6
DCDC_CHARGE_A = 10.0
IGNITION_LOAD_A = {"OFF": 0.0, "ACC": 5.0, "ON": 8.0}  # the car's own 12 V load by ignition
BASE_LOAD_KW = 0.4  # controllers, pumps, lights while ready
THERMAL_TAU_S = 1800.0
NOT_AVAILABLE_MIN = 4095


def taper_factor(soc_pct: float) -> float:
    """Share of the maximum charging power the pack accepts at this SOC."""
    if soc_pct < TAPER_START_PCT:
        return 1.0
    share = (min(soc_pct, 100.0) - TAPER_START_PCT) / (100.0 - TAPER_START_PCT)
    return 1.0 - (1.0 - TAPER_FLOOR) * share


def hours_to_charge(soc_pct: float, limit_pct: float, capacity_kwh: float, max_kw: float) -> float:
    """Hours from soc to limit at max_kw with the taper above 80 % (closed form)."""
    if limit_pct <= soc_pct or max_kw <= 0:
        return 0.0
    kwh_per_pct = capacity_kwh / 100.0
    flat_end = min(limit_pct, max(soc_pct, TAPER_START_PCT))
    hours = max(0.0, flat_end - soc_pct) * kwh_per_pct / max_kw
    a, b = max(soc_pct, TAPER_START_PCT), limit_pct
    if b > a:
        k = (1.0 - TAPER_FLOOR) / (100.0 - TAPER_START_PCT)  # taper slope per percentage point
        x_a, x_b = 1.0 - k * (a - TAPER_START_PCT), 1.0 - k * (b - TAPER_START_PCT)
        hours += kwh_per_pct / max_kw * math.log(x_a / x_b) / k
    return hours


@dataclass
class Charger:
    plugged: bool = False
    kind: str = "NONE"  # NONE | AC | DC
    max_kw: float = 0.0
    state: str = "IDLE"  # IDLE SCHEDULED CHARGING COMPLETE STOPPED FAULT
    power_kw: float = 0.0
    schedule: str = "OFF"  # OFF | ONCE | DAILY
    schedule_min: int = 0
    due_at: float | None = None  # when a SCHEDULED charge starts
    started_at: float | None = None
    completed_at: float | None = None


@dataclass
class EVModel:
    """The car's physical state and its reaction to driving, charging and commands."""

    setup: CarSetup
    tz: tzinfo
    rng: random.Random
    now: float
    soc_pct: float = 0.0
    displayed_soc_pct: float = 0.0
    soc_noise_pct: float = 0.0
    charge_limit_pct: int = 90
    speed_kmh: float = 0.0
    target_speed_kmh: float = 0.0
    gear: str = "P"
    ignition: str = "OFF"
    ready: bool = False
    odometer_km: float = 0.0
    days_to_service: float = 0.0
    km_to_service: float = 0.0
    pack_power_kw: float = 0.0  # positive = discharging
    pack_temp_c: float = 20.0
    aux_soc: float = 0.85
    aux_load_a: float = 0.0
    aux_voltage_v: float = 12.6
    aux_current_a: float = 0.0
    ambient_c: float = 15.0
    cabin_c: float = 15.0
    climate_on: bool = False
    climate_target_c: float = 22.0
    hvac_kw: float = 0.0
    charger: Charger = field(default_factory=Charger)
    dtcs: dict[str, str] = field(default_factory=dict)  # code -> status, in order of setting

    @classmethod
    def from_setup(cls, setup: CarSetup, tz: tzinfo, now: float, seed: int) -> EVModel:
        model = cls(setup=setup, tz=tz, rng=random.Random(seed), now=now)
        model.soc_pct = model.displayed_soc_pct = setup.soc_pct
        model.soc_noise_pct = setup.soc_noise_pct
        model.charge_limit_pct = setup.charge_limit_pct
        model.odometer_km = setup.odometer_km
        model.days_to_service = setup.days_to_service
        model.km_to_service = setup.km_to_service
        model.pack_temp_c = setup.pack_temp_c
        model.aux_soc = setup.aux_soc_pct / 100.0
        model.ambient_c = setup.ambient_c
        model.cabin_c = setup.ambient_c if setup.cabin_temp_c is None else setup.cabin_temp_c
        model.climate_on = setup.climate_on
        model.climate_target_c = setup.climate_target_c
        model.charger.schedule = setup.schedule.upper()
        model.charger.schedule_min = setup.schedule_start_min
        model._update_aux_voltage()
        return model

    # --- derived values -------------------------------------------------------------------

    @property
    def pack_voltage_v(self) -> float:
        ocv = CELLS_IN_SERIES * (3.3 + 0.9 * self.soc_pct / 100.0)
        return ocv - self.pack_current_a_at(ocv) * PACK_RESISTANCE_OHM

    @property
    def pack_current_a(self) -> float:
        return self.pack_current_a_at(CELLS_IN_SERIES * (3.3 + 0.9 * self.soc_pct / 100.0))

    def pack_current_a_at(self, voltage_v: float) -> float:
        return self.pack_power_kw * 1000.0 / voltage_v

    @property
    def dcdc_state(self) -> str:
        if self.ready or self.charger.state == "CHARGING":
            return "ACTIVE"
        if self.ignition != "OFF" or self.charger.plugged:
            return "STANDBY"
        return "OFF"

    @property
    def awake(self) -> bool:
        """Whether the car's CAN bus is up (it sleeps when parked, locked and unplugged)."""
        return self.ignition != "OFF" or self.charger.plugged or self.climate_on

    def time_to_complete_min(self) -> int:
        """The charger's honest estimate to the charge limit; NOT_AVAILABLE unless charging."""
        if self.charger.state != "CHARGING":
            return NOT_AVAILABLE_MIN
        hours = hours_to_charge(self.soc_pct, self.charge_limit_pct, self.setup.capacity_kwh,
                                self.charger.max_kw)
        return min(NOT_AVAILABLE_MIN - 1, math.ceil(hours * 60.0))

    # --- actions (phases and commands) ----------------------------------------------------

    def plug_in(self, kind: str, max_kw: float) -> None:
        self.charger.plugged, self.charger.kind, self.charger.max_kw = True, kind, max_kw
        self.charger.completed_at = None
        if self.charger.schedule != "OFF" and kind == "AC":
            self._hold_until_schedule()
        else:
            self._start_or_complete()

    def unplug(self) -> None:
        self.charger = Charger(schedule=self.charger.schedule, schedule_min=self.charger.schedule_min)

    def start_charging(self) -> None:
        """Charge now (a START command), overriding a pending scheduled start."""
        if self.charger.plugged:
            if self.charger.schedule == "ONCE":
                self.charger.schedule = "OFF"
            self._start_or_complete()

    def stop_charging(self) -> None:
        if self.charger.plugged and self.charger.state in ("CHARGING", "SCHEDULED"):
            self.charger.state, self.charger.power_kw = "STOPPED", 0.0

    def set_charge_limit(self, limit_pct: int) -> None:
        self.charge_limit_pct = max(50, min(100, int(limit_pct)))
        if self.charger.state == "COMPLETE" and self.soc_pct < self.charge_limit_pct - 1.0:
            self._start_or_complete()

    def set_schedule(self, mode: str, start_min: int) -> None:
        self.charger.schedule, self.charger.schedule_min = mode, start_min % 1440
        if not self.charger.plugged:
            return
        if mode != "OFF" and self.charger.state in ("CHARGING", "IDLE", "SCHEDULED"):
            self._hold_until_schedule()
        elif mode == "OFF" and self.charger.state == "SCHEDULED":
            self._start_or_complete()

    def set_climate(self, on: bool, target_c: float | None = None) -> None:
        self.climate_on = on
        if target_c is not None:
            self.climate_target_c = max(16.0, min(32.0, target_c))

    def set_dtc(self, code: str, status: str) -> None:
        if status == "CLEARED":
            self.dtcs.pop(code, None)
        else:
            self.dtcs[code] = status

    def _hold_until_schedule(self) -> None:
        c = self.charger
        c.state, c.power_kw = "SCHEDULED", 0.0
        c.due_at = next_local_time(self.now, self.tz, c.schedule_min)

    def _start_or_complete(self) -> None:
        if self.soc_pct >= self.charge_limit_pct:
            self.charger.state, self.charger.power_kw = "COMPLETE", 0.0
        else:
            self.charger.state, self.charger.started_at = "CHARGING", self.now

    # --- time -------------------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the car by dt simulated seconds."""
        distance_km = self._drive(dt)
        self._climate(dt)
        charge_kw = self._charge(dt)
        drive_kw = self.setup.consumption_kwh_per_km * self.speed_kmh if self.speed_kmh > 0 else 0.0
        load_kw = drive_kw + (BASE_LOAD_KW if self.ready else 0.0)
        if self.charger.state != "CHARGING":
            load_kw += self.hvac_kw  # while charging, the charger feeds the climate
        self.pack_power_kw = load_kw - charge_kw
        self.soc_pct += (charge_kw - load_kw) * dt / 3600.0 / self.setup.capacity_kwh * 100.0
        self.soc_pct = min(100.0, max(0.0, self.soc_pct))
        self._thermal(dt)
        self._aux(dt)
        self.days_to_service -= dt / 86400.0
        self.km_to_service -= distance_km
        self.now += dt
        noise = self.rng.gauss(0.0, self.soc_noise_pct) if self.soc_noise_pct > 0 else 0.0
        self.displayed_soc_pct = min(100.0, max(0.0, self.soc_pct + noise))

    def _drive(self, dt: float) -> float:
        target = self.target_speed_kmh if self.ready and self.gear in ("D", "R", "B") else 0.0
        if target > 0:
            # traffic: the speed wanders around the target, never above 1.2x of it
            target = max(0.0, min(1.2 * target, target * (1.0 + self.rng.gauss(0.0, 0.15))))
        max_change = 10.0 * dt  # km/h per second, comfortable acceleration and braking
        self.speed_kmh += max(-max_change, min(max_change, target - self.speed_kmh))
        distance_km = self.speed_kmh * dt / 3600.0
        self.odometer_km += distance_km
        return distance_km

    def _charge(self, dt: float) -> float:
        c = self.charger
        if c.state == "SCHEDULED" and c.due_at is not None and self.now >= c.due_at:
            if c.schedule == "ONCE":
                c.schedule = "OFF"
            self._start_or_complete()
        if c.state != "CHARGING":
            c.power_kw = 0.0
            return 0.0
        target_kw = c.max_kw * taper_factor(self.soc_pct)
        c.power_kw = min(target_kw, c.power_kw + c.max_kw * dt / RAMP_S)
        needed_kwh = (self.charge_limit_pct - self.soc_pct) / 100.0 * self.setup.capacity_kwh
        power_kw = min(c.power_kw, max(0.0, needed_kwh) * 3600.0 / dt)
        if power_kw < c.power_kw or needed_kwh <= 0:
            c.state, c.completed_at = "COMPLETE", self.now + dt
        return power_kw

    def _climate(self, dt: float) -> None:
        if self.climate_on:
            gap = self.climate_target_c - self.cabin_c
            self.hvac_kw = min(6.0, 0.6 + 0.25 * abs(gap))
            self.cabin_c += max(-0.03 * dt, min(0.03 * dt, gap))
        else:
            self.hvac_kw = 0.0
            self.cabin_c += (self.ambient_c - self.cabin_c) * min(1.0, dt / 3600.0)

    def _thermal(self, dt: float) -> None:
        target = self.ambient_c + 3.0 + 0.08 * abs(self.pack_power_kw)
        self.pack_temp_c += (target - self.pack_temp_c) * min(1.0, dt / THERMAL_TAU_S)

    def _aux(self, dt: float) -> None:
        if self.dcdc_state == "ACTIVE":
            self.aux_current_a = DCDC_CHARGE_A if self.aux_soc < 0.98 else 0.5
        else:
            load = self.setup.parasitic_drain_a + IGNITION_LOAD_A[self.ignition] + self.aux_load_a
            self.aux_current_a = -load
        self.aux_soc += self.aux_current_a * dt / 3600.0 / self.setup.aux_capacity_ah
        self.aux_soc = min(1.0, max(0.0, self.aux_soc))
        self._update_aux_voltage()

    def _update_aux_voltage(self) -> None:
        if self.dcdc_state == "ACTIVE":
            self.aux_voltage_v = DCDC_VOLTAGE_V + 0.02 * (1.0 - self.aux_soc) * 10
        else:
            ocv = 11.6 + 1.1 * self.aux_soc
            self.aux_voltage_v = ocv + min(0.0, self.aux_current_a) * AUX_RESISTANCE_OHM

    def local_time(self) -> datetime:
        return datetime.fromtimestamp(self.now, self.tz)


def next_local_time(now: float, tz: tzinfo, minute_of_day: int) -> float:
    """Epoch of the next occurrence (after now) of a local time of day."""
    local = datetime.fromtimestamp(now, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    candidate = midnight + timedelta(minutes=minute_of_day)
    if candidate.timestamp() <= now:
        candidate += timedelta(days=1)
    return candidate.timestamp()
