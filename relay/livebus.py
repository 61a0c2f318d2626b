"""Wake the live pages of every relay instance when a vehicle's data changes (does IO).

On PostgreSQL the writer adds ``pg_notify`` to its own transaction, so the notification goes out
with the commit (and never for a rolled-back one), and each instance's listener thread wakes its
pages through the in-process hub: another instance's page updates within milliseconds instead of
at its next poll. On SQLite (one instance) the writer wakes the hub itself after the commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from relay.hub import Hub

log = logging.getLogger(__name__)

CHANNEL = "carfriend_live"
MAX_PAYLOAD = 7000  # PostgreSQL takes up to 8000 bytes per notification


class LiveBus:
    """in_transaction() before the commit, committed() after it; start()/stop() the listener."""

    def __init__(self, hub: Hub, url: URL) -> None:
        self.hub = hub
        self.shared = url.get_backend_name() == "postgresql"
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._stop = threading.Event()
        self.listening = threading.Event()
        self.received = 0  # notifications (tests, /healthz)
        self._thread: threading.Thread | None = None

    def in_transaction(self, session: Session, vehicle_ids: Iterable[str]) -> None:
        if self.shared:
            for payload in payloads(vehicle_ids):
                session.execute(select(func.pg_notify(CHANNEL, payload)))

    def committed(self, vehicle_ids: Iterable[str]) -> None:
        if not self.shared:
            self.hub.notify(vehicle_ids)

    def changed(self, session: Session, vehicle_ids: list[str]) -> None:
        """Outside a writing transaction (a command sent from the web): notify now."""
        self.in_transaction(session, vehicle_ids)
        session.commit()
        self.committed(vehicle_ids)

    def start(self) -> None:
        if self.shared and self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="relay-listen", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self) -> None:
        """LISTEN on a connection of its own; reconnects with backoff, and wakes every page
        after (re)connecting, as notifications sent meanwhile are lost."""
        import psycopg

        delay, failing = 0.5, False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self.hub.wake_all()
                    if failing:
                        log.info("live notifications: listening again")
                    delay, failing = 0.5, False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.received += 1
                            self.hub.notify(note.payload.split(","))
            except Exception as exc:  # the database went away: pages fall back to polling
                self.listening.clear()
                if self._stop.is_set():
                    return
                # One line per outage; the retries (backoff up to 10 s) at debug level.
                (log.debug if failing else log.warning)(
                    "live notifications: %s; reconnecting with backoff", " ".join(str(exc).split()))
                failing = True
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.listening.clear()


def payloads(vehicle_ids: Iterable[str]) -> Iterator[str]:
    """Comma-separated vehicle ids (which hold no commas), each payload under MAX_PAYLOAD."""
    chunk: list[str] = []
    size = 0
    for vid in sorted(set(vehicle_ids)):
        if chunk and size + len(vid) + 1 > MAX_PAYLOAD:
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(vid)
        size += len(vid) + 1
    if chunk:
        yield ",".join(chunk)
