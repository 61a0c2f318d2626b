"""The pure core wired together: frame -> decode -> state -> rules -> persona -> sink (no IO)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.model import PersonaMessage
from agent.persona import Persona
from agent.rules import Event, RuleEngine, build_rules
from agent.vehicle import Vehicle

MessageSink = Callable[[PersonaMessage], None]


class Pipeline:
    """One vehicle's pipeline. Not thread-safe: one worker owns it and feeds it frames in order."""

    def __init__(self, vehicle: Vehicle, sink: MessageSink, persona: Persona | None = None) -> None:
        self.vehicle = vehicle
        self.decoder = vehicle.new_decoder()
        self.state = self.decoder.state
        rules, self.disabled_rules = build_rules(vehicle.config, vehicle.mapped_paths)
        self.engine = RuleEngine(rules)
        self.persona = persona or Persona.from_config(vehicle.config)
        self.sink = sink
        self.messages = 0
        self.error_frames = 0

    def process(self, ts: float, can_id: int, data: bytes) -> None:
        """One received frame. Cheap when nothing changed: a lookup and a compare."""
        changed = self.decoder.decode(ts, can_id, data)
        if changed or ts >= self.engine.deadline:
            self._emit(self.engine.on_change(changed, self.state, ts))

    def error_frame(self) -> None:
        self.decoder.frames += 1
        self.decoder.drops.error_frame += 1

    def tick(self, now: float) -> None:
        """Let time pass without a frame (debounce deadlines, staleness)."""
        if now >= self.engine.deadline:
            self._emit(self.engine.on_change((), self.state, now))

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            self.messages += 1
            self.sink(self.persona.render(event))

    def adopt(self, old: Pipeline) -> None:
        """Carry the state and rule latches of a pipeline this one replaces (config reload)."""
        mapped = self.vehicle.mapped_paths
        for path, value in old.state.values.items():
            if path in mapped:
                self.state.values[path] = value
                self.state.stamps[path] = old.state.stamps[path]
        self.state.dtc_seen.update(old.state.dtc_seen)
        self.state.now = old.state.now
        if old.vehicle.config.rules == self.vehicle.config.rules:
            self.engine = old.engine  # same rules: keep their latches, nothing fires twice
        self.messages = old.messages

    def counters(self) -> dict[str, Any]:
        d = self.decoder
        return {"frames": d.frames, "decoded": d.decoded, "unchanged": d.unchanged,
                "dropped": d.drops.as_dict(), "messages": self.messages}
