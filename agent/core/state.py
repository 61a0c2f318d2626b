"""The vehicle's state: the latest value of each VSS path, its event time and staleness (no IO)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.core.model import iso_utc
from agent.core.vss import DTC_LIST

DEFAULT_STALE_AFTER_S = 10.0


class VehicleState:
    """Latest values by VSS path. Written only by the worker; readers get copies."""

    __slots__ = ("values", "stamps", "stale_after", "dtc_seen", "dtc_clear_after_s", "now", "changes", "unusable")

    def __init__(self, stale_after: dict[str, float] | None = None, dtc_clear_after_s: float = 30.0) -> None:
        self.values: dict[str, Any] = {}
        self.stamps: dict[str, float] = {}
        self.stale_after: dict[str, float] = dict(stale_after or {})
        self.dtc_seen: dict[str, float] = {}
        self.dtc_clear_after_s = dtc_clear_after_s
        self.now = 0.0
        self.changes = 0  # bumped on every changed value: the state topic publishes when it moved
        self.unusable: dict[str, float] = {}  # path -> time of its last "not available"/dropped reading

    def set(self, path: str, value: Any, ts: float) -> bool:
        """Store a value; True when it differs from the previous one (or that one was stale)."""
        previous_ts = self.stamps.get(path)
        self.stamps[path] = ts
        if ts > self.now:
            self.now = ts
        if previous_ts is not None and self.values.get(path) == value and not self._stale(path, previous_ts, ts):
            return False
        self.values[path] = value
        self.changes += 1
        return True

    def touch(self, paths: Iterable[str], ts: float) -> None:
        """The same payload came again: its values are fresh as of ts."""
        stamps = self.stamps
        for path in paths:
            stamps[path] = ts
        if ts > self.now:
            self.now = ts

    def set_dtc(self, code: str, active: bool, ts: float) -> bool:
        """A DTC broadcast: the code is active (seen now) or reported inactive."""
        if ts > self.now:
            self.now = ts
        self.stamps[DTC_LIST] = ts
        if active:
            known = code in self.dtc_seen
            self.dtc_seen[code] = ts
            if known:
                return False
        elif self.dtc_seen.pop(code, None) is None:
            if DTC_LIST not in self.values:
                self.values[DTC_LIST] = []
                return True
            return False
        self.values[DTC_LIST] = sorted(self.dtc_seen)
        self.changes += 1
        return True

    def no_dtcs(self, ts: float) -> bool:
        """A DTC broadcast of code 0 ("no code"): the list is empty; True if that changed it."""
        if ts > self.now:
            self.now = ts
        self.stamps[DTC_LIST] = ts
        had = bool(self.dtc_seen) or DTC_LIST not in self.values
        self.dtc_seen.clear()
        if had:
            self.values[DTC_LIST] = []
            self.changes += 1
        return had

    def expire_dtcs(self, now: float) -> bool:
        """Drop codes not broadcast as active for dtc_clear_after_s; True if the list changed."""
        gone = [c for c, seen in self.dtc_seen.items() if now - seen > self.dtc_clear_after_s]
        for code in gone:
            del self.dtc_seen[code]
        if gone:
            self.values[DTC_LIST] = sorted(self.dtc_seen)
            self.changes += 1
        return bool(gone)

    def fresh(self, path: str, now: float) -> Any:
        """The value if it is known and not stale at ``now``, else None."""
        ts = self.stamps.get(path)
        if ts is None or self._stale(path, ts, now):
            return None
        return self.values.get(path)

    def mark_unusable(self, path: str, ts: float) -> None:
        """A reading came but was not usable ("not available", out of range): the kept value is
        no longer current. Only current() heeds this; the published state keeps the last value."""
        self.unusable[path] = ts

    def current(self, path: str, now: float, max_age_s: float) -> Any:
        """The value if fresh, read within max_age_s of now and not marked unusable since; else None."""
        ts = self.stamps.get(path)
        if ts is None or now - ts > max_age_s or self._stale(path, ts, now) or self.unusable.get(path, -1e300) >= ts:
            return None
        return self.values.get(path)

    def is_fresh(self, path: str, now: float) -> bool:
        ts = self.stamps.get(path)
        return ts is not None and not self._stale(path, ts, now)

    def _stale(self, path: str, ts: float, now: float) -> bool:
        return now - ts > self.stale_after.get(path, DEFAULT_STALE_AFTER_S)

    def snapshot(self, vehicle_id: str, now: float | None = None) -> dict[str, Any]:
        """The document published on the state topic and written by `replay --state`."""
        at = self.now if now is None else now
        signals = {
            path: {"value": self.values[path], "ts": iso_utc(ts), "stale": self._stale(path, ts, at)}
            for path, ts in sorted(self.stamps.items()) if path in self.values
        }
        return {"vehicle_id": vehicle_id, "ts": iso_utc(at), "signals": signals}
