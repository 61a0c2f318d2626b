"""The pure core wired together: frame -> decode -> state -> rules -> persona -> sink (no IO)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agent.core import vss
from agent.core.model import PersonaMessage, iso_utc, message_id
from agent.core.persona import Persona
from agent.core.rules import NEVER, Event, RuleEngine, build_rules
from agent.core.schedule import build_clock
from agent.core.vehicle import Vehicle
from agent.core.voice import Gate, HeldStore

MessageSink = Callable[[PersonaMessage], None]
SideSink = Callable[[str, str, dict[str, Any]], None]  # (topic leaf, id, document)


class Pipeline:
    """One vehicle's pipeline. Not thread-safe: one worker owns it and feeds it frames in order."""

    def __init__(self, vehicle: Vehicle, sink: MessageSink, persona: Persona | None = None, *,
                 side_sink: SideSink | None = None, held: HeldStore | None = None,
                 trace_drops: bool = False) -> None:
        self.vehicle = vehicle
        self.trace_drops = trace_drops  # count unmapped frames per id too (replay --stats)
        self.config = vehicle.config
        self.decoder = vehicle.new_decoder()
        self.state = self.decoder.state
        rules, self.disabled_rules = build_rules(vehicle.config, vehicle.mapped_paths)
        self.engine = RuleEngine(rules)
        self.clock = build_clock(vehicle.config)
        self.persona = persona or Persona.from_config(vehicle.config)
        self.gate = Gate(vehicle.config, self.persona, held)
        self.sink = sink
        self.side_sink = side_sink
        self.messages = 0
        self.deadline = -NEVER  # the next event time at which a rule, job or the gate wants to run

    def process(self, ts: float, can_id: int, data: bytes) -> None:
        """One received frame. Cheap when nothing changed: a lookup and a compare."""
        changed = self.decoder.decode(ts, can_id, data)
        if changed or ts >= self.deadline:
            self._evaluate(changed, ts)

    def process_frames(self, frames: Iterable[tuple[float, int | None, bytes]]) -> float | None:
        """Many frames (None as the id marks an error frame); return the last event time.

        The same as process() per frame, with the unmapped-id test inline: on a busy bus most
        frames are of ids the mapping does not use, and each one here costs a set lookup, not
        two calls.
        """
        mapped = self.decoder.plans
        decode = self.decoder.decode
        by_id: dict[int, int] | None = {} if self.trace_drops else None  # per id, for --stats
        unmapped = errors = 0
        ts = None
        for ts, can_id, data in frames:
            if can_id in mapped:
                changed = decode(ts, can_id, data)
                if changed or ts >= self.deadline:
                    self._evaluate(changed, ts)
            elif can_id is None:
                errors += 1
            else:
                unmapped += 1
                if by_id is not None:
                    by_id[can_id] = by_id.get(can_id, 0) + 1
                if ts >= self.deadline:  # time-driven rules run on any frame's clock
                    self._evaluate((), ts)
        d = self.decoder
        d.frames += unmapped + errors
        if by_id:
            d.drops.add_unknown_ids(by_id)
        else:
            d.drops.unknown_id += unmapped
        d.drops.error_frame += errors
        return ts

    def _evaluate(self, changed: tuple[str, ...], now: float) -> None:
        events = self.engine.on_change(changed, self.state, now)
        if now >= self.clock.deadline:
            events += self.clock.tick(self.state, now)
        self._emit(events, now)
        self.deadline = min(self.engine.deadline, self.clock.deadline, self.gate.deadline)

    def values_changed(self, changed: tuple[str, ...], ts: float) -> None:
        """Values another decoder wrote into the state at ts (diagnostic responses)."""
        if changed or ts >= self.deadline:
            self._evaluate(changed, ts)

    def malformed_lines(self, n: int) -> None:
        """Lines of a log that were no frame (counted by the reader): bad frames, never decoded."""
        self.decoder.frames += n
        self.decoder.drops.malformed_line += n

    def error_frame(self) -> None:
        self.decoder.frames += 1
        self.decoder.drops.error_frame += 1

    def tick(self, now: float) -> None:
        """Let time pass without a frame (debounce deadlines, schedules, quiet hours)."""
        if now >= self.deadline:
            self._evaluate((), now)

    def say(self, event: Event) -> None:
        """A message that is not a rule's (e.g. the answer to a command), through the same gate."""
        self._emit([event], event.ts)

    def _emit(self, events: list[Event], now: float) -> None:
        out = self.gate.tick(now)
        for event in events:
            out += self.gate.offer(self.persona.render(event), now)
        for msg in out:
            self.messages += 1
            self.sink(msg)
            if msg.kind == "service.due" and self.config.dealer.enabled and self.side_sink is not None:
                self.side_sink("dealer/appointment", *self._appointment(msg))

    def _appointment(self, msg: PersonaMessage) -> tuple[str, dict[str, Any]]:
        """What a dealer needs for service.due, and no more (no location, no SOC, no history)."""
        now = self.state.now
        odo = self.state.fresh(vss.ODOMETER, now)
        dtcs = self.state.fresh(vss.DTC_LIST, now) or []
        doc_id = message_id(self.config.vehicle.id, "dealer/appointment", now)
        return doc_id, {
            "id": doc_id, "vehicle_id": self.config.vehicle.id, "ts": iso_utc(now), "message_id": msg.id,
            "dealer_id": self.config.dealer.dealer_id,
            "service_type": "fault and periodic service" if dtcs else "periodic service",
            "odometer_km": round(odo) if isinstance(odo, int | float) else None,
            "days_to_service": msg.data.get("days"), "distance_to_service_km": msg.data.get("distance_km"),
            "active_dtcs": list(dtcs), "preferred_slots": list(self.config.dealer.preferred_slots)}

    def adopt(self, old: Pipeline) -> None:
        """Carry the state and rule latches of a pipeline this one replaces (config reload)."""
        mapped = self.vehicle.mapped_paths
        for path, value in old.state.values.items():
            if path in mapped:
                self.state.values[path] = value
                self.state.stamps[path] = old.state.stamps[path]
        self.state.dtc_seen.update(old.state.dtc_seen)
        self.state.unusable.update(old.state.unusable)  # the interlock still distrusts them
        self.state.now = old.state.now
        if old.vehicle.config.rules == self.vehicle.config.rules:
            self.engine = old.engine  # same rules: keep their latches, nothing fires twice
        self.messages = old.messages
        d, o = self.decoder, old.decoder  # the counters run on across a reload
        d.frames, d.decoded, d.unchanged, d.drops = o.frames, o.decoded, o.unchanged, o.drops

    def counters(self) -> dict[str, Any]:
        d = self.decoder
        return {"frames": d.frames, "decoded": d.decoded, "unchanged": d.unchanged,
                "dropped": d.drops.as_dict(), "messages": self.messages}
