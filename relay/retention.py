"""Retention: delete rows older than the config keeps and thin the state history to one row per
slot, in small transactions so the ingest never waits long (does IO; `thin` is pure).

Every delete takes at most ``batch_rows`` rows, picked through an index on the time column, in
a transaction of its own: on PostgreSQL it locks only the rows it deletes (the ingest inserts
others); on SQLite, whose one write lock the pruner would otherwise take back at once (SQLite's
busy handler polls), it pauses between transactions so the ingest gets its turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from relay.config import RetentionConfig
from relay.db import describe, unavailable
from relay.models import (
    Appointment,
    Command,
    CommandResult,
    FleetReport,
    LoginFailure,
    Message,
    RelaySetting,
    StateRecord,
    WebSession,
)

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1)
THINNED_UNTIL = "state_thinned_until"  # relay_settings: the history before it is thinned
SLOTS_PER_SLICE = 4  # the history is thinned an hour (of 15-minute slots) at a time
# pg_advisory_lock key of the prune: one run per database at a time ("cfprune" as a number).
PRUNE_LOCK = int.from_bytes(b"cfprune", "big")
_LOCAL_PRUNE = threading.Lock()


def thin(rows: Iterable[tuple[int, str, datetime]], slot_s: int) -> list[int]:
    """The row numbers to delete so that each vehicle keeps only the first row of each slot of
    slot_s seconds (rows sorted by vehicle, ts, seq)."""
    doomed, last = [], None
    for seq, vehicle_id, ts in rows:
        key = (vehicle_id, int((ts - EPOCH).total_seconds()) // slot_s)
        if key == last:
            doomed.append(seq)
        last = key
    return doomed


def slot_start(ts: datetime, slot_s: int) -> datetime:
    return EPOCH + timedelta(seconds=int((ts - EPOCH).total_seconds()) // slot_s * slot_s)


class Pruner:
    """Applies a RetentionConfig to the database; prune(now) returns the rows deleted per table.

    One prune at a time per database, whichever relay instance or `carfriend relay prune`
    starts it: on PostgreSQL a session-level advisory lock (pg_try_advisory_lock, held on a
    connection of its own for the whole run and released by the server if that connection
    dies); on SQLite an exclusive flock on ``<database>.prune-lock``. Whoever does not get the
    lock skips this run: the other one is doing the work."""

    def __init__(self, sessions: sessionmaker[Session], cfg: RetentionConfig) -> None:
        self.sessions = sessions
        self.cfg = cfg
        self.skipped = 0  # runs skipped because another prune held the lock
        with sessions() as s:
            bind = s.get_bind()
            self.engine: Engine = bind if isinstance(bind, Engine) else bind.engine
        self.dialect = self.engine.dialect.name
        self.pause_s = 0.15 if self.dialect == "sqlite" else 0.0

    def prune(self, now: datetime) -> Counter[str]:
        with self.exclusive() as mine:
            if not mine:
                self.skipped += 1
                log.info("another relay instance is pruning: this run is skipped")
                return Counter()
            return self._prune(now)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Holds the database's prune lock while it can be had: yields whether it was."""
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                got = bool(conn.scalar(select(func.pg_try_advisory_lock(PRUNE_LOCK))))
                conn.commit()  # the lock is the session's: no transaction stays open
                try:
                    yield got
                finally:
                    if got:
                        with contextlib.suppress(SQLAlchemyError):  # gone with the connection
                            conn.execute(select(func.pg_advisory_unlock(PRUNE_LOCK)))
                            conn.commit()
            return
        path = self.engine.url.database
        if self.dialect != "sqlite" or not path or path == ":memory:":
            got = _LOCAL_PRUNE.acquire(blocking=False)  # one process only: a lock in memory
            try:
                yield got
            finally:
                if got:
                    _LOCAL_PRUNE.release()
            return
        with open(f"{path}.prune-lock", "a+b") as lockfile:
            try:
                fcntl.flock(lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lockfile, fcntl.LOCK_UN)

    def _prune(self, now: datetime) -> Counter[str]:
        cfg, done = self.cfg, Counter[str]()
        for model, column, days in (
                (Message, Message.received_at, cfg.messages_days),
                (CommandResult, CommandResult.received_at, cfg.commands_days),
                (Command, Command.issued_at, cfg.commands_days),
                (Appointment, Appointment.received_at, cfg.appointments_days),
                (FleetReport, FleetReport.received_at, cfg.fleet_reports_days),
                (StateRecord, StateRecord.ts, cfg.state_days)):
            if days:
                done[model.__tablename__] += self._delete_before(
                    model, column, now - timedelta(days=days))
        if cfg.state_raw_days:
            done["state_history thinned"] += self._thin(now - timedelta(days=cfg.state_raw_days))
        done["login_failures"] += self._delete_before(LoginFailure, LoginFailure.at,
                                                      now - timedelta(days=1))
        done["web_sessions"] += self._delete_before(WebSession, WebSession.expires_at, now)
        return +done

    def _delete_before(self, model: Any, column: Any, cutoff: datetime) -> int:
        key = model.__mapper__.primary_key[0]
        total = 0
        while True:
            with self.sessions() as s, s.begin():
                doomed = (select(key).where(column < cutoff).order_by(column)
                          .limit(self.cfg.batch_rows).scalar_subquery())
                result: Any = s.execute(delete(model).where(key.in_(doomed)))
                n = result.rowcount or 0
            total += n
            if n < self.cfg.batch_rows:
                return total
            time.sleep(self.pause_s)

    def _thin(self, until: datetime) -> int:
        """Thin the history from where the last run stopped up to `until` (rounded down to a
        slot), an hour of event time per read."""
        slot_s = self.cfg.state_downsample_s
        until = slot_start(until, slot_s)
        start = self._thinned_until()
        if start is None:
            with self.sessions() as s:
                start = s.scalar(select(func.min(StateRecord.ts)))
            if start is None:
                return 0
        lo, total = slot_start(start, slot_s), 0
        while lo < until:
            hi = min(lo + timedelta(seconds=slot_s * SLOTS_PER_SLICE), until)
            with self.sessions() as s:
                rows = s.execute(select(StateRecord.seq, StateRecord.vehicle_id, StateRecord.ts)
                                 .where(StateRecord.ts >= lo, StateRecord.ts < hi)
                                 .order_by(StateRecord.vehicle_id, StateRecord.ts,
                                           StateRecord.seq)).all()
            doomed = thin(rows, slot_s)
            for i in range(0, len(doomed), self.cfg.batch_rows):
                with self.sessions() as s, s.begin():
                    chunk = doomed[i:i + self.cfg.batch_rows]
                    result: Any = s.execute(delete(StateRecord)
                                            .where(StateRecord.seq.in_(chunk)))
                    total += result.rowcount or 0
                time.sleep(self.pause_s)
            self._set_thinned_until(hi)
            lo = hi
        return total

    def _thinned_until(self) -> datetime | None:
        with self.sessions() as s:
            text = s.scalar(select(RelaySetting.value).where(RelaySetting.name == THINNED_UNTIL))
        return datetime.fromisoformat(text) if text else None

    def _set_thinned_until(self, ts: datetime) -> None:
        with self.sessions() as s, s.begin():
            dialect: Any = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(RelaySetting).values(name=THINNED_UNTIL, value=ts.isoformat())
            s.execute(stmt.on_conflict_do_update(index_elements=["name"],
                                                 set_={"value": stmt.excluded.value}))


class PruneSchedule:
    """Runs a Pruner every interval_s in a thread of its own; a failed run is logged and the
    next one comes at its time."""

    def __init__(self, pruner: Pruner, interval_s: float, clock: Any) -> None:
        self.pruner = pruner
        self.interval_s = interval_s
        self.clock = clock
        self.runs = 0
        self.last: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-prune", daemon=True)

    def start(self) -> None:
        if self.interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.last = self.pruner.prune(self.clock())
                self.runs += 1
                if self.last:
                    log.info("pruned %s", ", ".join(f"{k} {v}" for k, v in self.last.items()))
            except SQLAlchemyError as exc:
                if not unavailable(exc):
                    log.exception("pruning failed; trying again in %.0f s", self.interval_s)
                else:
                    log.warning("pruning skipped: database unavailable (%s); next run in %.0f s",
                                describe(exc), self.interval_s)
            except Exception:
                log.exception("pruning failed; trying again in %.0f s", self.interval_s)
