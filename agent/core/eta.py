"""When will the charge be done? Charge-time estimates with the taper above ~80 % (no IO)."""

from __future__ import annotations

import math


def taper_factor(soc_pct: float, taper_start_pct: float, taper_floor: float) -> float:
    """Charging power at soc_pct as a share of the power below the taper start (linear taper)."""
    if soc_pct <= taper_start_pct:
        return 1.0
    span = 100.0 - taper_start_pct
    return max(taper_floor, 1.0 - (1.0 - taper_floor) * (soc_pct - taper_start_pct) / span)


def charge_time_s(soc_pct: float, limit_pct: float, power_kw: float, capacity_kwh: float, *,
                  taper_start_pct: float = 80.0, taper_floor: float = 0.3) -> float | None:
    """Seconds from soc_pct to limit_pct at the measured power, or None if it cannot be told.

    ``power_kw`` is the power measured now; above the taper start it is already tapered, so
    the untapered power is recovered first. Power P(s) = P0 * f(s) with f linear from 1 at the
    taper start down to taper_floor at 100 %; time = integral of capacity/100 ds / P(s).
    """
    if power_kw <= 0.05 or capacity_kwh <= 0:
        return None
    if soc_pct >= limit_pct:
        return 0.0
    p0 = power_kw / taper_factor(soc_pct, taper_start_pct, taper_floor)
    kwh_per_pct = capacity_kwh / 100.0
    flat_end = min(limit_pct, taper_start_pct)
    hours = max(0.0, flat_end - soc_pct) * kwh_per_pct / p0
    lo, hi = max(soc_pct, taper_start_pct), limit_pct
    if hi > lo:
        slope = (1.0 - taper_floor) / (100.0 - taper_start_pct)
        f_lo = 1.0 - slope * (lo - taper_start_pct)
        f_hi = 1.0 - slope * (hi - taper_start_pct)
        hours += kwh_per_pct / p0 * math.log(f_lo / f_hi) / slope
    return hours * 3600.0


class Ewma:
    """Exponentially weighted mean over event time (time constant tau_s), for charging power."""

    __slots__ = ("tau_s", "value", "_ts")

    def __init__(self, tau_s: float = 30.0) -> None:
        self.tau_s = tau_s
        self.value: float | None = None
        self._ts = 0.0

    def add(self, x: float, ts: float) -> float:
        if self.value is None:
            self.value = x
        else:
            dt = max(0.0, ts - self._ts)
            alpha = 1.0 - math.exp(-dt / self.tau_s) if dt else 0.0
            self.value += alpha * (x - self.value)
        self._ts = ts
        return self.value
