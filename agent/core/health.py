"""The agent's `health` document: its model, rates between two samples, and the CAN controller's state (no IO).

The daemon samples counters it keeps anyway (frames, drops, outbox, CPU time, RSS) once per
`[health] interval_s` and hands them in with `now`; nothing here runs per frame. The bus
state comes from the error frames SocketCAN delivers (linux/can/error.h), read only when one
arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.core.model import iso_utc

BusStateName = Literal["active", "error_warning", "error_passive", "bus_off", "closed"]
Count = Annotated[int, Field(ge=0)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# linux/can/error.h: error classes in the error frame's id, controller status in data[1]
CAN_ERR_CRTL, CAN_ERR_BUSOFF, CAN_ERR_RESTARTED = 0x004, 0x040, 0x100
CRTL_WARNING, CRTL_PASSIVE, CRTL_ACTIVE = 0x04 | 0x08, 0x10 | 0x20, 0x40


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FramesHealth(_Doc):
    total: Count = Field(description="Frames read since start (error frames included).")
    per_s: NonNeg = Field(description="Frames a second over the last interval.")
    decoded: Count
    dropped: dict[str, Count] = Field(description="Frames and values dropped since start, by reason.")


class BusHealth(_Doc):
    interface: str
    channel: str | None
    state: BusStateName = Field(description=(
        "From the controller's error frames (SocketCAN reports them; interfaces that report none show "
        "'active' while open); 'closed' while the agent has no bus open."))
    error_frames: Count
    bus_off_count: Count = Field(description="Times the controller went bus-off since start.")


class OutboxHealth(_Doc):
    depth: Count = Field(description="Messages queued, not yet acknowledged by the broker.")
    oldest_age_s: NonNeg | None
    dropped: dict[str, Count] = Field(description="Dropped because the outbox was full, by severity.")


class PollsHealth(_Doc):
    answered: Count | None = Field(default=None, description="Diagnostic polls answered (null: no polling).")
    timed_out: Count | None = None


class ProcessHealth(_Doc):
    cpu_pct: NonNeg = Field(description="CPU time over wall time in the last interval, % of one core.")
    rss_bytes: Count | None


class HealthReport(_Doc):
    """One `health` document, as published on ``carfriend/v1/<vehicle_id>/health``."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={
        "title": "carfriend agent health", "$id": "carfriend/v1/health"})

    vehicle_id: str
    ts: str = Field(description="Wall-clock time of the sample, ISO 8601 UTC.")
    version: str
    uptime_s: NonNeg
    interval_s: NonNeg = Field(description="Time the rates are measured over.")
    frames: FramesHealth
    bus: BusHealth
    outbox: OutboxHealth
    polls: PollsHealth = PollsHealth()
    process: ProcessHealth
    mqtt_sent: Count = Field(description="Outbox messages handed to the broker since start.")


def health_json_schema() -> dict[str, Any]:
    return HealthReport.model_json_schema()


class BusErrorState:
    """The CAN controller's state as its error frames tell it. Fed only error frames."""

    def __init__(self) -> None:
        self.state: BusStateName = "active"
        self.error_frames = 0
        self.bus_off_count = 0

    def on_error_frame(self, can_id: int, data: bytes) -> None:
        self.error_frames += 1
        if can_id & CAN_ERR_BUSOFF:
            if self.state != "bus_off":
                self.bus_off_count += 1
            self.state = "bus_off"
        elif can_id & CAN_ERR_RESTARTED:
            self.state = "active"
        elif can_id & CAN_ERR_CRTL and len(data) > 1:
            status = data[1]
            if status & CRTL_PASSIVE:
                self.state = "error_passive"
            elif status & CRTL_WARNING:
                self.state = "error_warning"
            elif status & CRTL_ACTIVE:
                self.state = "active"

    def reopened(self) -> None:
        """A new bus handle: the controller starts error-active."""
        self.state = "active"


@dataclass(frozen=True, slots=True)
class Sample:
    """What the daemon reads once per interval: a monotonic time, process CPU seconds, RSS."""

    mono: float
    cpu_s: float
    rss_bytes: int | None
    frames: int


class HealthMeter:
    """Turns successive samples into reports (rates over the interval between them)."""

    def __init__(self, vehicle_id: str, version: str, first: Sample) -> None:
        self.vehicle_id = vehicle_id
        self.version = version
        self.started = first.mono
        self.last = first

    def report(self, now: float, sample: Sample, *, counters: dict[str, Any], bus: BusHealth,
               outbox: dict[str, Any], mqtt_sent: int) -> HealthReport:
        span = max(sample.mono - self.last.mono, 1e-9)
        per_s = max(0, sample.frames - self.last.frames) / span
        cpu_pct = max(0.0, sample.cpu_s - self.last.cpu_s) / span * 100
        self.last = sample
        return HealthReport(
            vehicle_id=self.vehicle_id, ts=iso_utc(now), version=self.version,
            uptime_s=round(sample.mono - self.started, 1), interval_s=round(span, 3),
            frames=FramesHealth(total=counters["frames"], per_s=round(per_s, 1), decoded=counters["decoded"],
                                dropped=counters["dropped"]),
            bus=bus,
            outbox=OutboxHealth(depth=outbox["queued_total"], oldest_age_s=outbox["oldest_age_s"],
                                dropped=outbox["dropped"]),
            process=ProcessHealth(cpu_pct=round(cpu_pct, 1), rss_bytes=sample.rss_bytes),
            mqtt_sent=mqtt_sent)
