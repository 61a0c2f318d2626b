"""MQTT ingest and downlink with paho: messages are acknowledged only after the DB commit (does IO).

The paho network thread only enqueues; one worker thread parses, stores in batches, commits,
then acknowledges (QoS 1, manual acks, persistent session), so a relay killed mid-burst loses
nothing: the broker redelivers what was not acknowledged, and duplicates are ignored by id.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from agent.core.errors import ConfigError
from relay.config import TOPIC_ROOT, IngestConfig, MqttConfig, mqtt_password, tls_files
from relay.db import describe, unavailable
from relay.ingest import SUBSCRIBED, Dropped, Inbound, Limits, ingest_problem, parse
from relay.livebus import LiveBus
from relay.store import Store, known_vehicles, now_utc

log = logging.getLogger(__name__)

# Status is idempotent and retained: subscribe without sharing so every instance learns it at
# start (a broker does not send retained messages to shared subscriptions).
UNSHARED = ("status",)
RETRY_MAX_S = 10.0  # the longest wait between two attempts while the database is away


class _Abandoned(Exception):
    """The relay stops while the database is down: the batch stays un-acknowledged."""


@dataclass(frozen=True, slots=True)
class Received:
    generation: int  # connection number: an ack is only valid on the connection that got it
    mid: int
    qos: int
    topic: str
    payload: bytes
    at: float  # time.monotonic() when it arrived: how far the worker lags behind


class MqttIngest:
    """Subscribes, stores and acknowledges; also publishes signed commands (``publish``).

    The worker never stops for an input: each message ends stored or counted in ``dropped``
    (by reason), and is acknowledged either way; only a database outage holds it back."""

    def __init__(self, cfg: MqttConfig, sessions: sessionmaker[Session], live: LiveBus,
                 ingest: IngestConfig | None = None) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.live = live
        self.ingest_cfg = ingest or IngestConfig()
        self.limits = Limits(self.ingest_cfg.max_payload_bytes, self.ingest_cfg.max_future_s,
                             self.ingest_cfg.max_signals)
        self.batch_max = self.ingest_cfg.batch_max
        self.store = Store(self.ingest_cfg.state_history_min_interval_s,
                           self.ingest_cfg.max_signals)
        self.dropped: Counter[str] = Counter()
        self.stored = 0
        self.stored_by_topic: Counter[str] = Counter()
        self.on_commit: Callable[[float], None] | None = None  # seconds per batch (metrics)
        self.acked = 0
        self.connects = 0  # successful connections (a takeover shows as reconnects)
        self.connected = threading.Event()
        self._queue: queue.Queue[Received] = queue.Queue()
        self._generation = 0
        self._stop = threading.Event()
        self._known: set[str] = set()
        self._known_at = 0.0
        self._heartbeat = time.monotonic()
        self._busy_since: float | None = None  # arrival of the oldest message being stored
        # While the database is unavailable: since when (monotonic), why, how many retries.
        self.db_down_since: float | None = None
        self.db_error = ""
        self.db_retries = 0
        self.db_outages = 0
        self._worker = threading.Thread(target=self._work, name="relay-ingest", daemon=True)
        self.client = self._make_client()

    # -- paho side (network thread: enqueue only) ------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        password = mqtt_password(self.cfg)
        if self.cfg.username or password:
            client.username_pw_set(self.cfg.username, password)
        if self.cfg.tls:
            files = tls_files(self.cfg)
            try:
                client.tls_set(ca_certs=str(files.ca_file) if files.ca_file else None,
                               certfile=str(files.cert_file) if files.cert_file else None,
                               keyfile=str(files.key_file) if files.key_file else None,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"[mqtt] TLS files {files.cert_file or files.ca_file}: "
                                  f"cannot load: {exc}") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self._generation += 1
        self.connects += 1
        topics = [(self.subscription(leaf), 1) for leaf in SUBSCRIBED]
        client.subscribe(topics)
        log.info("connected to %s:%d, subscribed to %d topics", self.cfg.host, self.cfg.port,
                 len(topics))
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Never raise in a paho callback: a topic that is not UTF-8 becomes one that the
        # worker counts as unknown (and acknowledges).
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "<not UTF-8>"
        self._queue.put(Received(self._generation, msg.mid, msg.qos, topic, bytes(msg.payload),
                                 time.monotonic()))

    def subscription(self, leaf: str) -> str:
        base = f"{TOPIC_ROOT}/+/{leaf}"
        if self.cfg.shared_subscriptions and leaf not in UNSHARED:
            return f"$share/{self.cfg.share_group}/{base}"
        return base

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self._worker.start()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Store and acknowledge what is queued, then disconnect (the session stays on the broker)."""
        self._stop.set()
        self._worker.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    # -- worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            batch = self._take_batch()
            if batch:
                self._busy_since = batch[0].at
                try:
                    self._handle(batch)
                except Exception:  # a bug, not an input (the steps catch their own): go on
                    log.exception("ingest failed on a batch of %d messages", len(batch))
                    self.dropped["internal-error"] += len(batch)
                    self._ack(batch)
                self._busy_since = None
            elif self._stop.is_set():
                return

    def lag_s(self) -> float:
        """How long the oldest message not yet stored has waited (0 when none waits)."""
        oldest = self._oldest()
        return time.monotonic() - oldest if oldest is not None else 0.0

    def _oldest(self) -> float | None:
        oldest = self._busy_since
        with self._queue.mutex:
            if self._queue.queue:
                head = self._queue.queue[0].at
                oldest = head if oldest is None else min(oldest, head)
        return oldest

    def health(self) -> str | None:
        """What is wrong with the ingest (for /healthz), or None."""
        now = time.monotonic()
        oldest = self._oldest()
        # Busy with messages: their age says how far behind it is. Idle: the loop comes round
        # every 0.2 s, or it is stuck.
        lag = now - oldest if oldest is not None else 0.0
        idle = now - self._heartbeat if oldest is None else 0.0
        down = self.db_down_since
        if down is not None and self._worker.is_alive():
            return f"database unavailable for {now - down:.0f} s (ingest waiting, nothing acknowledged)"
        return ingest_problem(self._worker.is_alive(), self.connected.is_set(), idle, lag,
                              self.ingest_cfg.max_lag_s)

    def _take_batch(self) -> list[Received]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[Received]) -> None:
        records = [rec for rec in map(self._check, batch) if rec is not None]
        try:
            touched = self._commit(records)
        except _Abandoned:
            # Stopping while the database is away: nothing queued can be stored either. None of
            # it was acknowledged, so the broker redelivers it all to the next connection.
            left = len(batch)
            with self._queue.mutex:
                left += len(self._queue.queue)
                self._queue.queue.clear()
            log.error("stopping with %d messages not stored (the database is unavailable): "
                      "not acknowledged, the broker redelivers them", left)
            return
        self._ack(batch)
        if touched:
            try:
                self.live.committed(touched)
            except Exception:  # live pages catch up on their next poll
                log.exception("waking the live pages failed")

    def _check(self, item: Received) -> Inbound | None:
        """The record to store, or None after counting why not (never raises)."""
        try:
            rec = parse(item.topic, item.payload, self.limits, now_utc())
            if not self._is_known(rec.vehicle_id):
                raise Dropped("unknown-vehicle", rec.vehicle_id[:64])
            return rec
        except Dropped as drop:
            self.dropped[drop.reason] += 1
            log.warning("dropped a payload on %s: %s", item.topic[:200], drop)
        except Exception:
            self.dropped["internal-error"] += 1
            log.exception("checking a payload on %s failed", item.topic[:200])
        return None

    def _is_known(self, vehicle_id: str) -> bool:
        if vehicle_id in self._known:
            return True
        if time.monotonic() - self._known_at > 5.0:  # a vehicle added since: reload, rate-limited
            try:
                with self.sessions() as session:
                    self._known = known_vehicles(session)
            except SQLAlchemyError as exc:
                if not unavailable(exc):
                    raise
                # The database is away: let it through, the store waits for the database (and
                # its foreign key refuses a vehicle that is not registered). Never drop for that;
                # and try again in 5 s, not for every message (the store logs the outage once).
                self._known_at = time.monotonic()
                return True
            self._known_at = time.monotonic()
        return vehicle_id in self._known

    def _commit(self, records: list[Inbound]) -> set[str]:
        """Store the batch; wait out a database outage; isolate a record that cannot be stored."""
        try:
            return self._retrying(records)
        except _Abandoned:
            raise
        except Exception as exc:
            log.error("a batch could not be stored (%s); storing record by record", exc)
        touched: set[str] = set()
        for rec in records:
            try:
                touched |= self._retrying([rec])
            except _Abandoned:
                raise
            except Exception as exc:
                reason = "db-refused" if isinstance(exc, SQLAlchemyError) else "store-failed"
                self.dropped[reason] += 1
                log.error("dropped a %s record of %s that could not be stored: %s", rec.leaf,
                          rec.vehicle_id, exc)
        return touched

    def _retrying(self, records: list[Inbound]) -> set[str]:
        """Apply, retrying with backoff while the database is unavailable (nothing is
        acknowledged meanwhile: the broker keeps the rest). One log line when it goes away and
        one when it is back, however long the outage and however many messages wait."""
        delay = 0.5
        while True:
            try:
                touched = self._apply(records)
            except SQLAlchemyError as exc:
                if not unavailable(exc):
                    raise
                self._database_down(exc, delay)
                if self._stop.wait(delay):
                    raise _Abandoned from exc
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if self.db_down_since is not None:
                log.warning("database available again after %.1f s (%d retries); storing the "
                            "%d waiting messages", time.monotonic() - self.db_down_since,
                            self.db_retries, self._queue.qsize() + len(records))
                self.db_down_since = None
            return touched

    def _database_down(self, exc: SQLAlchemyError, delay: float) -> None:
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            self.db_retries = 0
            self.db_outages += 1
            self.db_error = describe(exc)
            log.error("database unavailable (%s); retrying with backoff (%.1f s, up to %.0f s), "
                      "acknowledging nothing until it is back", self.db_error, delay, RETRY_MAX_S)
        else:
            log.debug("database still unavailable (%s)", describe(exc))
        self.db_retries += 1

    def _apply(self, records: list[Inbound]) -> set[str]:
        started = time.perf_counter()
        with self.sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                # The acknowledgement follows the commit: the commit must be in the WAL by then,
                # whatever the server's default (with synchronous_commit=off a crash of
                # PostgreSQL lost the last 20 of 600 acknowledged messages,
                # tests/relay/test_relay_db_outage.py). In the transaction, so it holds
                # behind a transaction-mode pooler (PgBouncer) too.
                session.execute(text("SET LOCAL synchronous_commit = on"))
            touched = self.store.apply(session, records, now_utc())
            self.live.in_transaction(session, touched)  # PostgreSQL: sent with the commit
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)
        self.stored += len(records)
        self.stored_by_topic.update(rec.leaf for rec in records)
        if self.store.trimmed:
            self.dropped["signals-over-cap"] += self.store.trimmed
        return touched

    def _ack(self, batch: list[Received]) -> None:
        current = self._generation
        for item in batch:
            # A message received on an earlier connection will be redelivered on this one.
            if item.qos > 0 and item.generation == current:
                try:
                    self.client.ack(item.mid, item.qos)
                    self.acked += 1
                except Exception:  # the connection just dropped: redelivered on the next one
                    log.warning("could not acknowledge message %d", item.mid, exc_info=True)
