"""State topic: deltas past a deadband, rate-limited; full retained snapshots on connect and periodically."""

from __future__ import annotations

from agent.core import vss
from agent.core.state import VehicleState
from agent.core.statepub import StateReporter


def test_deltas_carry_only_signals_that_moved_past_their_deadband() -> None:
    state = VehicleState(stale_after={vss.SOC: 60, vss.AUX_VOLTAGE: 60})
    rep = StateReporter("car", min_interval_s=5, full_interval_s=900)
    state.set(vss.SOC, 50.0, 0.0)
    state.set(vss.AUX_VOLTAGE, 12.6, 0.0)
    doc, full = rep.poll(state, 0.0)
    assert full and set(doc["signals"]) == {vss.SOC, vss.AUX_VOLTAGE}
    state.set(vss.SOC, 50.3, 10.0)  # under the 0.5 % deadband
    state.set(vss.AUX_VOLTAGE, 12.5, 10.0)  # 0.1 V: past the 0.05 V deadband
    doc, full = rep.poll(state, 10.0)
    assert not full and set(doc["signals"]) == {vss.AUX_VOLTAGE}
    state.set(vss.SOC, 50.6, 12.0)
    assert rep.poll(state, 12.0) is None  # 2 s after the last: rate-limited
    doc, _ = rep.poll(state, 15.0)
    assert set(doc["signals"]) == {vss.SOC}  # 0.6 from the published 50.0


def test_stale_flip_is_published_and_full_snapshot_comes_periodically() -> None:
    state = VehicleState(stale_after={vss.SOC: 30})
    rep = StateReporter("car", min_interval_s=5, full_interval_s=900)
    state.set(vss.SOC, 50.0, 0.0)
    rep.poll(state, 0.0)
    doc, _ = rep.poll(state, 40.0)
    assert doc["signals"][vss.SOC]["stale"] is True
    assert rep.poll(state, 100.0) is None
    assert rep.poll(state, 900.0)[1] is True
    rep.request_full()
    assert rep.poll(state, 901.0)[1] is True
