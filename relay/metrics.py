"""The relay's Prometheus metrics (prometheus-client): its counters, read at scrape time, the
database commit histogram, and per-vehicle gauges from the database (does IO at scrape time).

Served at ``/metrics`` on the web port to a bearer token (``[metrics] token`` or the systemd
credential ``metrics-token``), and/or without one on an admin address (``[metrics] listen_host``
and ``listen_port``). Metric names are the contract of docs/prometheus/carfriend-alerts.yml.
"""

from __future__ import annotations

import calendar
import hmac
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, start_http_server
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from relay.charts import AUX_V
from relay.config import MetricsConfig, metrics_token
from relay.hub import Hub
from relay.models import Vehicle

if TYPE_CHECKING:
    from relay.mqtt import MqttIngest

log = logging.getLogger(__name__)
BUS_STATES = ("active", "error_warning", "error_passive", "bus_off", "closed")


@dataclass
class Sources:
    """What the collector reads: the live objects of one relay instance."""

    ingest: MqttIngest
    hub: Hub
    sessions: sessionmaker[Session]
    # channel -> count; set by the notifier when notifications are on
    notifications: Callable[[], tuple[dict[str, int], dict[str, int], int]] | None = None


class RelayMetrics:
    """One registry per relay instance (tests run several relays in one process)."""

    def __init__(self, sources: Sources, cfg: MetricsConfig) -> None:
        self.cfg = cfg
        self.token = metrics_token(cfg)
        self.registry = CollectorRegistry(auto_describe=False)
        self.commit_seconds = Histogram(
            "carfriend_relay_db_commit_seconds",
            "Time to store and commit one ingest batch (the acknowledgements wait for it).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.registry.register(_Collector(sources))
        sources.ingest.on_commit = self.commit_seconds.observe
        self._server: Any = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def start_listener(self) -> None:
        """The unauthenticated listener on the admin address, when configured."""
        if self.cfg.listen_port:
            self._server, _thread = start_http_server(self.cfg.listen_port, self.cfg.listen_host,
                                                      registry=self.registry)
            log.info("metrics on http://%s:%d/metrics", self.cfg.listen_host, self.cfg.listen_port)

    def stop_listener(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def allowed(self, authorization: str | None) -> bool | None:
        """None: /metrics is not served on the web port (no token configured); else whether
        the request's bearer token is the configured one."""
        if self.token is None:
            return None
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  self.token.encode())


async def metrics_endpoint(request: Request) -> Response:
    metrics: RelayMetrics | None = getattr(request.app.state.ctx, "metrics", None)
    allowed = metrics.allowed(request.headers.get("authorization")) if metrics else None
    if metrics is None or allowed is None:
        return PlainTextResponse("Not Found", 404)
    if not allowed:
        return PlainTextResponse("Unauthorized", 401, headers={"WWW-Authenticate": "Bearer"})
    from starlette.concurrency import run_in_threadpool
    body = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class _Collector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.s = sources

    def collect(self) -> Iterator[Metric]:
        ingest = self.s.ingest
        yield _counter("carfriend_relay_messages_ingested", "Payloads stored, by topic.",
                       "topic", dict(ingest.stored_by_topic))
        yield _counter("carfriend_relay_dropped", "Payloads not stored, by reason.", "reason",
                       dict(ingest.dropped))
        yield GaugeMetricFamily("carfriend_relay_ingest_lag_seconds",
                                "How long the oldest message not yet stored has waited.",
                                value=ingest.lag_s())
        yield GaugeMetricFamily("carfriend_relay_broker_connected",
                                "1 while the relay is connected to the broker.",
                                value=float(ingest.connected.is_set()))
        yield GaugeMetricFamily("carfriend_relay_live_streams_open",
                                "Server-sent event streams open (live pages).",
                                value=self.s.hub.open_count())
        if self.s.notifications is not None:
            sent, failed, pending = self.s.notifications()
            yield _counter("carfriend_relay_notifications_sent",
                           "Notifications delivered, by channel.", "channel", sent)
            yield _counter("carfriend_relay_notifications_failed",
                           "Notification delivery attempts that failed, by channel.",
                           "channel", failed)
            yield GaugeMetricFamily("carfriend_relay_notifications_pending",
                                    "Notifications waiting for delivery (or a retry).",
                                    value=pending)
        yield from self._fleet()

    def _fleet(self) -> Iterator[Metric]:
        """Per-vehicle gauges from the database: what the alert rules need."""
        gauges = {name: GaugeMetricFamily(name, text, labels=labels) for name, text, labels in (
            ("carfriend_vehicle_online", "1 while the car's status is online.", ["vehicle"]),
            ("carfriend_vehicle_last_seen_timestamp_seconds",
             "When the relay last stored anything from the car (Unix time).", ["vehicle"]),
            ("carfriend_vehicle_aux_battery_volts", "The car's 12 V battery voltage.", ["vehicle"]),
            ("carfriend_agent_health_timestamp_seconds",
             "The time of the agent's latest health document (Unix time).", ["vehicle"]),
            ("carfriend_agent_outbox_depth", "Messages queued in the agent's outbox.", ["vehicle"]),
            ("carfriend_agent_outbox_oldest_age_seconds",
             "Age of the oldest message in the agent's outbox.", ["vehicle"]),
            ("carfriend_agent_frames_per_second", "CAN frames a second the agent reads.", ["vehicle"]),
            ("carfriend_agent_cpu_percent", "The agent's CPU use, % of one core.", ["vehicle"]),
            ("carfriend_agent_bus_state", "1 for the CAN controller's current state.",
             ["vehicle", "state"]),
        )}
        try:
            with self.s.sessions() as session:
                rows = session.execute(select(Vehicle.id, Vehicle.status, Vehicle.last_seen,
                                              Vehicle.state, Vehicle.health)).all()
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the vehicles (%s)", exc)
            rows = []
        for vid, status, last_seen, state, health in rows:
            _add_vehicle(gauges, vid, status, last_seen, state, health)
        yield from gauges.values()


def _add_vehicle(g: dict[str, GaugeMetricFamily], vid: str, status: str | None,
                 last_seen: datetime | None, state: Any, health: Any) -> None:
    g["carfriend_vehicle_online"].add_metric([vid], float(status == "online"))
    if last_seen is not None:
        g["carfriend_vehicle_last_seen_timestamp_seconds"].add_metric([vid], _unix(last_seen))
    entry = state.get(AUX_V) if isinstance(state, dict) else None
    volts = _num(entry.get("value")) if isinstance(entry, dict) and not entry.get("stale") else None
    if volts is not None:
        g["carfriend_vehicle_aux_battery_volts"].add_metric([vid], volts)
    if not isinstance(health, dict):
        return
    ts = _parse_ts(health.get("ts"))
    if ts is not None:
        g["carfriend_agent_health_timestamp_seconds"].add_metric([vid], ts)
    for name, section, key in (("carfriend_agent_outbox_depth", "outbox", "depth"),
                               ("carfriend_agent_outbox_oldest_age_seconds", "outbox", "oldest_age_s"),
                               ("carfriend_agent_frames_per_second", "frames", "per_s"),
                               ("carfriend_agent_cpu_percent", "process", "cpu_pct")):
        part = health.get(section)
        value = _num(part.get(key)) if isinstance(part, dict) else None
        if value is not None:
            g[name].add_metric([vid], value)
    bus = health.get("bus")
    current = bus.get("state") if isinstance(bus, dict) else None
    if current in BUS_STATES:
        for state_name in BUS_STATES:
            g["carfriend_agent_bus_state"].add_metric([vid, state_name], float(state_name == current))


def _counter(name: str, text: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if f == f and abs(f) < 1e15 else None


def _unix(ts: datetime) -> float:
    """Naive UTC (the database's form) to Unix seconds."""
    return calendar.timegm(ts.utctimetuple()) + ts.microsecond / 1e6


def _parse_ts(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.timestamp() if ts.tzinfo is not None else _unix(ts)
