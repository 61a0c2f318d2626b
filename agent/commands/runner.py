"""Executes accepted commands: replay memory, rate limit, CAN frames, confirmation on the bus (IO).

Runs on the worker thread only: paho's thread just queues (topic, payload).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
from cantools.database.can import Message

from agent.commands.protocol import Command, interlock, parse, read_id
from agent.core.errors import CommandError, ConfigError
from agent.core.model import PersonaMessage
from agent.core.settings import AgentConfig, CommandFrame
from agent.core.state import VehicleState
from agent.core.vehicle import Vehicle
from agent.profile.config import read_secret

log = logging.getLogger(__name__)

ResultSink = Callable[[str, str, str, str], None]  # (command name, id, status, reason)
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def read_command_key(config: AgentConfig) -> bytes | None:
    """The vehicle's command key: systemd credential, then [commands] key_file, then env."""
    env = os.environ.get("CARFRIEND_COMMAND_KEY", "").strip() or None
    key, source = read_secret("command-key", env, config.commands.key_file)
    if not key:
        return None
    if len(key) < 16:
        raise ConfigError(f"{source}: the command key is shorter than 16 characters")
    return key.encode()


class CommandMemory:
    """Command ids already seen and questions asked, in SQLite: both survive restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS questions (message_id TEXT PRIMARY KEY, kind TEXT NOT NULL,
                answers TEXT NOT NULL, data TEXT NOT NULL, at REAL NOT NULL, answered TEXT);
            CREATE TABLE IF NOT EXISTS held (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE,
                message TEXT NOT NULL);
        """)

    def first_use(self, command_id: str, now: float, keep_s: float) -> bool:
        """Record an id; False if it was used before (a replay)."""
        self.db.execute("DELETE FROM seen WHERE at < ?", (now - keep_s,))
        cur = self.db.execute("INSERT OR IGNORE INTO seen (id, at) VALUES (?, ?)", (command_id, now))
        return cur.rowcount == 1

    def ask(self, message_id: str, kind: str, answers: list[str], data: dict[str, Any], at: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO questions VALUES (?, ?, ?, ?, ?, NULL)",
                        (message_id, kind, json.dumps(answers), json.dumps(data), at))

    def question(self, message_id: str) -> tuple[str, list[str], dict[str, Any], str | None] | None:
        row = self.db.execute("SELECT kind, answers, data, answered FROM questions WHERE message_id = ?",
                              (message_id,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]), json.loads(row[2]), row[3])

    def answered(self, message_id: str, answer: str) -> None:
        self.db.execute("UPDATE questions SET answered = ? WHERE message_id = ?", (answer, message_id))

    def reopen(self, message_id: str, answer: str) -> None:
        """The answer's action did not take: the question is open again."""
        self.db.execute("UPDATE questions SET answered = NULL WHERE message_id = ? AND answered = ?",
                        (message_id, answer))

    # Messages held during quiet hours (agent.voice.HeldStore): a restart loses none.
    def hold(self, msg: PersonaMessage) -> None:
        self.db.execute("INSERT OR IGNORE INTO held (id, message) VALUES (?, ?)", (msg.id, msg.model_dump_json()))

    def held(self) -> list[PersonaMessage]:
        rows = self.db.execute("SELECT message FROM held ORDER BY seq").fetchall()
        return [PersonaMessage.model_validate_json(r[0]) for r in rows]

    def release(self, ids: list[str]) -> None:
        self.db.executemany("DELETE FROM held WHERE id = ?", [(i,) for i in ids])

    def close(self) -> None:
        self.db.close()


@dataclass
class Pending:
    command: Command
    name: str
    expect: dict[str, Any]
    deadline: float  # monotonic
    on_done: Callable[[], None] | None = None
    on_fail: Callable[[], None] | None = None
    sent_at: float = field(default_factory=time.monotonic)


class CommandRunner:
    def __init__(self, config: AgentConfig, vehicle: Vehicle, memory: CommandMemory, key: bytes | None,
                 *, send: Callable[[can.Message], None], result: ResultSink,
                 publish_state: Callable[[], None], say: Callable[[str, dict[str, Any]], None]) -> None:
        self.config = config
        self.cfg = config.commands
        self.vehicle = vehicle
        self.memory = memory
        self.key = key
        self.send = send
        self.result = result
        self.publish_state = publish_state
        self.say = say  # a persona message of the given kind (e.g. the reply's confirmation)
        self.pending: list[Pending] = []
        self.recent: deque[float] = deque()
        self.dropped = 0
        self.counts: Counter[str] = Counter()  # by outcome and drop reason, for the counters log
        self._counters: dict[int, int] = {}
        self.frames = self._check_frames()

    def _check_frames(self) -> dict[str, tuple[Message, CommandFrame]]:
        problems, frames = [], {}
        where = f"{self.config.source}: [commands.frames]"
        for name, cf in self.cfg.frames.items():
            message = self.vehicle.find_message(cf.message)
            if message is None:
                problems.append(f'{where} "{name}": message "{cf.message}" is in none of the DBC files')
                continue
            names = {s.name for s in message.signals}
            problems += [f'{where} "{name}": message "{cf.message}" has no signal "{s}"'
                         for s in cf.signals if s not in names]
            frames[name] = (message, cf)
        if problems:
            raise ConfigError(problems)
        return frames

    def allowed(self, name: str) -> bool:
        allow = self.cfg.allowlist
        return name in allow if allow is not None else True

    # -- intake ---------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, state: VehicleState, event_now: float,
               wall_now: float | None = None) -> None:
        """One command off the downlink: answered or dropped, counted, never raised.

        The worker loop calls this for every payload anyone could publish: nothing here may
        end that loop.
        """
        name = topic.rsplit("/cmd/", 1)[-1]
        if not name or len(name) > 64 or not set(name) <= NAME_CHARS or name.endswith("/result"):
            self._drop("bad command topic")
            return
        try:
            try:
                cmd = parse(name, payload, vehicle_id=self.config.vehicle.id, key=self.key,
                            now=time.time() if wall_now is None else wall_now, window_s=self.cfg.window_s,
                            skew_s=self.cfg.skew_s, max_bytes=self.cfg.max_payload_bytes)
                self._admit(cmd, wall_now)
            except CommandError as exc:
                self._refuse(name, payload, exc.reason)
                return
            self._execute(cmd, state, event_now)
        except Exception as exc:  # noqa: BLE001 - a bug or a driver's surprise: one command, not the agent
            self.counts["internal error"] += 1
            log.error("command %s: internal error: %s: %s", name, type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self._refuse(name, payload, f"internal error ({type(exc).__name__})")

    def _refuse(self, name: str, payload: bytes, reason: str) -> None:
        """Answer `rejected` when the payload has a readable id; otherwise drop and count it."""
        try:
            cid = read_id(payload, self.cfg.max_payload_bytes)
            if cid is None:
                self._drop(reason)
                return
            log.warning("command %s %s rejected: %s", name, cid, reason)
            self.counts["rejected"] += 1
            self.result(name, cid, "rejected", reason)
        except Exception as exc:  # noqa: BLE001 - the answer could not be queued: counted, go on
            self.counts["unanswered"] += 1
            log.error("command %s: the rejection could not be answered: %s: %s", name, type(exc).__name__, exc)

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self.counts[f"dropped: {_category(reason)}"] += 1
        log.warning("command payload dropped (%s); %d dropped so far", reason, self.dropped)

    def _admit(self, cmd: Command, wall_now: float | None) -> None:
        now = time.time() if wall_now is None else wall_now
        if not self.allowed(cmd.name):
            raise CommandError(f"{cmd.name} is not on this vehicle's allowlist")
        if not self.memory.first_use(cmd.id, now, keep_s=2 * (self.cfg.window_s + self.cfg.skew_s) + 60):
            raise CommandError("replayed command id")
        mono = time.monotonic()
        while self.recent and mono - self.recent[0] > 60:
            self.recent.popleft()
        if len(self.recent) >= self.cfg.rate_per_minute:
            raise CommandError(f"rate limit: more than {self.cfg.rate_per_minute} commands a minute")
        self.recent.append(mono)

    # -- execution ------------------------------------------------------------------------
    def _execute(self, cmd: Command, state: VehicleState, event_now: float) -> None:
        if cmd.name == "ping":
            self._finish(cmd, "completed", "pong")
        elif cmd.name == "status.request":
            self.publish_state()
            self._finish(cmd, "completed", "state published")
        elif cmd.name == "reply":
            self._reply(cmd, state, event_now)
        else:
            self._actuate(cmd, cmd.name, dict(cmd.args), state, event_now)

    def _actuate(self, cmd: Command, name: str, args: dict[str, Any], state: VehicleState, event_now: float,
                 on_done: Callable[[], None] | None = None, on_fail: Callable[[], None] | None = None) -> bool:
        """Send the frame for ``name`` if allowed, supported and safe now; True when it was sent.

        Every action is checked here, whatever asked for it (a command, or an answer to a question).
        """
        if self.config.can.listen_only:
            from agent.io.guarded_bus import LISTEN_ONLY_REASON

            self._finish(cmd, "rejected", LISTEN_ONLY_REASON)
            return False
        if not self.allowed(name):
            self._finish(cmd, "rejected", f"{name} is not on this vehicle's allowlist")
            return False
        why = interlock(state, event_now, max_age_s=self.cfg.interlock_max_age_s)
        if why is not None:
            self._finish(cmd, "rejected", why)
            return False
        if name not in self.frames:
            self._finish(cmd, "rejected", f"{name} is not supported by this vehicle (no [commands.frames] entry)")
            return False
        message, cf = self.frames[name]
        try:
            if name == "charge.schedule":
                args["start_minutes"] = self._start_minutes(args["at"])
            data = self._encode(message, {s: _fill(v, args) for s, v in cf.signals.items()})
        except CommandError as exc:
            self._finish(cmd, "rejected", exc.reason)
            return False
        except (ValueError, KeyError) as exc:
            self._finish(cmd, "rejected", f"cannot encode {message.name}: {exc}")
            return False
        frame = can.Message(arbitration_id=message.frame_id, data=data, is_extended_id=message.is_extended_frame)
        try:
            self.send(frame)
        except (can.CanError, OSError) as exc:
            self._finish(cmd, "failed", f"CAN send failed: {exc}")
            return False
        self._finish(cmd, "accepted", f"sent {message.name}")
        expect = {p: _fill(v, args) for p, v in cf.confirm.items()}
        self.pending.append(Pending(cmd, name, expect, time.monotonic() + self.cfg.confirm_timeout_s,
                                    on_done, on_fail))
        return True

    def _encode(self, message: Message, values: dict[str, Any]) -> bytes:
        full: dict[str, Any] = {}
        for sig in message.signals:
            if sig.name in values:
                full[sig.name] = values[sig.name]
            elif "counter" in sig.name.lower():
                n = self._counters.get(message.frame_id, 0)
                self._counters[message.frame_id] = (n + 1) % (1 << sig.length)
                full[sig.name] = n
            else:
                full[sig.name] = sig.minimum if sig.minimum and sig.minimum > 0 else 0
        data = bytearray(message.encode(full, strict=True))
        for sig in message.signals:  # an 8-bit checksum in the last byte: CRC-8 SAE J1850
            if ("checksum" in sig.name.lower() or "crc" in sig.name.lower()) and sig.length == 8 and sig.start == 56:
                data[7] = crc8_j1850(bytes(data[:7]))
        return bytes(data)

    def _start_minutes(self, at: str) -> int:
        if at == "off-peak":
            window = self.config.vehicle.offpeak_window
            if window is None:
                raise CommandError("no off-peak window configured ([vehicle] offpeak_window)")
            at = window.split("-")[0]
        hh, mm = at.split(":")
        return int(hh) * 60 + int(mm)

    def _reply(self, cmd: Command, state: VehicleState, event_now: float) -> None:
        """An answer to a question. It counts as given only once what it asks for was accepted:
        a refused one (moving, not allowed, ...) can be given again."""
        message_id, answer = cmd.args["message_id"], cmd.args["answer"].lower()
        asked = self.memory.question(message_id)
        if asked is None:
            self._finish(cmd, "rejected", f"no question with message_id {message_id}")
            return
        kind, answers, _data, answered = asked
        if answered is not None:
            self._finish(cmd, "rejected", f"already answered: {answered}")
            return
        if answer not in answers:
            self._finish(cmd, "rejected", f"answer must be one of {', '.join(answers)}")
            return
        if (kind, answer) in (("charge.started", "later"), ("charge.offpeak_question", "yes")):
            self._wait_for_offpeak(cmd, message_id, answer, state, event_now)
            return
        self.memory.answered(message_id, answer)
        self._finish(cmd, "completed", f"answer {answer!r} noted")

    def _wait_for_offpeak(self, cmd: Command, message_id: str, answer: str, state: VehicleState,
                          event_now: float) -> None:
        window = self.config.vehicle.offpeak_window
        if window is None:
            self._finish(cmd, "rejected", "no off-peak window configured: cannot wait")
            return
        start = window.split("-")[0]

        def confirmed() -> None:
            self.say("charge.scheduled", {"start": start, "reason": "off-peak"})

        def unconfirmed() -> None:  # the car never showed the timer: the owner may answer again
            self.memory.reopen(message_id, answer)

        if self._actuate(cmd, "charge.schedule", {"at": "off-peak"}, state, event_now,
                         on_done=confirmed, on_fail=unconfirmed):
            self.memory.answered(message_id, answer)

    def poll(self, state: VehicleState, event_now: float) -> None:
        """Complete or fail pending commands from what the bus now says. Never raises."""
        if not self.pending:
            return
        mono = time.monotonic()
        still: list[Pending] = []
        for p in self.pending:
            try:
                if not self._settle(p, state, event_now, mono):
                    still.append(p)
            except Exception as exc:  # noqa: BLE001 - one pending command, not the agent
                self.counts["internal error"] += 1
                log.error("command %s %s: internal error while confirming: %s: %s", p.command.name,
                          p.command.id, type(exc).__name__, exc)
        self.pending = still

    def _settle(self, p: Pending, state: VehicleState, event_now: float, mono: float) -> bool:
        """Finish a pending command if the bus confirmed it or its time is up; False: still waiting."""
        if all(_matches(state.fresh(path, event_now), want) for path, want in p.expect.items()):
            self._finish(p.command, "completed", "confirmed by the vehicle")
            if p.on_done is not None:
                p.on_done()
            return True
        if mono >= p.deadline:
            self._finish(p.command, "failed",
                         f"no confirmation from the vehicle within {self.cfg.confirm_timeout_s:g} s")
            if p.on_fail is not None:
                p.on_fail()
            return True
        return False

    def _finish(self, cmd: Command, status: str, reason: str) -> None:
        log.info("command %s %s %s: %s", cmd.name, cmd.id, status, reason)
        self.counts[status] += 1
        self.result(cmd.name, cmd.id, status, reason)


def _category(reason: str) -> str:
    """A drop reason without its values ("payload too large (5000 bytes, …)" -> "payload too large")."""
    return reason.split(":", 1)[0].split(" (", 1)[0][:40]


def _fill(value: Any, args: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return args[value[1:-1]]
    return value


def _matches(have: Any, want: Any) -> bool:
    if have is None:
        return False
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want or have == want
    if isinstance(want, int | float) and isinstance(have, int | float):
        return abs(have - want) <= 0.51  # DBC resolution of temperatures and limits
    return str(have) == str(want)


def crc8_j1850(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ 0xFF
