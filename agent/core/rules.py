"""Rules: the vehicle state on event time -> events, once per episode, never flapping (no IO)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.core import vss
from agent.core.eta import Ewma, charge_time_s
from agent.core.i18n import local
from agent.core.settings import AgentConfig, Severity
from agent.core.settings import ThresholdRule as ThresholdConfig
from agent.core.state import VehicleState
from agent.core.windows import in_window, parse_window

NEVER = math.inf


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    ts: float
    severity: Severity
    data: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # tells apart events of one kind at one instant (e.g. two DTCs)


class Rule(Protocol):
    inputs: frozenset[str]
    deadline: float  # event time at which the rule wants to be evaluated even without a change

    def evaluate(self, state: VehicleState, now: float) -> list[Event]: ...


def _num(state: VehicleState, path: str, now: float) -> float | None:
    value = state.fresh(path, now)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _timer_armed(state: VehicleState, now: float) -> bool:
    """A scheduled charging start is set (charging timer mode other than off)."""
    return str(state.fresh(vss.TIMER_MODE, now) or "OFF").upper() not in ("OFF", "INACTIVE", "0")


class ThresholdRule:
    """Fires when a value crosses a threshold (for for_s), then waits for the re-arm level.

    Stale or missing input changes nothing: the latch keeps its state until fresh data arrives.
    """

    def __init__(self, kind: str, path: str, cfg: ThresholdConfig, *, below: bool,
                 unless: str | None = None, data_name: str = "value") -> None:
        self.kind, self.path, self.cfg, self.below = kind, path, cfg, below
        self.unless = unless  # a boolean VSS path that, when true, suppresses the rule
        self.data_name = data_name
        self.inputs = frozenset({path} | ({unless} if unless else set()))
        self.armed = True
        self.onset: float | None = None
        self.deadline = NEVER

    def evaluate(self, state: VehicleState, now: float) -> list[Event]:
        value = _num(state, self.path, now)
        if value is None:
            self.deadline = NEVER
            return []
        cfg = self.cfg
        if not self.armed:
            if (value >= cfg.rearm) if self.below else (value <= cfg.rearm):
                self.armed = True
            return []
        tripped = (value < cfg.threshold) if self.below else (value > cfg.threshold)
        if not tripped or (self.unless and state.fresh(self.unless, now) is True):
            self.onset, self.deadline = None, NEVER
            return []
        if self.onset is None:
            self.onset = now
        if now - self.onset < cfg.for_s:
            self.deadline = self.onset + cfg.for_s
            return []
        data = {self.data_name: value, "since": self.onset} if cfg.for_s else {self.data_name: value}
        self.armed, self.onset, self.deadline = False, None, NEVER
        return [Event(self.kind, now, cfg.severity, data)]


class ChargeRule:
    """charge.started (with ETA) / charge.completed / charge.interrupted, debounced both ways."""

    IDLE, STARTING, CHARGING, STOPPING = range(4)

    def __init__(self, config: AgentConfig) -> None:
        self.cfg = config.rules.charging
        self.capacity_kwh = config.vehicle.battery_capacity_kwh
        self.inputs = frozenset({vss.IS_CHARGING, vss.SOC, vss.CHARGE_POWER, vss.PACK_POWER, vss.TIME_TO_COMPLETE,
                                 vss.TIMER_MODE})
        self.phase = self.IDLE
        self.since = 0.0
        self.start_soc: float | None = None
        self.power = Ewma(30.0)
        self.deadline = NEVER
        self.offpeak: OffPeakRule | None = None  # set by build_rules when both exist

    def evaluate(self, state: VehicleState, now: float) -> list[Event]:
        charging = state.fresh(vss.IS_CHARGING, now)
        if charging is None:
            self.deadline = NEVER
            return []
        if charging:
            self._sample_power(state, now)
        if self.phase == self.IDLE and charging:
            self.phase, self.since = self.STARTING, now
            self.start_soc = _num(state, vss.SOC, now)
            self.power = Ewma(30.0)
            self._sample_power(state, now)
        elif self.phase == self.STARTING and not charging:
            self.phase = self.IDLE  # a glitch, not a charge
        elif self.phase == self.CHARGING and not charging:
            self.phase, self.since = self.STOPPING, now
        elif self.phase == self.STOPPING and charging:
            self.phase = self.CHARGING  # a glitch, not a stop
        if self.phase == self.STARTING:
            return self._maybe_started(state, now)
        if self.phase == self.STOPPING:
            return self._maybe_stopped(state, now)
        self.deadline = NEVER
        return []

    def _sample_power(self, state: VehicleState, now: float) -> None:
        power = _num(state, vss.CHARGE_POWER, now)  # kW
        if power is None:
            pack_w = _num(state, vss.PACK_POWER, now)  # W, VSS's unit; the ETA works in kW
            power = abs(pack_w) / 1000.0 if pack_w is not None else None
        if power is not None and power > 0:
            self.power.add(abs(power), now)

    def _maybe_started(self, state: VehicleState, now: float) -> list[Event]:
        if now - self.since < self.cfg.settle_s:
            self.deadline = self.since + self.cfg.settle_s
            return []
        self.phase, self.deadline = self.CHARGING, NEVER
        soc = _num(state, vss.SOC, now)
        limit = _num(state, vss.CHARGE_LIMIT, now) or 100.0
        data: dict[str, Any] = {"soc": soc, "limit": limit, "started_at": self.since}
        eta_s, source = self._eta_s(state, now, soc, limit)
        if eta_s is not None:
            data["eta"] = now + eta_s
            data["eta_source"] = source
        if self.power.value is not None:
            data["power_kw"] = round(self.power.value, 1)
        asked = self.offpeak.asked_at if self.offpeak is not None else None
        if asked is not None and self.since - 600 <= asked <= now:
            data["offpeak_asked"] = True  # the owner was just asked whether to wait: no second question
        return [Event("charge.started", now, "info", data)]

    def _eta_s(self, state: VehicleState, now: float, soc: float | None,
               limit: float) -> tuple[float | None, str]:
        ttc = _num(state, vss.TIME_TO_COMPLETE, now)
        max_s = self.cfg.max_eta_h * 3600.0
        if ttc is not None and 0 < ttc <= max_s:
            return ttc, "charger"
        if soc is None or self.power.value is None:
            return None, ""
        est = charge_time_s(soc, limit, self.power.value, self.capacity_kwh,
                            taper_start_pct=self.cfg.taper_start_pct, taper_floor=self.cfg.taper_floor)
        if est is None or est > max_s:
            return None, ""
        return est, "power"

    def _maybe_stopped(self, state: VehicleState, now: float) -> list[Event]:
        if now - self.since < self.cfg.stop_debounce_s:
            self.deadline = self.since + self.cfg.stop_debounce_s
            return []
        self.phase, self.deadline = self.IDLE, NEVER
        soc = _num(state, vss.SOC, now)
        limit = _num(state, vss.CHARGE_LIMIT, now) or 100.0
        data: dict[str, Any] = {"soc": soc, "limit": limit}
        if soc is not None and self.start_soc is not None:
            data["added_kwh"] = round(max(0.0, soc - self.start_soc) * self.capacity_kwh / 100.0, 1)
        if soc is not None and soc >= limit - self.cfg.complete_margin_pct:
            return [Event("charge.completed", self.since, "info", data)]
        if _timer_armed(state, now):
            return []  # waiting for a scheduled start (e.g. the owner said "later"): not a fault
        if state.fresh(vss.CABLE_CONNECTED, now) is True:
            return [Event("charge.interrupted", self.since, "warning", data)]
        return []  # unplugged early: the owner's own doing, nothing to report


class ServiceRule:
    """service.due once per service interval: re-arms when the countdown is reset."""

    def __init__(self, config: AgentConfig) -> None:
        self.cfg = config.rules.service_due
        self.inputs = frozenset({vss.TIME_TO_SERVICE, vss.DISTANCE_TO_SERVICE})
        self.armed = True
        self.deadline = NEVER

    def evaluate(self, state: VehicleState, now: float) -> list[Event]:
        tts = _num(state, vss.TIME_TO_SERVICE, now)
        dts = _num(state, vss.DISTANCE_TO_SERVICE, now)
        if tts is None and dts is None:
            return []
        limit_s = self.cfg.days * 86400.0
        due = (tts is not None and tts <= limit_s) or (dts is not None and dts <= self.cfg.distance_km)
        if not self.armed:
            # A reset countdown (service done) is well above both thresholds again.
            if (tts is None or tts > 2 * limit_s) and (dts is None or dts > 2 * self.cfg.distance_km):
                self.armed = True
            return []
        if not due:
            return []
        self.armed = False
        data: dict[str, Any] = {}
        if tts is not None:
            data["days"] = max(0, math.floor(tts / 86400.0))
        if dts is not None:
            data["distance_km"] = max(0, round(dts))
        odo = _num(state, vss.ODOMETER, now)
        if odo is not None:
            data["odometer_km"] = round(odo)
        return [Event("service.due", now, self.cfg.severity, data)]


class DtcRule:
    """dtc.new for each code that becomes active; a code is announced again only after it
    cleared and stayed away for an hour (repeated broadcasts never fire again)."""

    REFIRE_AFTER_S = 3600.0

    def __init__(self, config: AgentConfig) -> None:
        self.cfg = config.rules.dtc_new
        self.inputs = frozenset({vss.DTC_LIST})
        self.announced: dict[str, float] = {}  # code -> last time seen active
        self.deadline = NEVER

    def evaluate(self, state: VehicleState, now: float) -> list[Event]:
        state.expire_dtcs(now)
        active = state.dtc_seen
        events = []
        for code in sorted(active):
            last = self.announced.get(code)
            if last is None or now - last > self.REFIRE_AFTER_S:
                critical = any(code.startswith(p) for p in self.cfg.critical_codes)
                events.append(Event("dtc.new", now, "critical" if critical else self.cfg.severity,
                                    {"code": code, "active": sorted(active)}, key=code))
            self.announced[code] = now
        self.deadline = (min(active.values()) + state.dtc_clear_after_s + 0.001) if active else NEVER
        return events


class OffPeakRule:
    """Plugged in during peak hours with an off-peak window configured: ask whether to wait."""

    def __init__(self, config: AgentConfig) -> None:
        assert config.vehicle.offpeak_window is not None
        self.window = parse_window(config.vehicle.offpeak_window)
        self.start = config.vehicle.offpeak_window.split("-")[0]
        self.zone = config.vehicle.timezone
        self.inputs = frozenset({vss.CABLE_CONNECTED, vss.TIMER_MODE})
        self.plugged: bool | None = None
        self.asked_at: float | None = None  # the charge rule does not ask a second question
        self.deadline = NEVER

    def evaluate(self, state: VehicleState, now: float) -> list[Event]:
        plugged = state.fresh(vss.CABLE_CONNECTED, now)
        if plugged is None:
            return []
        was, self.plugged = self.plugged, bool(plugged)
        if was is not False or not plugged or in_window(local(now, self.zone).time(), self.window):
            return []
        if _timer_armed(state, now):
            return []  # a scheduled start is already set: nothing to ask
        self.asked_at = now
        return [Event("charge.offpeak_question", now, "info", {"start": self.start})]


def build_rules(config: AgentConfig, mapped: frozenset[str]) -> tuple[list[Rule], list[str]]:
    """The enabled rules whose inputs are mapped, and a note for each one left out."""
    r = config.rules
    candidates: list[tuple[bool, list[str], Any]] = [
        (r.battery_low.enabled, [vss.SOC], lambda: ThresholdRule(
            "battery.low", vss.SOC, r.battery_low, below=True, unless=vss.IS_CHARGING, data_name="soc")),
        (r.battery_critical.enabled, [vss.SOC], lambda: ThresholdRule(
            "battery.critical", vss.SOC, r.battery_critical, below=True, unless=vss.IS_CHARGING, data_name="soc")),
        (r.battery_hot.enabled, [vss.PACK_TEMP], lambda: ThresholdRule(
            "battery.hot", vss.PACK_TEMP, r.battery_hot, below=False, data_name="temperature_c")),
        (r.aux_battery_low.enabled, [vss.AUX_VOLTAGE], lambda: ThresholdRule(
            "aux_battery.low", vss.AUX_VOLTAGE, r.aux_battery_low, below=True, data_name="voltage_v")),
        (r.charging.enabled, [vss.IS_CHARGING], lambda: ChargeRule(config)),
        (r.service_due.enabled, [vss.TIME_TO_SERVICE, vss.DISTANCE_TO_SERVICE], lambda: ServiceRule(config)),
        (r.dtc_new.enabled, [vss.DTC_LIST], lambda: DtcRule(config)),
        (config.vehicle.offpeak_window is not None, [vss.CABLE_CONNECTED], lambda: OffPeakRule(config)),
    ]
    names = ["battery_low", "battery_critical", "battery_hot", "aux_battery_low", "charging",
             "service_due", "dtc_new", "offpeak_question"]
    rules: list[Rule] = []
    notes: list[str] = []
    for name, (enabled, needs, make) in zip(names, candidates, strict=True):
        if not enabled:
            continue
        if not any(p in mapped for p in needs):
            notes.append(f"[rules] {name}: off, no mapping for {' or '.join(needs)}")
            continue
        rules.append(make())
    charge = next((r for r in rules if isinstance(r, ChargeRule)), None)
    if charge is not None:
        charge.offpeak = next((r for r in rules if isinstance(r, OffPeakRule)), None)
    return rules, notes


class RuleEngine:
    """Evaluates the rules touched by a change, and those whose deadline has come."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.by_path: dict[str, list[Rule]] = {}
        for rule in rules:
            for path in rule.inputs:
                self.by_path.setdefault(path, []).append(rule)
        self.deadline = NEVER
        self.now = -NEVER

    def on_change(self, changed: tuple[str, ...], state: VehicleState, now: float) -> list[Event]:
        if now > self.now:
            self.now = now
        now = self.now  # never step back in time on a reordered frame
        due: list[Rule] = []
        for path in changed:
            for rule in self.by_path.get(path, ()):
                if rule not in due:
                    due.append(rule)
        if now >= self.deadline:
            due.extend(r for r in self.rules if r.deadline <= now and r not in due)
        events: list[Event] = []
        for rule in due:
            events.extend(rule.evaluate(state, now))
        self.deadline = min((r.deadline for r in self.rules), default=NEVER)
        return events
