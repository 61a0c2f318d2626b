"""`carfriend run`: the daemon's main loop: bus -> pipeline -> uplink, signals, watchdog (IO)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import can

from agent import __version__
from agent.commands.runner import CommandMemory, CommandRunner, read_command_key
from agent.core.errors import CarfriendError, ConfigError, SourceError
from agent.core.health import BusErrorState
from agent.core.homeassistant import discovery_configs
from agent.core.model import PersonaMessage, iso_utc
from agent.core.pipeline import Pipeline
from agent.core.rules import Event
from agent.core.settings import AgentConfig
from agent.core.statepub import StateReporter
from agent.core.vehicle import Vehicle
from agent.io.courier import Courier
from agent.io.diag_runtime import DiagRuntime
from agent.io.fastbus import BATCH_S, read_batch
from agent.io.hadiscovery import DiscoveryPublisher
from agent.io.health import HealthPublisher
from agent.io.outbox import SqliteOutbox
from agent.io.pid_memory import SUPPORTED_PIDS_FILE
from agent.io.sdnotify import SystemdNotifier
from agent.io.sources import link_is_up, open_bus
from agent.io.uplink import PahoUplink
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0
COUNTERS_LOG_S = 300.0
RECV_TIMEOUT_S = 0.2

BusFactory = Callable[[AgentConfig, list[dict[str, Any]] | None], can.BusABC]
# Whether the configured CAN link is up: False = down, None = cannot tell (not SocketCAN, absent).
LinkCheck = Callable[[AgentConfig], bool | None]


def _open_bus(config: AgentConfig, filters: list[dict[str, Any]] | None) -> can.BusABC:
    return open_bus(config.can, filters)


def _link_up(config: AgentConfig) -> bool | None:
    if config.can.interface != "socketcan" or not config.can.channel:
        return None
    return link_is_up(config.can.channel)


def waiting_text(channel: str | None) -> str:
    """The one line (and STATUS=) while the CAN link is down."""
    return f"waiting for {channel} to come up (link is down: set its bitrate, see docs/deployment.md)"


class Agent:
    """One vehicle's agent. The thread that calls run() owns the pipeline: no locks needed."""

    def __init__(self, config: AgentConfig, *, config_path: Path | None = None,
                 dbc_override: list[Path] | None = None, bus_factory: BusFactory = _open_bus,
                 notifier: SystemdNotifier | None = None, link_check: LinkCheck = _link_up) -> None:
        self.config = config
        self.config_path = config_path
        self.dbc_override = dbc_override
        self.bus_factory = bus_factory
        self.link_check = link_check
        self.notifier = notifier or SystemdNotifier()
        self.vehicle: Vehicle = load_vehicle(config)
        self.memory = CommandMemory(config.resolved_state_dir() / "commands.db")
        self.pipeline = self._new_pipeline(self.vehicle)
        self.uplink: PahoUplink | None = None
        self.outbox: SqliteOutbox | None = None
        self.courier: Courier | None = None
        self.bus: can.BusABC | None = None
        self.bus_trouble: str | None = None  # why the bus is not being read (for STATUS=), or None
        self.diag: DiagRuntime | None = None
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.on_message: list[Callable[[PersonaMessage], None]] = []
        self.commands: CommandRunner | None = None
        self.inbox: deque[tuple[str, bytes]] = deque(maxlen=1000)  # paho's thread -> worker
        self.reporter = StateReporter(config.vehicle.id, min_interval_s=config.mqtt.state_min_interval_s,
                                      full_interval_s=config.mqtt.state_interval_s,
                                      deadbands=config.mqtt.state_deadbands)
        self._last_frame = (0.0, time.monotonic())  # (event time, monotonic) of the last frame
        self.bus_errors = BusErrorState()
        self.health: HealthPublisher | None = None
        self.discovery: DiscoveryPublisher | None = None
        self._announce_due = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the outbox, the bus and the uplink; READY then (not waiting for the network)."""
        self.outbox = open_outbox(self.config)
        key = read_command_key(self.config)
        self.commands = CommandRunner(self.config, self.vehicle, self.memory, key, send=self._send_frame,
                                      result=self._command_result, publish_state=self._publish_full_state,
                                      say=self._say)
        self._connect_bus()
        self.diag = self._new_diag()
        if self.config.mqtt.host:
            on_command = self._queue_command if key is not None else None
            if key is None:
                log.warning("no command key (credential command-key, [commands] key_file or "
                            "CARFRIEND_COMMAND_KEY): remote commands are off")
            self.uplink = PahoUplink(self.config, on_command=on_command)
            self.courier = Courier(self.outbox, self.uplink, vehicle_id=self.config.vehicle.id,
                                   fleet_topic=self.config.topic("fleet"))
            self.discovery = DiscoveryPublisher(self.config.resolved_state_dir() / "homeassistant.json",
                                                self._publish_retained)
            if self.config.health.enabled:
                self.health = HealthPublisher(self.config, __version__)
            self.uplink.start()
        else:
            log.warning("[mqtt] host not set: messages are kept in the outbox %s", self.outbox.path)
        log.info("carfriend %s ready: %s on %s %s, %d mapped signals in %d messages",
                 self.config.vehicle.id, self.config.vehicle.persona, self.config.can.interface,
                 self.config.can.channel, len(self.vehicle.mapped_paths), len(self.vehicle.plans))
        self.notifier.ready(self.bus_trouble or f"reading {self.config.can.interface} {self.config.can.channel}")

    def run(self) -> int:
        self.start()
        next_housekeeping = time.monotonic()
        next_counters = time.monotonic() + COUNTERS_LOG_S
        try:
            while not self.stop_requested.is_set():
                self._read_once()
                if self.inbox or (self.commands is not None and self.commands.pending):
                    self._run_commands()
                if self.courier is not None and self.courier.busy:
                    self.courier.pump()
                now_mono = time.monotonic()
                if now_mono >= next_housekeeping:
                    next_housekeeping = now_mono + HOUSEKEEPING_S
                    self._housekeeping(now_mono)
                if now_mono >= next_counters:
                    next_counters = now_mono + COUNTERS_LOG_S
                    log.info("counters: %s", self._counters_line())
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def _new_diag(self) -> DiagRuntime | None:
        profile = self.vehicle.diagnostics
        if profile is None:
            return None
        send = None if self.config.can.listen_only else self._send_frame
        if send is None:
            log.warning("[can] listen_only: diagnostic requests are configured but nothing is ever sent")
        # The supported standard PIDs are asked once and remembered in the state dir (per vehicle id;
        # a memory the car contradicts is deleted and the bitmaps asked again).
        return DiagRuntime(profile, self.pipeline, send, bitrate=self.config.can.bitrate or 500_000,
                           memory=self.config.resolved_state_dir() / SUPPORTED_PIDS_FILE,
                           vehicle_id=self.config.vehicle.id)

    def _process(self, ts: float, can_id: int, data: bytes) -> None:
        """One frame with diagnostics on: responses to the ISO-TP ports, the rest to the decoder."""
        diag = self.diag
        if diag is None or not diag.on_frame(ts, can_id, data):
            self.pipeline.process(ts, can_id, data)
            if diag is not None:
                diag.after_broadcast(ts, can_id)

    def _read_once(self) -> None:
        bus = self.bus
        if bus is None:
            self._reopen_bus()
            return
        process = self.pipeline.process if self.diag is None else self._process
        timeout = RECV_TIMEOUT_S
        if self.diag is not None:  # wake up when the next request is due, not up to 0.2 s later
            now = self._event_now()
            due_in = self.diag.poller.deadline(now, self.pipeline.state) - now
            timeout = max(0.001, min(timeout, due_in))
        # While an ECU is answering, no nap between bursts: its next frame is what we wait for.
        nap = BATCH_S if self.diag is None or not self.diag.poller.outstanding else 0.0
        try:
            n = read_batch(bus, process, self._error_frame, timeout, nap)
        except (can.CanError, OSError) as exc:
            self._close_bus()
            if self.link_check(self.config) is False:
                self._wait_for_link()  # one line, not "lost" and "back" at every retry
                return
            log.error("CAN bus %s %s lost: %s; state and messages are kept, retrying every %g s",
                      self.config.can.interface, self.config.can.channel, exc, self.config.can.reconnect_s)
            self.bus_trouble = f"CAN bus lost: {exc}"
            self.notifier.status(self.bus_trouble)
            return
        if n:
            self._last_frame = (max(self.pipeline.state.now, self._last_frame[0]), time.monotonic())
            if self.diag is not None:
                self._last_frame = (max(self._last_frame[0], self.diag.poller.last_heard), self._last_frame[1])
        else:
            self.pipeline.tick(self._event_now())  # time passes on the bus's clock
        if self.diag is not None:
            self._poll_diag()

    def _poll_diag(self) -> None:
        assert self.diag is not None
        try:
            self.diag.poll(self._event_now())
        except Exception as exc:  # noqa: BLE001 - one bad poll never ends the worker loop
            self.diag.counts["poll_error"] += 1
            log.error("diagnostic poll failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))

    def _reopen_bus(self) -> None:
        if self.stop_requested.wait(self.config.can.reconnect_s):
            return
        # python-can logs its own ERROR on every failed open; we said "lost" once already
        can_log = logging.getLogger("can")
        level, can_log.level = can_log.level, logging.CRITICAL
        try:
            self._connect_bus()
        except SourceError as exc:
            log.debug("bus still unavailable: %s", exc)
        finally:
            can_log.setLevel(level)

    def _connect_bus(self) -> None:
        """Open the bus, unless its link is down: then wait for it, saying so once (SourceError
        if it cannot be opened). Opening succeeds on a down link, so that alone proves nothing."""
        if self.link_check(self.config) is False:
            self._wait_for_link()
            return
        self.bus = self.bus_factory(self.config, self.vehicle.can_filters())
        self.bus_errors.reopened()
        if self.bus_trouble is not None:
            came = "is up" if self.bus_trouble == waiting_text(self.config.can.channel) else "is back"
            log.info("CAN bus %s %s %s", self.config.can.interface, self.config.can.channel, came)
            self.bus_trouble = None
            self.notifier.status(f"reading {self.config.can.interface} {self.config.can.channel}")

    def _wait_for_link(self) -> None:
        text = waiting_text(self.config.can.channel)
        if self.bus_trouble != text:
            log.warning("%s", text)
            self.bus_trouble = text
            self.notifier.status(text)

    def _close_bus(self) -> None:
        if self.bus is not None:
            try:
                self.bus.shutdown()
            except (can.CanError, OSError) as exc:
                log.debug("closing the bus: %s", exc)
            self.bus = None

    def _housekeeping(self, now_mono: float) -> None:
        self.notifier.watchdog()  # from this loop: a hung worker is what stops it
        if self.courier is not None:
            self.courier.pump()
        self._maybe_publish_state()
        self._reports()
        c = self.pipeline.counters()
        counts = f"frames {c['frames']}, decoded {c['decoded']}, messages {c['messages']}"
        self.notifier.status(f"{self.bus_trouble}; {counts}" if self.bus_trouble else counts)

    def _maybe_publish_state(self, force: bool = False) -> None:
        uplink = self.uplink
        if uplink is None or not uplink.connected.is_set():
            return
        if uplink.reconnected.is_set() or self._announce_due:
            uplink.reconnected.clear()
            self._announce_discovery()  # before the state, so Home Assistant has the entities for it
            self.reporter.request_full()
        if force:
            self.reporter.request_full()
        due = self.reporter.poll(self.pipeline.state, self._event_now())
        if due is not None:
            doc, full = due
            uplink.publish_state(doc, retain=full)

    def _announce_discovery(self) -> None:
        """Home Assistant discovery on every (re)connect and reload; clears entities gone from the mapping."""
        self._announce_due = False
        if self.discovery is not None:
            enabled = self.config.homeassistant.enabled
            self.discovery.announce(discovery_configs(self.config, self.vehicle.mapped_paths, __version__)
                                    if enabled else {})

    def _publish_retained(self, topic: str, payload: bytes) -> Any:
        assert self.uplink is not None
        return self.uplink.client.publish(topic, payload, qos=1, retain=True)

    def _reports(self) -> None:
        """The health document when due; forget the discovery clears the broker acknowledged."""
        if self.discovery is not None:
            self.discovery.poll()
        if self.health is not None and self.uplink is not None and self.outbox is not None:
            self.health.poll(self.uplink, self.outbox, counters=self.pipeline.counters(), errors=self.bus_errors,
                             bus_open=self.bus is not None, sent=self.courier.sent if self.courier else 0)

    def _error_frame(self, msg: can.Message) -> None:
        self.pipeline.error_frame()
        self.bus_errors.on_error_frame(msg.arbitration_id, bytes(msg.data))

    def _event_now(self) -> float:
        """Event time now: the last frame's time plus the real time since it came."""
        ts, mono = self._last_frame
        return ts + (time.monotonic() - mono)

    # -- commands --------------------------------------------------------------------------
    def _queue_command(self, topic: str, payload: bytes) -> None:
        self.inbox.append((topic, payload))  # paho's thread: nothing else here

    def _run_commands(self) -> None:
        assert self.commands is not None
        state, now = self.pipeline.state, self._event_now()
        while self.inbox:
            topic, payload = self.inbox.popleft()
            self.commands.handle(topic, payload, state, now)
        self.commands.poll(state, now)

    def _send_frame(self, frame: can.Message) -> None:
        if self.config.can.listen_only:
            from agent.io.guarded_bus import LISTEN_ONLY_REASON, TransmitForbidden

            raise TransmitForbidden(LISTEN_ONLY_REASON)
        if self.bus is None:
            raise can.CanOperationError("the CAN bus is not open")
        self.bus.send(frame, timeout=0.5)

    def _command_result(self, name: str, command_id: str, status: str, reason: str) -> None:
        assert self.outbox is not None
        doc = {"id": command_id, "status": status, "reason": reason, "ts": iso_utc(time.time())}
        self.outbox.put(f"{command_id}/{status}", self.config.topic(f"cmd/{name}/result"),
                        json.dumps(doc).encode(), "info", time.time())
        if self.courier is not None:
            self.courier.pump()

    def _publish_full_state(self) -> None:
        self._maybe_publish_state(force=True)

    def _say(self, kind: str, data: dict[str, Any]) -> None:
        self.pipeline.say(Event(kind, self._event_now(), "info", data))

    def _new_pipeline(self, vehicle: Vehicle) -> Pipeline:
        return Pipeline(vehicle, self._deliver, side_sink=self._side, held=self.memory)

    def _side(self, leaf: str, doc_id: str, doc: dict[str, Any]) -> None:
        assert self.outbox is not None
        self.outbox.put(doc_id, self.config.topic(leaf), json.dumps(doc).encode(), "info", time.time())
        log.info("%s %s queued", leaf, doc_id)

    def _deliver(self, msg: PersonaMessage) -> None:
        assert self.outbox is not None
        enqueue(self.outbox, self.config, msg)  # committed: from here on it is never lost
        if msg.question:
            self.memory.ask(msg.id, msg.kind, msg.question, msg.data, time.time())
        log.info("message %s %s: %s", msg.kind, msg.id, msg.text)
        if self.courier is not None:
            self.courier.pump()
        for hook in self.on_message:
            hook(msg)

    def reload(self) -> None:
        """SIGHUP: take a new config if it is valid; keep the old one (and say why) if not."""
        if self.config_path is None:
            return
        self.notifier.reloading("reloading config")
        try:
            config = load_config(self.config_path, dbc_override=self.dbc_override)
            vehicle = load_vehicle(config)
        except CarfriendError as exc:
            log.error("reload refused, keeping the running config: %s", "; ".join(
                exc.problems if isinstance(exc, ConfigError) else [str(exc)]))
            self.notifier.ready("reload refused: config invalid, running the old one")
            return
        old = self.pipeline
        self.config, self.vehicle = config, vehicle
        self.pipeline = self._new_pipeline(vehicle)
        self.pipeline.adopt(old)
        self.diag = self._new_diag()
        self._announce_due = True  # the mapping may have changed: entities come and go
        self._close_bus()
        try:  # the new interface and filters, at once
            self._connect_bus()
        except SourceError as exc:
            log.error("after reload: %s; retrying every %g s", exc, self.config.can.reconnect_s)
            self.bus_trouble = f"CAN bus lost: {exc}"
        log.info("config reloaded from %s", self.config_path)
        self.notifier.ready("config reloaded")

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    def request_reload(self, *_: Any) -> None:
        self.reload_requested.set()

    def shutdown(self) -> None:
        """Stop reading, flush what can be flushed, publish offline, close the bus."""
        self.notifier.stopping("stopping")
        log.info("stopping: %s", self._counters_line())
        if self.uplink is not None and self.courier is not None:
            self._maybe_publish_state(force=True)
            left = self.courier.drain(timeout=3.0)
            if left:
                log.info("%d message(s) stay in the outbox for the next start", left)
            self.uplink.stop(timeout=3.0)
        self._close_bus()
        if self.outbox is not None:
            self.outbox.close()
        self.memory.close()

    def _counters_line(self) -> str:
        c = self.pipeline.counters()
        dropped = " ".join(f"{k}={v}" for k, v in c["dropped"].items() if v) or "none"
        counts = dict(self.commands.counts) if self.commands else {}
        if self.uplink is not None:
            counts.update(retained=self.uplink.retained_commands, unreadable=self.uplink.unreadable_commands)
        commands = " ".join(f"{k.replace(': ', '_').replace(' ', '_')}={v}" for k, v in sorted(counts.items())
                            if v) or "none"
        line = (f"frames={c['frames']} decoded={c['decoded']} unchanged={c['unchanged']} "
                f"dropped[{dropped}] messages={c['messages']} sent={self.courier.sent if self.courier else 0} "
                f"commands[{commands}]")
        top = self.pipeline.decoder.drops.top(3)  # which ids, messages and signals the drops come from
        if top:
            line += " where[" + "; ".join(f"{reason}: " + ", ".join(f"{w} {n}" for w, n in sites)
                                          for reason, sites in top.items()) + "]"
        if self.diag is not None:
            line += " diag[" + " ".join(f"{k}={v}" for k, v in self.diag.counters().items()) + "]"
        return line


def open_outbox(config: AgentConfig) -> SqliteOutbox:
    return SqliteOutbox(config.resolved_state_dir() / "outbox.db",
                        max_messages=config.storage.outbox_max_messages)


def enqueue(outbox: SqliteOutbox, config: AgentConfig, msg: PersonaMessage) -> bool:
    created = datetime.fromisoformat(msg.ts.replace("Z", "+00:00")).timestamp()
    return outbox.put(msg.id, config.topic("messages"), msg.model_dump_json().encode(), msg.severity, created)


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    signal.signal(signal.SIGHUP, agent.request_reload)
