"""The durable outbox: SQLite (WAL, synchronous=FULL) between persona messages and MQTT (file IO).

A message counts as produced once put() has committed it; it leaves only when the broker has
acknowledged it (ack()). Ids are the messages' own deterministic ids, so putting the same
message twice stores it once, and a retry after a crash carries the same id.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import OutboxError

log = logging.getLogger(__name__)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
RANK_SEVERITY = {v: k for k, v in SEVERITY_RANK.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    rank INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox (rank DESC, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    id: str
    topic: str
    payload: bytes
    severity: str


class SqliteOutbox:
    """Thread-safe (one connection behind a lock): the worker puts, paho's thread acks."""

    def __init__(self, path: Path, *, max_messages: int = 100_000) -> None:
        self.path = path
        self.max_messages = max_messages
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("OUTBOX %s IS UNREADABLE (%s): kept aside as %s, starting a new one; "
                      "its messages were NOT sent and NOT deleted", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{path}{suffix}")
                if src.exists():
                    src.rename(Path(f"{aside}{suffix}"))
            try:
                self._db = self._open(path)
            except sqlite3.DatabaseError as exc2:
                raise OutboxError(f"{path}: cannot create the outbox: {exc2}") from None
        except OSError as exc:
            raise OutboxError(f"{path}: cannot open the outbox: {exc}") from None

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        try:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed message survives a power cut
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def put(self, msg_id: str, topic: str, payload: bytes, severity: str, created: float) -> bool:
        """Commit a message; False if one with this id is already queued."""
        rank = SEVERITY_RANK[severity]
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (id, topic, payload, rank, created) VALUES (?, ?, ?, ?, ?)",
                    (msg_id, topic, payload, rank, created))
                added = cur.rowcount == 1
                if added:
                    self._enforce_cap()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot store message {msg_id}: {exc}") from None
        return added

    def _enforce_cap(self) -> None:
        excess = self._count() - self.max_messages
        if excess <= 0:
            return
        # Oldest of the lowest severity first; critical messages are never dropped.
        for rank in (0, 1):
            if excess <= 0:
                break
            rows = self._db.execute(
                "SELECT seq FROM outbox WHERE rank = ? ORDER BY seq LIMIT ?", (rank, excess)).fetchall()
            if rows:
                self._db.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(rows))})",
                                 [r[0] for r in rows])
                self._bump(f"dropped_{RANK_SEVERITY[rank]}", len(rows))
                log.warning("outbox full (%d messages): dropped %d %s message(s)",
                            self.max_messages, len(rows), RANK_SEVERITY[rank])
                excess -= len(rows)

    def _bump(self, name: str, by: int) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[Entry]:
        """Next messages to send: most severe first, in order within a severity."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, topic, payload, rank FROM outbox ORDER BY rank DESC, seq LIMIT ?",
                (limit + len(exclude),)).fetchall()
        return [Entry(s, i, t, bytes(p), RANK_SEVERITY[r]) for s, i, t, p, r in rows if s not in exclude][:limit]

    def queued_total(self) -> int:
        with self._lock:
            return self._count()

    def ack(self, seq: int) -> None:
        self.ack_many([seq])

    def ack_many(self, seqs: list[int]) -> None:
        """Delete acknowledged messages, in one transaction (one fsync for a whole burst)."""
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {str(n): int(v) for n, v in self._db.execute("SELECT name, value FROM counters")}

    def mark_reported(self, dropped_total: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO counters (name, value) VALUES ('reported', ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (dropped_total,))

    def status(self, now: float | None = None) -> dict[str, object]:
        """Queued count by severity, the oldest message's age, drops: for `outbox status` and fleet reports."""
        with self._lock:
            by_rank = dict(self._db.execute("SELECT rank, COUNT(*) FROM outbox GROUP BY rank").fetchall())
            oldest = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
        counters = self.counters()
        at = time.time() if now is None else now
        return {
            "queued": {RANK_SEVERITY[r]: int(by_rank.get(r, 0)) for r in (2, 1, 0)},
            "queued_total": int(sum(by_rank.values())),
            "oldest_age_s": None if oldest is None else round(max(0.0, at - oldest), 1),
            "dropped": {s: counters.get(f"dropped_{s}", 0) for s in ("info", "warning")},
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
