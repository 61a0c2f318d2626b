"""Simulated time: the scenario's timeline driving the model, and which frame goes out when (no IO).

Each step advances the car by STEP_S simulated seconds and returns the frames of that step,
stamped with simulated epoch time, in time order. Every status message goes out at its DBC
cycle time, thinned at high speed factors: period = max(cycle, min(speed / 100, 2 s)), so a
live bus carries at most 100 frames per real second per message up to 200x, and at any
speed the agent still sees each value at least every 2 simulated seconds (the mux pages every
4 s). A parked, locked, unplugged car's bus sleeps and wakes every WAKE_PERIOD_S for one burst
of every status frame; it stays up AFTER_RUN_S after the car goes to sleep, and a command
frame wakes it for WAKE_HOLD_S.
"""

from __future__ import annotations

import random
from pathlib import Path

import can
from cantools.database.can import Database

from simulators.diag_ecu import DiagEcus
from simulators.frames import STATUS_SIGNALS, CommandDecoder, FrameEncoder, load_car_dbc
from simulators.model import EVModel
from simulators.scenario import Garbage, Phase, Scenario, load_scenario

STEP_S = 1.0
FRAMES_PER_REAL_S = 100.0
MAX_THINNED_PERIOD_S = 2.0
WAKE_PERIOD_S = 300.0
WAKE_HOLD_S = 60.0
AFTER_RUN_S = 30.0  # the bus stays up this long after the car stops needing it
MAX_CHARGE_PHASE_S = 48 * 3600.0
DRIVE_STOP_S = 15.0  # a drive phase brakes to a stop over its last seconds
NM_ID = 0x510  # the network-management heartbeat a diagnostics-only gateway still passes
NM_CARRIER = "LV_System"  # the NM frame goes out on this message's schedule (1 s)
ECU_WAKE_S = 3.0  # after a wake-up burst the ECUs answer this long
_UNKNOWN_IDS = ((0x7DF, False), (0x7E8, False), (0x123, False), (0x456, False),
                (0x18DB33F1, True), (0x1CFFAA00, True))


class Simulation:
    """One run of a scenario: a timeline, the car model, its encoder and the emission schedule."""

    def __init__(self, scenario: Scenario | str | Path, *, seed: int = 0, speed: float = 1.0,
                 duration_s: float | None = None, db: Database | None = None,
                 dbc: Path | None = None, fd: bool = False) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.start_ts = self.scenario.start_ts
        self.duration_s = duration_s
        self.db = db or load_car_dbc(dbc)
        self.model = EVModel.from_setup(self.scenario.car, self.scenario.tz, self.start_ts, seed)
        self.encoder = FrameEncoder(self.db)
        self.commands = CommandDecoder(self.db)
        self._garbage_rng = random.Random(seed * 7919 + 17)
        self._periods = {n: _period(self.encoder.cycle_s(n), speed) for n in STATUS_SIGNALS}
        self._next_due: dict[str, tuple[float, int]] = {}
        self._next_wake = self.start_ts
        self._wake_until = self.start_ts
        self._next_burst: float | None = None
        self._phase_index = -1
        self._phase_start = self.start_ts
        self._events = sorted(self.scenario.events, key=lambda e: e.at_s)
        self.phases_done = False
        self.frames_sent = 0
        self._bus_up = True
        self.ecus = DiagEcus(self.model, seed)
        self._burst_at = -1.0
        self.fd = fd  # every frame as CAN FD with bit rate switching (longer payloads always are)

    @property
    def now(self) -> float:
        return self.model.now

    @property
    def phase(self) -> Phase | None:
        if 0 <= self._phase_index < len(self.scenario.phases):
            return self.scenario.phases[self._phase_index]
        return None

    @property
    def finished(self) -> bool:
        if self.duration_s is not None:
            return self.now >= self.start_ts + self.duration_s
        return self.phases_done

    def command(self, frame_id: int, data: bytes) -> str | None:
        """A frame received from the bus: apply it if it is a command (and wake the bus)."""
        name = self.commands.apply(self.model, frame_id, data)
        if name is not None:
            self._wake_until = self.now + WAKE_HOLD_S
        return name

    def ecus_awake(self, now: float) -> bool:
        """Whether the diagnostic ECUs answer now (the bus is up, or just woke for a burst)."""
        return self.model.awake or now < self._wake_until or now < self._burst_at + ECU_WAKE_S

    def diagnostic(self, frame_id: int, data: bytes, now: float) -> bool:
        """A frame from the bus: True when it was for the diagnostic ECUs."""
        if frame_id not in self.ecus.ids:
            return False
        self.ecus.on_frame(frame_id, data, now, self.ecus_awake(now))
        return True

    def responses(self, now: float) -> list[can.Message]:
        """The ECUs' answer frames due by simulated time `now`."""
        return self.ecus.due(now)

    def step(self) -> list[can.Message]:
        """Advance STEP_S simulated seconds; the frames sent meanwhile, in time order."""
        t0 = self.now
        self._timeline(t0)
        t1 = t0 + STEP_S
        if self.duration_s is not None:
            t1 = min(t1, self.start_ts + self.duration_s)
        due = self._due(t0, t1)
        if self.scenario.gateway == "diagnostics-only":
            out = [self._nm(t) for t, _, name in sorted(due) if name == NM_CARRIER]
        else:
            out = [self._frame(t, name) for t, _, name in sorted(due)]
        if self.scenario.garbage is not None and self._bus_up:
            out = sorted(out + self._garbage(self.scenario.garbage, t0), key=_ts)
        self.model.step(STEP_S)
        self.frames_sent += len(out)
        return out

    # --- timeline ---------------------------------------------------------------------------

    def _timeline(self, now: float) -> None:
        while self._events and self.start_ts + self._events[0].at_s <= now:
            event = self._events.pop(0)
            self.model.set_dtc(event.dtc, event.status)
        while not self.phases_done and (self._phase_index < 0 or self._phase_over(now)):
            self._phase_index += 1
            self._phase_start = now
            if self._phase_index >= len(self.scenario.phases):
                self.phases_done = True
                self._enter(Phase(kind="park", duration_s=1.0))  # hold the car parked
            else:
                self._enter(self.scenario.phases[self._phase_index])
        phase = self.phase
        if phase is not None and phase.kind == "drive" and phase.duration_s is not None:
            stopping = now >= self._phase_start + phase.duration_s - DRIVE_STOP_S
            self.model.target_speed_kmh = 0.0 if stopping else phase.speed_kmh

    def _phase_over(self, now: float) -> bool:
        phase = self.scenario.phases[self._phase_index]
        m = self.model
        elapsed = now - self._phase_start
        if phase.kind == "charge":
            limit = phase.duration_s or MAX_CHARGE_PHASE_S
            done_at = m.charger.completed_at
            return elapsed >= limit or (done_at is not None and now >= done_at + phase.unplug_after_s)
        if phase.until_soc_pct is not None and m.soc_pct < phase.until_soc_pct:
            return True
        return phase.duration_s is not None and elapsed >= phase.duration_s

    def _enter(self, phase: Phase) -> None:
        m = self.model
        if phase.kind != "charge" and m.charger.plugged:
            m.unplug()
        m.aux_load_a = phase.aux_load_a
        m.soc_noise_pct = self.scenario.car.soc_noise_pct if phase.soc_noise_pct is None else phase.soc_noise_pct
        if phase.climate is not None or phase.climate_target_c is not None:
            m.set_climate(m.climate_on if phase.climate is None else phase.climate, phase.climate_target_c)
        m.ignition, m.ready, m.gear = {
            "park": ("OFF", False, "P"), "charge": ("OFF", False, "P"),
            "accessory": ("ACC", False, "P"), "ready": ("ON", True, "P"), "drive": ("ON", True, "D"),
        }[phase.kind]
        m.target_speed_kmh = phase.speed_kmh if phase.kind == "drive" else 0.0
        if phase.kind == "charge":
            kind = phase.charger.upper()
            car_max = self.scenario.car.ac_max_kw if kind == "AC" else self.scenario.car.dc_max_kw
            m.plug_in(kind, min(car_max, phase.power_kw or car_max))

    # --- emission ---------------------------------------------------------------------------

    def _due(self, t0: float, t1: float) -> list[tuple[float, int, str]]:
        due: list[tuple[float, int, str]] = []
        if self.model.awake:
            self._wake_until = max(self._wake_until, t0 + AFTER_RUN_S)
        self._bus_up = t0 < self._wake_until
        if self._bus_up:
            if not self._next_due:  # waking up: every message starts its cycle now
                self._next_due = {n: (t0 + i * 0.001, 0) for i, n in enumerate(STATUS_SIGNALS)}
            for i, name in enumerate(STATUS_SIGNALS):
                base, k = self._next_due[name]
                # multiples of the period from the wake-up, so the cycle does not drift
                while (t := base + k * self._periods[name]) < t1:
                    due.append((t, i, name))
                    k += 1
                self._next_due[name] = (base, k)
            self._next_wake = t1 + WAKE_PERIOD_S
            return due
        self._next_due = {}
        if t0 <= self._next_wake < t1:
            # a wake-up burst: every status frame once, both odometer pages
            names = [*STATUS_SIGNALS, "Odometer_Service"]
            due = [(self._next_wake + i * 0.002, i, n) for i, n in enumerate(names)]
            self._burst_at = self._next_wake
            self._next_wake += WAKE_PERIOD_S
        return due

    def _frame(self, t: float, name: str) -> can.Message:
        frame_id, extended, data = self.encoder.encode(name, self.model)
        fd = self.fd or len(data) > 8
        return can.Message(timestamp=round(t, 6), arbitration_id=frame_id, is_extended_id=extended,
                           data=data, channel=None, is_fd=fd, bitrate_switch=fd)

    def _nm(self, t: float) -> can.Message:
        return can.Message(timestamp=round(t, 6), arbitration_id=NM_ID, is_extended_id=False,
                           data=bytes([0x10, 0x01, 0, 0, 0, 0, 0, 0]), channel=None)

    def _garbage(self, g: Garbage, t0: float) -> list[can.Message]:
        rng = self._garbage_rng
        out: list[can.Message] = []

        def times(rate: float) -> list[float]:
            n = int(rate * STEP_S) + (1 if rng.random() < (rate * STEP_S) % 1 else 0)
            return sorted(round(t0 + rng.random() * STEP_S, 6) for _ in range(n))

        for t in times(g.unknown_ids_per_s):
            out.append(_unknown(rng, t))
        for t in times(g.wrong_dlc_per_s):
            name = rng.choice(list(STATUS_SIGNALS))
            msg = self.encoder.messages[name]
            length = rng.randrange(0, msg.length)
            out.append(can.Message(timestamp=t, arbitration_id=msg.frame_id, is_extended_id=msg.is_extended_frame,
                                   data=bytes(rng.randrange(256) for _ in range(length))))
        for t in times(g.error_frames_per_s):
            out.append(can.Message(timestamp=t, is_error_frame=True, arbitration_id=0, dlc=0))
        for t in times(g.remote_frames_per_s):
            msg = self.encoder.messages[rng.choice(list(STATUS_SIGNALS))]
            out.append(can.Message(timestamp=t, arbitration_id=msg.frame_id, is_extended_id=msg.is_extended_frame,
                                   is_remote_frame=True, dlc=msg.length))
        out += self._burst(g, t0)
        return out

    def _burst(self, g: Garbage, t0: float) -> list[can.Message]:
        if g.burst_every_s is None:
            return []
        if self._next_burst is None:
            self._next_burst = t0 + g.burst_every_s
        if not t0 <= self._next_burst < t0 + STEP_S:
            return []
        start, self._next_burst = self._next_burst, self._next_burst + g.burst_every_s
        # back to back at 500 kbit/s: one 8-byte frame every ~0.25 ms
        return [_unknown(self._garbage_rng, round(start + i * 0.00025, 6)) for i in range(g.burst_frames)]


def _unknown(rng: random.Random, t: float) -> can.Message:
    frame_id, extended = rng.choice(_UNKNOWN_IDS)
    return can.Message(timestamp=t, arbitration_id=frame_id, is_extended_id=extended,
                       data=bytes(rng.randrange(256) for _ in range(8)))


def _period(cycle_s: float, speed: float) -> float:
    return max(cycle_s, min(speed / FRAMES_PER_REAL_S, MAX_THINNED_PERIOD_S))


def _ts(msg: can.Message) -> float:
    return float(msg.timestamp)
