"""The notification worker: fans new messages out into the outbox and delivers what is due,
with retries and backoff, in its own thread (does IO: database, push services, Apprise).

Ingest only wakes it (a committed batch); it never waits for it. Each pass: fan out (one
transaction, cursor and rows together), claim due rows with a lease (so two relay instances
never send the same row at once, and a killed one's rows come back when the lease ends), deliver
them on a small thread pool (a slow push service holds one thread for at most timeout_s), and
record each outcome. A row is sent at least once: a crash after sending and before recording
sends it again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet
from py_vapid import Vapid02
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from relay import queries
from relay.config import NotifyConfig
from relay.db import describe
from relay.models import Message, Notification, NotifyChannel, PushSubscription, Vehicle, utcnow
from relay.notify import deliver, payload
from relay.notify.fanout import Fanout
from relay.notify.secrets import decrypt

log = logging.getLogger(__name__)
# Rows claimed per pass: a few per sender thread, so a lease (each row's timeout, a few times
# over) covers the whole claim even when every push service hangs.
CLAIM_PER_WORKER = 4


@dataclass(frozen=True)
class Job:
    """One claimed row, with everything needed to deliver it outside any transaction."""

    row_id: int
    channel: str
    content: payload.Content | None  # None: nothing to deliver any more (role or target gone)
    target: tuple[str, ...] = ()  # push: endpoint, p256dh, auth; channel: url


class Notifier:
    def __init__(self, cfg: NotifyConfig, sessions: sessionmaker[Session], vapid: Vapid02,
                 channel_key: Fernet, session_secret: str, base_url: str = "",
                 instance: str = "") -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.vapid = vapid
        self.channel_key = channel_key
        self.secret = session_secret
        self.base_url = base_url
        self.fanout = Fanout(timedelta(seconds=cfg.max_age_s))
        # webpush at 0 from the start, so its series exist before the first delivery
        self.sent: Counter[str] = Counter({"webpush": 0})
        self.failed: Counter[str] = Counter({"webpush": 0})
        self.pending = 0
        # The instance's stable name (its MQTT client id, unique per instance): after a crash the
        # same instance takes back its own leases at once instead of waiting them out.
        self.owner = (instance or secrets.token_hex(8))[:40]
        self.claim = CLAIM_PER_WORKER * cfg.workers
        self.lease = timedelta(seconds=CLAIM_PER_WORKER * cfg.timeout_s * 2 + 10)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._db_down = False  # logged once per outage
        self._pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="relay-notify-send")
        self._thread = threading.Thread(target=self._run, name="relay-notify", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        with self.sessions() as s, s.begin():
            s.execute(update(Notification).where(Notification.lease_owner == self.owner)
                      .values(lease_owner=None, lease_until=None))
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self, _vehicles: object = None) -> None:
        """Called by the ingest after a commit (any thread)."""
        self._wake.set()

    def counters(self) -> tuple[dict[str, int], dict[str, int], int]:
        return dict(self.sent), dict(self.failed), self.pending

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.run_once(utcnow())
                if self._db_down:
                    log.info("notifications: database available again")
                    self._db_down = False
            except SQLAlchemyError as exc:  # the database is away: the next pass retries
                # One line per outage, not one per pass.
                (log.debug if self._db_down else log.warning)(
                    "notifications: database unavailable (%s); retrying", describe(exc))
                self._db_down = True
                self._stop.wait(2.0)
                continue
            except Exception:  # a bug: logged, and the loop goes on
                log.exception("notification pass failed")
                self._stop.wait(2.0)

    def run_once(self, now: datetime) -> int:
        """Fan out, then deliver what is due now; returns how many rows were delivered."""
        with self.sessions() as s, s.begin():
            self.fanout.run(s, now)
        jobs = self._claim(now)
        done = 0
        for job, outcome in zip(jobs, self._pool.map(self._deliver, jobs), strict=True):
            self._record(job, outcome, utcnow())
            done += outcome.ok
        with self.sessions() as s:
            self.pending = int(s.scalar(select(func.count()).select_from(Notification)
                                        .where(Notification.status == "pending")) or 0)
        if len(jobs) == self.claim:
            self._wake.set()  # more are due
        return done

    def _claim(self, now: datetime) -> list[Job]:
        until = now + self.lease
        with self.sessions() as s, s.begin():
            due = list(s.scalars(select(Notification.id).where(
                Notification.status == "pending", Notification.next_attempt_at <= now,
                or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                .order_by(Notification.id).limit(self.claim)))
            if not due:
                return []
            s.execute(update(Notification).where(
                Notification.id.in_(due),
                or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                .values(lease_owner=self.owner, lease_until=until))
            rows = list(s.scalars(select(Notification).where(
                Notification.id.in_(due), Notification.lease_owner == self.owner,
                Notification.lease_until == until)))
            return [self._job(s, row) for row in rows]

    def _job(self, s: Session, row: Notification) -> Job:
        msg = s.get(Message, row.message_seq)
        vehicle = s.get(Vehicle, row.vehicle_id)
        acc = queries.access(s, row.user_id, row.vehicle_id)
        if msg is None or vehicle is None or msg.visibility not in acc.visibilities:
            return Job(row.id, row.channel, None)  # the role went since the fan-out
        token = payload.action_token(self.secret, row.user_id, row.vehicle_id, msg.msg_id) \
            if acc.can_command and msg.question else ""
        content = payload.content(vehicle.id, vehicle.name, msg.msg_id, msg.seq, msg.text,
                                  msg.persona, msg.severity, msg.question, acc.can_command, token)
        kind, _, ident = row.target.partition(":")
        if kind == "push":
            sub = s.get(PushSubscription, int(ident))
            if sub is None or sub.user_id != row.user_id:
                return Job(row.id, row.channel, None)
            return Job(row.id, row.channel, content, (sub.endpoint, sub.p256dh, sub.auth))
        channel = s.get(NotifyChannel, int(ident))
        url = decrypt(self.channel_key, channel.secret) if channel is not None else None
        if channel is None or channel.user_id != row.user_id or url is None:
            return Job(row.id, row.channel, None)
        return Job(row.id, row.channel, content, (url,))

    def _deliver(self, job: Job) -> deliver.Outcome:
        c = job.content
        if c is None:
            return deliver.Outcome(gone=True, detail="no longer to be delivered")
        try:
            if job.channel == "webpush":
                endpoint, p256dh, auth = job.target
                return deliver.web_push(endpoint, p256dh, auth, payload.push_payload(c),
                                        self.vapid, self.cfg.vapid_subject, self.cfg.timeout_s,
                                        urgent=c.severity == "critical")
            return deliver.apprise_notify(job.target[0], c.title,
                                          payload.text_body(c, self.base_url), c.severity,
                                          self.cfg.timeout_s)
        except Exception as exc:  # a bug in an adapter: this row retries, the others go on
            log.exception("delivering notification %d failed", job.row_id)
            return deliver.Outcome(retry=True, detail=f"internal error ({type(exc).__name__})")

    def _record(self, job: Job, outcome: deliver.Outcome, now: datetime) -> None:
        with self.sessions() as s, s.begin():
            row = s.get(Notification, job.row_id)
            if row is None or row.lease_owner != self.owner:
                return
            row.attempts += 1
            row.lease_owner, row.lease_until = None, None
            row.last_error = outcome.detail[:300] or None
            if outcome.ok:
                row.status, row.sent_at = "sent", now
                self.sent[job.channel] += 1
                return
            if job.content is not None:
                self.failed[job.channel] += 1
                log.warning("notification %d (%s) not delivered: %s", row.id, job.channel,
                            outcome.detail)
            if outcome.gone:
                row.status = "gone"
                if row.target.startswith("push:") and job.content is not None:
                    s.execute(delete(PushSubscription).where(
                        PushSubscription.id == int(row.target[5:])))
            elif outcome.retry and row.attempts < self.cfg.max_attempts:
                delay = min(self.cfg.retry_s * 2 ** (row.attempts - 1), self.cfg.retry_max_s)
                row.next_attempt_at = now + timedelta(seconds=delay)
            else:
                row.status = "failed"


def wait_idle(notifier: Notifier, timeout_s: float = 10.0) -> None:
    """Tests: run passes until nothing is due now (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and notifier.run_once(utcnow()):
        pass
