"""Scheduled messages on event time: daily summary and plug-in reminder (no IO).

apscheduler's triggers say when a job is due; this clock, not apscheduler's executors, runs
the jobs, from the event time the pipeline passes in. A replayed day therefore gives the same
reminders as the live one, and no thread or wall clock is involved.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agent.core import vss
from agent.core.rules import NEVER, Event
from agent.core.settings import AgentConfig
from agent.core.state import VehicleState

Job = Callable[[VehicleState, float], list[Event]]


class EventClock:
    """Jobs with apscheduler triggers, run when the event time passes their fire time."""

    def __init__(self) -> None:
        self.jobs: list[list[Any]] = []  # [trigger, job, next fire (epoch s) or None]
        self.deadline = NEVER

    def add(self, trigger: BaseTrigger, job: Job) -> None:
        self.jobs.append([trigger, job, None])
        self.deadline = -NEVER  # the first tick schedules it

    def tick(self, state: VehicleState, now: float) -> list[Event]:
        events: list[Event] = []
        at = datetime.fromtimestamp(now, UTC)
        for entry in self.jobs:
            trigger, job, fire = entry
            if fire is None:  # first sight of the clock: schedule from now on
                entry[2] = _ts(trigger.get_next_fire_time(None, at))
                continue
            if now >= fire:
                events.extend(job(state, now))
                previous = datetime.fromtimestamp(fire, UTC)
                entry[2] = _ts(trigger.get_next_fire_time(previous, at))
        self.deadline = min((e[2] for e in self.jobs if e[2] is not None), default=NEVER)
        return events


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


class DayStats:
    """Distance, energy used and energy charged since the last summary, from the state."""

    def __init__(self, capacity_kwh: float) -> None:
        self.capacity = capacity_kwh
        self.odo_start: float | None = None
        self.last_soc: float | None = None
        self.used_kwh = 0.0
        self.charged_kwh = 0.0

    def sample(self, state: VehicleState, now: float) -> list[Event]:
        soc = state.fresh(vss.SOC, now)
        odo = state.fresh(vss.ODOMETER, now)
        if self.odo_start is None and isinstance(odo, int | float):
            self.odo_start = odo
        if isinstance(soc, int | float):
            if self.last_soc is not None:
                delta = (soc - self.last_soc) * self.capacity / 100.0
                if delta > 0 and state.fresh(vss.IS_CHARGING, now):
                    self.charged_kwh += delta
                elif delta < 0:
                    self.used_kwh -= delta
            self.last_soc = soc
        return []

    def summary(self, state: VehicleState, now: float) -> list[Event]:
        self.sample(state, now)
        odo = state.fresh(vss.ODOMETER, now)
        data: dict[str, Any] = {
            "distance_km": round(odo - self.odo_start) if isinstance(odo, int | float) and self.odo_start is not None else 0,
            "energy_used_kwh": round(self.used_kwh, 1), "charged_kwh": round(self.charged_kwh, 1),
            "soc": state.fresh(vss.SOC, now)}
        ttc = state.fresh(vss.TIME_TO_COMPLETE, now)
        if state.fresh(vss.IS_CHARGING, now) and isinstance(ttc, int | float) and ttc > 0:
            data["eta"] = now + ttc
        self.odo_start = odo if isinstance(odo, int | float) else self.odo_start
        self.used_kwh = self.charged_kwh = 0.0
        return [Event("summary.daily", now, "info", data)]


def plug_in_reminder(below_pct: float) -> Job:
    def job(state: VehicleState, now: float) -> list[Event]:
        soc = state.fresh(vss.SOC, now)
        plugged = state.fresh(vss.CABLE_CONNECTED, now) is True or state.fresh(vss.IS_CHARGING, now) is True
        if isinstance(soc, int | float) and soc < below_pct and not plugged:
            return [Event("reminder.plug_in", now, "info", {"soc": soc, "threshold": below_pct})]
        return []

    return job


def build_clock(config: AgentConfig) -> EventClock:
    m, zone = config.messages, ZoneInfo(config.vehicle.timezone)
    clock = EventClock()
    if m.daily_summary:
        stats = DayStats(config.vehicle.battery_capacity_kwh)
        clock.add(IntervalTrigger(seconds=60, start_date=datetime(2000, 1, 1, tzinfo=UTC)), stats.sample)
        hh, mm = m.daily_summary.split(":")
        clock.add(CronTrigger(hour=int(hh), minute=int(mm), timezone=zone), stats.summary)
    if m.plug_in_reminder:
        hh, mm = m.plug_in_reminder.split(":")
        clock.add(CronTrigger(hour=int(hh), minute=int(mm), timezone=zone), plug_in_reminder(m.plug_in_below_pct))
    return clock
