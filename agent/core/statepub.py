"""What to publish on the state topic, and when: changed signals past a deadband, rate-limited (no IO).

Deltas (``"full": false``, not retained) carry only the signals that moved more than their
deadband since they were last published; a full snapshot (``"full": true``, retained, so a new
subscriber starts from it) goes out on connect and every full_interval_s.
"""

from __future__ import annotations

from typing import Any

from agent.core import vss
from agent.core.model import iso_utc
from agent.core.state import VehicleState

# Changes smaller than these are noise for a person or a fleet dashboard (VSS units).
DEFAULT_DEADBANDS: dict[str, float] = {
    vss.SOC: 0.5, vss.PACK_VOLTAGE: 2.0, vss.PACK_CURRENT: 2.0, vss.PACK_POWER: 1000.0,
    vss.PACK_TEMP: 1.0, vss.AUX_VOLTAGE: 0.05, vss.SPEED: 2.0, vss.ODOMETER: 1.0,
    vss.TIME_TO_COMPLETE: 300.0, vss.TIME_TO_SERVICE: 86400.0, vss.DISTANCE_TO_SERVICE: 10.0,
    vss.CABIN_TEMP: 0.5, vss.CHARGE_POWER: 0.5,
}


class StateReporter:
    def __init__(self, vehicle_id: str, *, min_interval_s: float, full_interval_s: float,
                 deadbands: dict[str, float] | None = None) -> None:
        self.vehicle_id = vehicle_id
        self.min_interval_s = min_interval_s
        self.full_interval_s = full_interval_s
        self.deadbands = {**DEFAULT_DEADBANDS, **(deadbands or {})}
        self.published: dict[str, Any] = {}
        self.published_stale: dict[str, bool] = {}
        self.last_delta = -1e18
        self.last_full = -1e18

    def request_full(self) -> None:
        """On (re)connect: the next poll sends a full retained snapshot."""
        self.last_full = -1e18

    def poll(self, state: VehicleState, now: float) -> tuple[dict[str, Any], bool] | None:
        """The document due at event time ``now`` and whether it is a full snapshot, or None."""
        if now - self.last_full >= self.full_interval_s:
            doc = state.snapshot(self.vehicle_id, now)
            doc["full"] = True
            self._remember(doc)
            self.last_full = self.last_delta = now
            return doc, True
        if now - self.last_delta < self.min_interval_s:
            return None
        snapshot = state.snapshot(self.vehicle_id, now)
        changed = {p: s for p, s in snapshot["signals"].items() if self._moved(p, s)}
        if not changed:
            return None
        doc = {"vehicle_id": self.vehicle_id, "ts": iso_utc(now), "full": False, "signals": changed}
        self._remember(doc)
        self.last_delta = now
        return doc, False

    def _moved(self, path: str, signal: dict[str, Any]) -> bool:
        if path not in self.published or signal["stale"] != self.published_stale.get(path):
            return True
        old, new = self.published[path], signal["value"]
        band = self.deadbands.get(path)
        if band is not None and isinstance(new, int | float) and isinstance(old, int | float) \
                and not isinstance(new, bool):
            return abs(new - old) >= band
        return bool(new != old)

    def _remember(self, doc: dict[str, Any]) -> None:
        for path, s in doc["signals"].items():
            self.published[path] = s["value"]
            self.published_stale[path] = s["stale"]
