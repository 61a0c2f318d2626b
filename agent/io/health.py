"""Publishes the `health` document every `[health] interval_s` (reads /proc and the clock, MQTT).

Called from the worker's housekeeping (once a second), never per frame: the counters it reports
are the ones the pipeline, the outbox and the courier keep anyway.
"""

from __future__ import annotations

import os
import time
from typing import Any

from agent.core.health import BusErrorState, BusHealth, HealthMeter, HealthReport, Sample
from agent.core.settings import AgentConfig
from agent.io.outbox import SqliteOutbox
from agent.io.uplink import PahoUplink

try:
    PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):  # not a POSIX system
    PAGE_BYTES = 4096


def rss_bytes() -> int | None:
    """Resident memory now (Linux /proc/self/statm); None where the system does not tell."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def process_sample(frames: int, mono: float | None = None) -> Sample:
    t = os.times()
    return Sample(time.monotonic() if mono is None else mono, t.user + t.system, rss_bytes(), frames)


class HealthPublisher:
    """Only the worker thread calls poll()."""

    def __init__(self, config: AgentConfig, version: str, frames: int = 0) -> None:
        self.interval_s = config.health.interval_s
        self.interface, self.channel = config.can.interface, config.can.channel
        self.meter = HealthMeter(config.vehicle.id, version, process_sample(frames))
        self.next_at = self.meter.started + self.interval_s

    def poll(self, uplink: PahoUplink, outbox: SqliteOutbox, *, counters: dict[str, Any],
             errors: BusErrorState, bus_open: bool, sent: int) -> HealthReport | None:
        """Publish a report when one is due and the broker is reachable; the report, or None."""
        mono = time.monotonic()
        if mono < self.next_at or not uplink.connected.is_set():
            return None
        self.next_at = mono + self.interval_s
        bus = BusHealth(interface=self.interface, channel=self.channel,
                        state=errors.state if bus_open else "closed", error_frames=errors.error_frames,
                        bus_off_count=errors.bus_off_count)
        now = time.time()
        report = self.meter.report(now, process_sample(counters["frames"], mono), counters=counters, bus=bus,
                                   outbox=outbox.status(now), mqtt_sent=sent)
        # Retained: a consumer sees the last report at once (its ts says how old); QoS 0: the next replaces it.
        uplink.publish("health", report.model_dump_json(), qos=0, retain=True)
        return report
