"""Run the relay: migrate the database, start the MQTT ingest and serve the web app (does IO)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine

from relay.auth import LoginLimiter, session_secret
from relay.commands import Downlink
from relay.config import RelayConfig
from relay.db import make_engine, make_sessionmaker, migrate
from relay.hub import Hub
from relay.livebus import LiveBus
from relay.metrics import RelayMetrics, Sources
from relay.models import utcnow
from relay.mqtt import MqttIngest
from relay.notify.secrets import load_channel_key, load_vapid, public_key_b64
from relay.notify.worker import Notifier
from relay.retention import Pruner, PruneSchedule
from relay.web import AppContext, create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Ends the live streams as soon as a stop is asked, so shutdown does not wait on them."""

    def __init__(self, config: uvicorn.Config, relay: Relay) -> None:
        super().__init__(config)
        self.relay = relay

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.relay.ctx.stopping.set()
        self.relay.ctx.hub.wake_all()
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal once it has stopped, which would kill the process before
        # the ingest is drained; Relay.run stops everything and returns instead.
        self._captured_signals.clear()


class Relay:
    """Everything one relay instance runs; start()/stop() for tests, run() for the CLI."""

    def __init__(self, config: RelayConfig, live_poll_s: float | None = None) -> None:
        self.config = config
        self.engine: Engine = make_engine(config.database.url, config.database.echo,
                                          config.database.timeout_s)
        migrate(self.engine)
        sessions = make_sessionmaker(self.engine)
        hub = Hub()
        self.live = LiveBus(hub, self.engine.url)
        self.ingest = MqttIngest(config.mqtt, sessions, self.live, config.ingest)
        downlink = Downlink(config.keys.dir, lambda t, p: self.ingest.publish(t, p),
                            config.commands)
        web = config.web
        self.ctx = AppContext(config, sessions, hub, downlink,
                              LoginLimiter(sessions, web.login_attempts_per_window,
                                           web.login_window_s),
                              self.ingest, live=self.live,
                              live_poll_s=live_poll_s or web.live_poll_s)
        secret = session_secret(web.secret_file, sessions)
        self.notifier: Notifier | None = None
        if config.notify.enabled:
            vapid = load_vapid(config.notify)
            self.notifier = Notifier(config.notify, sessions, vapid,
                                     load_channel_key(config.notify), secret,
                                     config.notify.public_url, config.mqtt.client_id)
            self.ctx.notifier, self.ctx.vapid_key = self.notifier, public_key_b64(vapid)
            hub.add_listener(self.notifier.wake)
        self.metrics = RelayMetrics(Sources(self.ingest, hub, sessions, self.notifier.counters
                                            if self.notifier else None), config.metrics)
        self.ctx.metrics = self.metrics
        self.app = create_app(self.ctx, secret)
        self.pruning = PruneSchedule(Pruner(sessions, config.retention),
                                     config.retention.interval_s, utcnow)
        uv = uvicorn.Config(self.app, host=web.host, port=web.port, lifespan="off",
                            access_log=False, timeout_graceful_shutdown=3, log_config=None)
        self.server = _Server(uv, self)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (uvicorn handles the signals), then stop cleanly."""
        self.live.start()
        self.ingest.start()
        self.pruning.start()
        self.metrics.start_listener()
        if self.notifier is not None:
            self.notifier.start()
        log.info("relay serving http://%s:%d", self.config.web.host, self.config.web.port)
        try:
            self.server.run()
        finally:
            self._shutdown()

    def start(self) -> Relay:
        """Run in a background thread (tests); returns once the web server listens."""
        self.live.start()
        self.ingest.start()
        self.pruning.start()
        self.metrics.start_listener()
        if self.notifier is not None:
            self.notifier.start()
        self._thread = threading.Thread(target=self.server.run, name="relay-web", daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the relay's web server did not start")
            self._thread.join(0.02)
        return self

    def stop(self) -> None:
        self.ctx.stopping.set()
        self.ctx.hub.wake_all()
        self.server.should_exit = True
        if self._thread:
            self._thread.join(10)
        self._shutdown()

    def _shutdown(self) -> None:
        self.ctx.stopping.set()
        self.pruning.stop()
        self.metrics.stop_listener()
        self.ingest.stop()
        if self.notifier is not None:
            self.notifier.stop()
        self.live.stop()
        self.engine.dispose()
        log.info("relay stopped")
