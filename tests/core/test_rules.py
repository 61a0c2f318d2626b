"""Rules on event time: once per episode, debounced, never flapping (pure core, no IO)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import vss
from agent.core.rules import (
    ChargeRule,
    DtcRule,
    Event,
    RuleEngine,
    ServiceRule,
    ThresholdRule,
    build_rules,
)
from agent.core.settings import AgentConfig
from agent.core.state import VehicleState

CONFIG = AgentConfig.model_validate({"vehicle": {"id": "t", "battery_capacity_kwh": 60}})


def run(rules: list[Any], samples: list[tuple[float, dict[str, Any]]]) -> list[Event]:
    """Feed (time, {path: value}) samples through an engine; return the events."""
    state = VehicleState(stale_after={p: 30.0 for p in (
        vss.SOC, vss.IS_CHARGING, vss.AUX_VOLTAGE, vss.CABLE_CONNECTED, vss.CHARGE_LIMIT, vss.PACK_POWER,
        vss.TIME_TO_SERVICE, vss.DISTANCE_TO_SERVICE, vss.PACK_TEMP, vss.TIMER_MODE)})
    engine = RuleEngine(rules)
    events: list[Event] = []
    for ts, values in samples:
        changed = tuple(p for p, v in values.items() if state.set(p, v, ts))
        events += engine.on_change(changed, state, ts)
    return events


def low_rule() -> ThresholdRule:
    return ThresholdRule("battery.low", vss.SOC, CONFIG.rules.battery_low, below=True, unless=vss.IS_CHARGING)


def aux_rule() -> ThresholdRule:
    return ThresholdRule("aux_battery.low", vss.AUX_VOLTAGE, CONFIG.rules.aux_battery_low, below=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=15.0, max_value=24.99), min_size=1, max_size=300))
def test_battery_low_fires_at_most_once_while_soc_hovers_at_threshold(socs: list[float]) -> None:
    events = run([low_rule()], [(float(i), {vss.SOC: s, vss.IS_CHARGING: False}) for i, s in enumerate(socs)])
    assert len(events) == (1 if any(s < 20 for s in socs) else 0)


def test_battery_low_rearms_only_at_25_percent_and_fires_again() -> None:
    socs = [22, 19, 21, 19, 24.9, 19, 25, 23, 19.5]
    events = run([low_rule()], [(float(i), {vss.SOC: s, vss.IS_CHARGING: False}) for i, s in enumerate(socs)])
    assert [e.ts for e in events] == [1.0, 8.0]


def test_battery_low_does_not_fire_while_charging() -> None:
    events = run([low_rule()], [(float(i), {vss.SOC: 15.0, vss.IS_CHARGING: True}) for i in range(10)])
    assert events == []


def test_aux_battery_dip_of_30_s_does_not_fire_but_90_s_fires_once() -> None:
    samples = [(float(t), {vss.AUX_VOLTAGE: 11.5 if 10 <= t < 40 or 100 <= t < 190 else 12.6}) for t in range(300)]
    events = run([aux_rule()], samples)
    assert [(e.kind, e.ts) for e in events] == [("aux_battery.low", 160.0)]
    assert events[0].data["since"] == 100.0


def test_aux_battery_waits_for_deadline_even_when_value_does_not_change() -> None:
    # The payload repeats (no change) after the dip starts: the deadline alone must fire it.
    state = VehicleState(stale_after={vss.AUX_VOLTAGE: 300.0})
    engine = RuleEngine([aux_rule()])
    state.set(vss.AUX_VOLTAGE, 11.5, 0.0)
    assert engine.on_change((vss.AUX_VOLTAGE,), state, 0.0) == []
    assert engine.deadline == 60.0
    assert [e.kind for e in engine.on_change((), state, 61.0)] == ["aux_battery.low"]


def test_stale_input_never_fires() -> None:
    state = VehicleState(stale_after={vss.AUX_VOLTAGE: 5.0})
    engine = RuleEngine([aux_rule()])
    state.set(vss.AUX_VOLTAGE, 11.0, 0.0)
    engine.on_change((vss.AUX_VOLTAGE,), state, 0.0)
    assert engine.on_change((), state, 100.0) == []  # the last reading is 100 s old


def charge_samples(stop_soc: float, plugged_after: bool, glitch: bool = False) -> list[tuple[float, dict[str, Any]]]:
    samples: list[tuple[float, dict[str, Any]]] = []
    soc = 50.0
    for t in range(0, 400):
        charging = 10 <= t < 300
        if glitch and t == 150:
            charging = False
        if charging:
            soc = min(stop_soc, soc + 0.2)
        samples.append((float(t), {vss.IS_CHARGING: charging, vss.SOC: soc, vss.CHARGE_LIMIT: 80.0,
                                   vss.PACK_POWER: 7000.0 if charging else 0.0,  # W (VSS)
                                   vss.CABLE_CONNECTED: plugged_after or t < 300}))
    return samples


def test_charge_completed_when_stopped_at_the_limit() -> None:
    events = run([ChargeRule(CONFIG)], charge_samples(80.0, plugged_after=True))
    assert [e.kind for e in events] == ["charge.started", "charge.completed"]
    assert events[0].data["eta"] > events[0].ts and events[1].ts == 300.0


def test_charge_interrupted_when_stopped_early_while_plugged_in() -> None:
    events = run([ChargeRule(CONFIG)], charge_samples(70.0, plugged_after=True))
    assert [e.kind for e in events] == ["charge.started", "charge.interrupted"]


def test_stopping_for_a_scheduled_start_is_not_reported_as_interrupted() -> None:
    samples = charge_samples(70.0, plugged_after=True)
    for ts, values in samples:
        values[vss.TIMER_MODE] = "ONCE" if ts >= 290 else "OFF"
    events = run([ChargeRule(CONFIG)], samples)
    assert [e.kind for e in events] == ["charge.started"]


def test_unplugging_early_is_not_reported_as_interrupted() -> None:
    events = run([ChargeRule(CONFIG)], charge_samples(70.0, plugged_after=False))
    assert [e.kind for e in events] == ["charge.started"]


def test_a_one_second_charging_glitch_is_not_a_stop() -> None:
    events = run([ChargeRule(CONFIG)], charge_samples(80.0, plugged_after=True, glitch=True))
    assert [e.kind for e in events] == ["charge.started", "charge.completed"]


def test_service_due_fires_once_per_interval_and_rearms_after_reset() -> None:
    days = [30, 20, 14, 13, 12, 5, 365, 300, 10]
    samples = [(float(i), {vss.TIME_TO_SERVICE: d * 86400.0, vss.DISTANCE_TO_SERVICE: 5000.0}) for i, d in enumerate(days)]
    events = run([ServiceRule(CONFIG)], samples)
    assert [(e.ts, e.data["days"]) for e in events] == [(2.0, 14), (8.0, 10)]


def test_dtc_new_fires_once_per_code_despite_repeated_broadcasts() -> None:
    state = VehicleState()
    engine = RuleEngine([DtcRule(CONFIG)])
    events: list[Event] = []
    for t in range(100):
        changed = state.set_dtc("P0A80", True, float(t))
        if t >= 50:
            changed |= state.set_dtc("U0100", True, float(t) + 0.5)
        events += engine.on_change((vss.DTC_LIST,) if changed else (), state, float(t) + 0.5)
    assert [(e.kind, e.data["code"]) for e in events] == [("dtc.new", "P0A80"), ("dtc.new", "U0100")]


def test_rules_without_mapped_inputs_are_left_out_with_a_note() -> None:
    rules, notes = build_rules(CONFIG, frozenset({vss.SOC}))
    assert {type(r).__name__ for r in rules} == {"ThresholdRule"}
    assert any("charging" in n for n in notes) and any("dtc_new" in n for n in notes)
