"""The right moment: quiet hours with a digest, per-kind rate limits, a daily cap (no IO).

Runs on event time, between the persona and the outbox, so a replayed day gives the same
messages. Held messages live in a HeldStore (in memory for replay, SQLite for the daemon),
so a restart during quiet hours loses none of them.
"""

from __future__ import annotations

from typing import Protocol

from agent.core.i18n import local
from agent.core.model import PersonaMessage
from agent.core.persona import Persona
from agent.core.rules import NEVER, Event
from agent.core.settings import AgentConfig
from agent.core.windows import in_window, parse_window

SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}
VISIBILITY_ORDER = {"private": 0, "family": 1, "public": 2}
# Answers to something the owner just did: never held, never capped.
DIRECT_KINDS = frozenset({"charge.started", "charge.scheduled", "charge.offpeak_question"})


class HeldStore(Protocol):
    def hold(self, msg: PersonaMessage) -> None: ...
    def held(self) -> list[PersonaMessage]: ...
    def release(self, ids: list[str]) -> None: ...


class MemoryHeld:
    def __init__(self) -> None:
        self.items: dict[str, PersonaMessage] = {}

    def hold(self, msg: PersonaMessage) -> None:
        self.items[msg.id] = msg

    def held(self) -> list[PersonaMessage]:
        return list(self.items.values())

    def release(self, ids: list[str]) -> None:
        for i in ids:
            self.items.pop(i, None)


class Gate:
    def __init__(self, config: AgentConfig, persona: Persona, store: HeldStore | None = None) -> None:
        m = config.messages
        self.persona = persona
        self.zone = config.vehicle.timezone
        self.quiet = parse_window(m.quiet_hours) if m.quiet_hours else None
        self.urgent = frozenset(m.quiet_hours_urgent)
        self.min_interval = dict(m.rate_limit_s)
        self.daily_cap = m.daily_cap
        self.store = store or MemoryHeld()
        self.last_sent: dict[str, float] = {}
        self.day: str = ""
        self.sent_today = 0
        self.suppressed = 0
        self.deadline = NEVER if self.quiet is None else -NEVER

    def _unsolicited(self, msg: PersonaMessage) -> bool:
        return msg.severity != "critical" and msg.kind not in DIRECT_KINDS and msg.kind not in self.urgent

    def offer(self, msg: PersonaMessage, now: float) -> list[PersonaMessage]:
        """What goes out now for this message: itself, nothing (held or suppressed)."""
        out = self.tick(now)
        if not self._unsolicited(msg):
            return [*out, msg]
        self._new_day(now)
        interval = self.min_interval.get(msg.kind)
        last = self.last_sent.get(msg.kind)
        if (interval is not None and last is not None and now - last < interval) or \
                (self.daily_cap is not None and self.sent_today >= self.daily_cap):
            self.suppressed += 1
            return out
        self.last_sent[msg.kind] = now
        self.sent_today += 1
        if self.quiet is not None and in_window(local(now, self.zone).time(), self.quiet):
            self.store.hold(msg)
            return out
        return [*out, msg]

    def _new_day(self, now: float) -> None:
        day = local(now, self.zone).date().isoformat()
        if day != self.day:
            self.day, self.sent_today = day, 0

    def tick(self, now: float) -> list[PersonaMessage]:
        """At the end of quiet hours: the held messages as one digest."""
        if self.quiet is None or now < self.deadline:
            return []
        if in_window(local(now, self.zone).time(), self.quiet):
            self.deadline = now + 60.0  # look again in a minute of event time
            return []
        self.deadline = now + 60.0
        held = self.store.held()
        if not held:
            return []
        self.store.release([m.id for m in held])
        return [self._digest(held, now)]

    def _digest(self, held: list[PersonaMessage], now: float) -> PersonaMessage:
        """One message saying what the held ones said, as private as the most private of them."""
        joiner = "" if held[0].locale == "ja" else " "  # Japanese runs sentences together
        data = {"count": len(held), "items": joiner.join(self.persona.unsigned(m.text) for m in held),
                "kinds": [m.kind for m in held], "held_ids": [m.id for m in held],
                "suppressed": self._take_suppressed(),
                "visibility": min((m.visibility for m in held), key=VISIBILITY_ORDER.__getitem__)}
        severity = max((m.severity for m in held), key=SEVERITY_ORDER.__getitem__)
        return self.persona.render(Event("digest", now, severity, data))

    def _take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n
