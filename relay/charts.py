"""Battery charts for the vehicle page from the state history: series, charging sessions and SVG
geometry, computed from plain values (no IO; ``now`` is passed in, the template draws).

The geometry is in the SVG's own units (``WIDTH`` x ``HEIGHT``, sized for a phone: at 360 units
wide a phone shows it about 1:1, so 11-unit labels stay readable); the page scales it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

TB = "Vehicle.Powertrain.TractionBattery"
SOC = f"{TB}.StateOfCharge.Displayed"
CHARGING = f"{TB}.Charging.IsCharging"
POWER = f"{TB}.CurrentPower"  # W (VSS unit), positive into the battery
AUX_V = "Vehicle.LowVoltageBattery.CurrentVoltage"
PATHS = (SOC, CHARGING, POWER, AUX_V)
AUX_LOW_V = 11.8  # the agent's aux_battery.low threshold (docs/topics.md)

WIDTH, HEIGHT = 360.0, 170.0
LEFT, RIGHT, TOP, BOTTOM = 34.0, 8.0, 8.0, 22.0  # plot margins: y labels left, x labels below
POINTS = 180  # buckets per chart: a point every 8 min over 24 h, every 56 min over 7 days
# Power samples further apart than this are not integrated (the car was off or offline).
MAX_POWER_GAP = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Sample:
    """One state history row, reduced to what the charts use (None: absent or unusable)."""

    ts: datetime
    soc: float | None = None
    charging: bool | None = None
    power_kw: float | None = None
    aux_v: float | None = None


@dataclass(frozen=True, slots=True)
class ChargeSession:
    start: datetime
    end: datetime  # the first sample not charging, or the last sample while still charging
    soc_start: float | None
    soc_end: float | None
    energy_kwh: float | None  # integrated charging power; None without power samples
    ongoing: bool

    @property
    def soc_added(self) -> float | None:
        if self.soc_start is None or self.soc_end is None:
            return None
        return max(0.0, self.soc_end - self.soc_start)


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str
    ts: datetime | None = None  # x ticks: the time, so the page can show it in local time
    fmt: str = ""  # x ticks: "time" (hours) or "day" (weekdays)


@dataclass
class LineChart:
    """An SVG line chart: ``paths`` (one per unbroken run of points), shaded ``bands``
    (charging sessions, as x ranges), an optional dashed ``threshold`` line, axis ticks,
    and the text for screen readers."""

    title: str
    summary: str
    paths: list[str] = field(default_factory=list)
    bands: list[tuple[float, float]] = field(default_factory=list)
    threshold: tuple[float, str] | None = None
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    table: list[tuple[datetime, str, str]] = field(default_factory=list)
    columns: tuple[str, str, str] = ("Time", "", "")
    empty: bool = True


@dataclass
class BarChart:
    title: str
    summary: str
    unit: str
    bars: list[tuple[float, float, float, str]] = field(default_factory=list)  # x, y, w, h / label
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)  # none: each bar carries its value
    sessions: list[ChargeSession] = field(default_factory=list)
    empty: bool = True


# -- samples and sessions -----------------------------------------------------------------------

def number(value: Any) -> float | None:
    """A finite number of sane size from a stored JSON value, else None (what a car stored
    before the ingest checks existed never breaks a chart)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) and abs(f) < 1e9 else None


def sample(ts: datetime, soc: Any, charging: Any, power: Any, aux_v: Any) -> Sample:
    watts = number(power)
    return Sample(ts, number(soc), charging if isinstance(charging, bool) else None,
                  None if watts is None else watts / 1000.0, number(aux_v))


def charge_sessions(samples: Sequence[Sample]) -> list[ChargeSession]:
    """Charging sessions in time order: a run of samples that say charging, ended by the first
    that says not charging. Energy: charging power integrated (trapezoids), gaps skipped."""
    sessions: list[ChargeSession] = []
    run: list[Sample] = []
    for s in samples:
        if s.charging:
            run.append(s)
        elif s.charging is False and run:
            sessions.append(_session(run, s))
            run = []
    if run:
        sessions.append(_session(run, None))
    return sessions


def _session(run: list[Sample], stop: Sample | None) -> ChargeSession:
    socs = [s.soc for s in run if s.soc is not None]
    soc_end = stop.soc if stop is not None and stop.soc is not None else (socs[-1] if socs else None)
    energy, any_power = 0.0, False
    points = run + ([stop] if stop is not None else [])
    for a, b in zip(points, points[1:], strict=False):
        if a.power_kw is None or b.power_kw is None or b.ts - a.ts > MAX_POWER_GAP:
            continue
        any_power = True
        hours = (b.ts - a.ts).total_seconds() / 3600
        energy += max(0.0, (a.power_kw + b.power_kw) / 2) * hours
    return ChargeSession(run[0].ts, stop.ts if stop is not None else run[-1].ts,
                         socs[0] if socs else None, soc_end,
                         round(energy, 2) if any_power else None, stop is None)


# -- line charts -------------------------------------------------------------------------------

def _x(ts: datetime, start: datetime, span_s: float) -> float:
    frac = (ts - start).total_seconds() / span_s
    return round(LEFT + min(1.0, max(0.0, frac)) * (WIDTH - LEFT - RIGHT), 1)


def _y(value: float, lo: float, hi: float) -> float:
    frac = (min(hi, max(lo, value)) - lo) / (hi - lo)
    return round(HEIGHT - BOTTOM - frac * (HEIGHT - TOP - BOTTOM), 1)


def _buckets(samples: Sequence[Sample], value: Callable[[Sample], float | None],
             start: datetime, end: datetime, n: int) -> list[tuple[datetime, float]]:
    """The mean value per bucket (n buckets from start to end), at the bucket's middle."""
    width = (end - start) / n
    sums: dict[int, list[float]] = {}
    for s in samples:
        v = value(s)
        if v is None or not start <= s.ts <= end:
            continue
        i = min(n - 1, int((s.ts - start) / width))
        sums.setdefault(i, []).append(v)
    return [(start + width * (i + 0.5), sum(vs) / len(vs)) for i, vs in sorted(sums.items())]


def line_paths(points: Sequence[tuple[datetime, float]], start: datetime, end: datetime,
               lo: float, hi: float, max_gap: timedelta) -> list[str]:
    """SVG path data, a new path wherever two points are further apart than max_gap (no line
    is drawn across a time the car said nothing)."""
    span_s = (end - start).total_seconds()
    paths: list[str] = []
    current: list[str] = []
    previous: datetime | None = None
    for ts, v in points:
        if previous is not None and ts - previous > max_gap and current:
            paths.append(" ".join(current))
            current = []
        cmd = "M" if not current else "L"
        current.append(f"{cmd}{_x(ts, start, span_s)},{_y(v, lo, hi)}")
        previous = ts
    if current:
        paths.append(" ".join(current))
    # A lone point is a zero-length path: draw it as a short dash so it shows.
    return [p if " " in p else f"{p} h1" for p in paths]


def _x_ticks(start: datetime, end: datetime) -> list[Tick]:
    span = end - start
    step = timedelta(hours=6) if span <= timedelta(days=1) else timedelta(days=1)
    first = start.replace(minute=0, second=0, microsecond=0)
    if step == timedelta(days=1):
        first = first.replace(hour=0)
    else:
        first = first.replace(hour=first.hour - first.hour % 6)
    ticks, t, margin = [], first, span / 20  # no label half outside the plot
    while t <= end - margin:
        if t >= start + margin:
            label = t.strftime("%a") if step == timedelta(days=1) else t.strftime("%H:%M")
            ticks.append(Tick(_x(t, start, span.total_seconds()), label, t,
                              "day" if step == timedelta(days=1) else "time"))
        t += step
    return ticks


def _y_ticks(lo: float, hi: float, values: Sequence[float], fmt: str) -> list[Tick]:
    return [Tick(_y(v, lo, hi), fmt % v) for v in values]


def soc_chart(samples: Sequence[Sample], sessions: Sequence[ChargeSession], now: datetime,
              span: timedelta, title: str) -> LineChart:
    """State of charge from now - span to now, charging sessions shaded; the table has one
    row per hour (24 h) or per 6 hours (longer)."""
    start = now - span
    points = _buckets(samples, lambda s: s.soc, start, now, POINTS)
    chart = LineChart(title, "", columns=("From", "Battery", "Charging"))
    chart.paths = line_paths(points, start, now, 0, 100, max(span / 12, timedelta(hours=2)))
    chart.y_ticks = _y_ticks(0, 100, (0, 50, 100), "%.0f %%")
    chart.x_ticks = _x_ticks(start, now)
    span_s = span.total_seconds()
    for sess in sessions:
        if sess.end >= start:
            x0, x1 = _x(max(sess.start, start), start, span_s), _x(sess.end, start, span_s)
            chart.bands.append((x0, max(1.0, round(x1 - x0, 1))))
    step = timedelta(hours=1) if span <= timedelta(days=1) else timedelta(hours=6)
    for t0, group in _table_groups(samples, start, now, step):
        socs = [s.soc for s in group if s.soc is not None]
        charging = any(s.charging for s in group)
        chart.table.append((t0, f"{socs[-1]:.0f} %" if socs else "—", "yes" if charging else "no"))
    chart.empty = not points
    values = [v for _t, v in points]
    in_span = [s for s in sessions if s.end >= start]
    chart.summary = ("No battery data in this period." if not values else
                     f"Battery between {min(values):.0f} % and {max(values):.0f} %, "
                     f"now {values[-1]:.0f} %; {len(in_span)} charging "
                     f"session{'s' if len(in_span) != 1 else ''}.")
    return chart


def aux_chart(samples: Sequence[Sample], now: datetime, span: timedelta, title: str) -> LineChart:
    """12 V battery voltage, the low-voltage warning threshold dashed; a table row per day."""
    start = now - span
    points = _buckets(samples, lambda s: s.aux_v, start, now, POINTS)
    values = [v for _t, v in points]
    lo = min([10.0, *[math.floor(v) for v in values]])
    hi = max([15.0, *[math.ceil(v) for v in values]])
    chart = LineChart(title, "", columns=("Day from", "Lowest", "Highest"))
    chart.paths = line_paths(points, start, now, lo, hi, max(span / 12, timedelta(hours=2)))
    chart.y_ticks = _y_ticks(lo, hi, (lo, (lo + hi) / 2, hi), "%.1f V")
    chart.x_ticks = _x_ticks(start, now)
    chart.threshold = (_y(AUX_LOW_V, lo, hi), f"{AUX_LOW_V:.1f} V")
    for t0, group in _table_groups(samples, start, now, timedelta(days=1)):
        vs = [s.aux_v for s in group if s.aux_v is not None]
        if vs:
            chart.table.append((t0, f"{min(vs):.2f} V", f"{max(vs):.2f} V"))
    chart.empty = not points
    low = [v for v in values if v < AUX_LOW_V]
    chart.summary = ("No 12 V data in this period." if not values else
                     f"12 V battery between {min(values):.1f} V and {max(values):.1f} V, now "
                     f"{values[-1]:.1f} V" + (f"; below {AUX_LOW_V} V at times." if low else "."))
    return chart


def _table_groups(samples: Sequence[Sample], start: datetime, end: datetime,
                  step: timedelta) -> Iterable[tuple[datetime, list[Sample]]]:
    """Samples grouped by step-long periods (aligned to the step in UTC), periods without any
    sample left out."""
    groups: dict[datetime, list[Sample]] = {}
    step_s = step.total_seconds()
    epoch = datetime(2000, 1, 1)
    for s in samples:
        if start <= s.ts <= end:
            offset = (s.ts - epoch).total_seconds() // step_s * step_s
            groups.setdefault(epoch + timedelta(seconds=offset), []).append(s)
    return sorted(groups.items())


# -- energy per charge ------------------------------------------------------------------------

def energy_chart(sessions: Sequence[ChargeSession], now: datetime, span: timedelta,
                 title: str) -> BarChart:
    """One bar per charging session that started in the span: kWh when the car reports its
    charging power, else the battery percentage points added."""
    recent = [s for s in sessions if s.start >= now - span][-14:]
    use_kwh = any(s.energy_kwh is not None for s in recent)
    unit = "kWh" if use_kwh else "%"
    values = [(s.energy_kwh if use_kwh else s.soc_added) or 0.0 for s in recent]
    top = _nice_ceiling(max(values, default=0.0))
    chart = BarChart(title, "", unit, sessions=list(recent), empty=not recent)
    chart.y_ticks = _y_ticks(0, top, (0, top / 2, top), "%.0f " + ("kWh" if use_kwh else "%%"))
    plot_w = WIDTH - LEFT - RIGHT
    slot = plot_w / max(len(recent), 7)
    for i, v in enumerate(values):
        y = _y(v, 0, top)
        chart.bars.append((round(LEFT + i * slot + slot * 0.15, 1), y, round(slot * 0.7, 1),
                           f"{v:.1f}" if use_kwh else f"{v:.0f}"))
    total = sum(values)
    chart.summary = ("No charging sessions in this period." if not recent else
                     f"{len(recent)} charging session{'s' if len(recent) != 1 else ''}, "
                     f"{total:.1f} {'kWh' if use_kwh else 'percentage points'} added in all.")
    return chart


def _nice_ceiling(value: float) -> float:
    """A round upper bound for an axis: 10, 20, 50, 100... (at least 10)."""
    if value <= 10:
        return 10.0
    magnitude = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if value <= m * magnitude:
            return float(m * magnitude)
    return float(10 * magnitude)


DIMS = {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP,
        "bottom": HEIGHT - BOTTOM, "plot_h": HEIGHT - TOP - BOTTOM}


@dataclass
class Charts:
    soc_day: LineChart
    soc_week: LineChart
    energy: BarChart
    aux: LineChart
    dims: dict[str, float] = field(default_factory=lambda: dict(DIMS))


def build(samples: Sequence[Sample], now: datetime) -> Charts:
    """The vehicle page's charts from state history samples (in time order) up to now."""
    sessions = charge_sessions(samples)
    day, week = timedelta(days=1), timedelta(days=7)
    return Charts(soc_chart(samples, sessions, now, day, "Battery, last 24 hours"),
                  soc_chart(samples, sessions, now, week, "Battery, last 7 days"),
                  energy_chart(sessions, now, week, "Energy added per charge, last 7 days"),
                  aux_chart(samples, now, week, "12 V battery, last 7 days"))
