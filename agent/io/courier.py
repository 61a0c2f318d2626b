"""The courier: drains the outbox into the MQTT uplink and deletes what the broker acknowledged (IO).

Only the worker thread calls pump(). paho's network thread reports PUBACKs into a deque and
never touches SQLite or our locks (paho may hold its own mutex while calling on_publish).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

from agent.core.model import iso_utc, message_id
from agent.io.outbox import SqliteOutbox
from agent.io.uplink import PahoUplink

log = logging.getLogger(__name__)

WINDOW = 20  # messages in flight at once: enough for a cellular link's latency, bounded memory
ACK_TIMEOUT_S = 120.0  # in flight longer than this while connected: send again (same id)
HEALTH_EVERY_S = 600.0


class Courier:
    def __init__(self, outbox: SqliteOutbox, uplink: PahoUplink, *, vehicle_id: str, fleet_topic: str,
                 window: int = WINDOW) -> None:
        self.outbox = outbox
        self.uplink = uplink
        self.vehicle_id = vehicle_id
        self.fleet_topic = fleet_topic
        self.window = window
        self.inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, monotonic sent)
        self.acked: deque[int] = deque()
        self._early: set[int] = set()
        self.sent = 0
        self._next_health = 0.0
        uplink.client.on_publish = self._on_publish

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_: Any) -> None:
        self.acked.append(mid)  # paho's thread: a deque append is atomic, nothing else here

    @property
    def busy(self) -> bool:
        return bool(self.acked or self.inflight)

    def pump(self, now: float | None = None) -> None:
        """Settle acknowledgements, then send what fits in the window (when connected)."""
        self._settle()
        if not self.uplink.connected.is_set():
            return
        mono = time.monotonic()
        self._resend_overdue(mono)
        self._report_drops(now)
        free = self.window - len(self.inflight)
        if free <= 0:
            return
        busy = {seq for seq, _ in self.inflight.values()}
        for entry in self.outbox.pending(free, exclude=busy):
            info = self.uplink.client.publish(entry.topic, entry.payload, qos=1)
            if info.rc != 0:
                log.debug("publish of %s deferred: rc %s", entry.id, info.rc)
                break
            self.inflight[info.mid] = (entry.seq, mono)
            self.sent += 1
        self._settle()
        if mono >= self._next_health:
            self._next_health = mono + HEALTH_EVERY_S
            self.publish_health(now)

    def _settle(self) -> None:
        while self.acked:
            self._early.add(self.acked.popleft())
        done = [m for m in self._early if m in self.inflight]
        self.outbox.ack_many([self.inflight.pop(m)[0] for m in done])
        self._early.difference_update(done)
        if len(self._early) > 1000:  # acks of messages sent by an earlier courier: forget them
            self._early.clear()

    def _resend_overdue(self, mono: float) -> None:
        for mid, (_seq, sent) in list(self.inflight.items()):
            if mono - sent > ACK_TIMEOUT_S:
                del self.inflight[mid]  # picked up again by pending(): same id, receivers de-duplicate

    def _report_drops(self, now: float | None) -> None:
        counters = self.outbox.counters()
        dropped = counters.get("dropped_info", 0) + counters.get("dropped_warning", 0)
        if dropped <= counters.get("reported", 0):
            return
        at = time.time() if now is None else now
        report = {"kind": "outbox.dropped", "vehicle_id": self.vehicle_id, "ts": iso_utc(at),
                  "dropped": {"info": counters.get("dropped_info", 0), "warning": counters.get("dropped_warning", 0)},
                  "reason": "outbox full while offline: oldest low-severity messages dropped"}
        report_id = message_id(self.vehicle_id, "outbox.dropped", float(dropped))
        report["id"] = report_id
        self.outbox.put(report_id, self.fleet_topic, json.dumps(report).encode(), "warning", at)
        self.outbox.mark_reported(dropped)
        log.warning("outbox dropped %d message(s) in all; reported on %s", dropped, self.fleet_topic)

    def publish_health(self, now: float | None = None) -> None:
        """Outbox health for the fleet page (QoS 0: a newer one replaces it anyway)."""
        at = time.time() if now is None else now
        doc = {"kind": "outbox.status", "vehicle_id": self.vehicle_id, "ts": iso_utc(at),
               "outbox": self.outbox.status(at)}
        self.uplink.client.publish(self.fleet_topic, json.dumps(doc), qos=0)

    def drain(self, timeout: float) -> int:
        """Send until the outbox is empty and acknowledged, or timeout; return what is left."""
        deadline = time.monotonic() + timeout
        self.uplink.connected.wait(timeout)
        while time.monotonic() < deadline:
            self.pump()
            if not self.inflight and self.outbox.queued_total() == 0:
                return 0
            time.sleep(0.002)
        self._settle()
        return self.outbox.queued_total()
