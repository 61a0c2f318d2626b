"""Where the simulated car's frames go: a log file as fast as possible, or a live python-can bus
paced by a speed factor while listening for command frames (does IO; runs in a thread)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import can
from can.interfaces.virtual import VirtualBus

from agent.core.errors import ConfigError, SourceError
from simulators.engine import Simulation
from simulators.scenario import Scenario

log = logging.getLogger(__name__)

LOG_SUFFIXES = (".log", ".asc", ".blf")


@dataclass
class RunStats:
    frames: int = 0
    commands: int = 0
    send_errors: int = 0
    simulated_s: float = 0.0
    finished: bool = False  # the scenario ran to its end (not stopped early)


def frames(scenario: Scenario | str | Path, *, seed: int = 0, speed: float = 1.0,
           duration_s: float | None = None, dbc: Path | None = None, fd: bool = False) -> Iterator[can.Message]:
    """Every frame of a scenario in time order, as fast as the encoder goes (no bus, no file)."""
    sim = Simulation(scenario, seed=seed, speed=speed, duration_s=duration_s, dbc=dbc, fd=fd)
    while not sim.finished:
        yield from sim.step()


def write_log(path: Path | str, scenario: Scenario | str | Path, *, seed: int = 0, speed: float = 1.0,
              duration_s: float | None = None, dbc: Path | None = None, fd: bool = False) -> RunStats:
    """Write a scenario to a candump .log, .asc or .blf file; the same seed gives the same bytes.

    ``speed`` thins the frames as a live run at that speed would (see simulators.engine); ``fd``
    writes every frame as CAN FD (candump ``##``, ASC/BLF FD records).
    """
    path = Path(path)
    if path.suffix.lower() not in LOG_SUFFIXES:
        raise ConfigError(f"{path}: unsupported log format {path.suffix!r} (use {', '.join(LOG_SUFFIXES)})")
    sim = Simulation(scenario, seed=seed, speed=speed, duration_s=duration_s, dbc=dbc, fd=fd)
    stats = RunStats()
    writer = _writer(path, sim.start_ts)
    try:
        while not sim.finished:
            for msg in sim.step():
                writer.on_message_received(msg)
                stats.frames += 1
    finally:
        writer.stop()
    stats.simulated_s, stats.finished = sim.now - sim.start_ts, True
    return stats


def _writer(path: Path, start_ts: float) -> can.Listener:
    try:
        if path.suffix.lower() == ".log":
            return can.CanutilsLogWriter(path, channel="vcan0")
        if path.suffix.lower() == ".asc":
            return _SimulatedTimeAscWriter(path, start_ts)
        return can.BLFWriter(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot write log: {exc.strerror or exc}") from None


class _SimulatedTimeAscWriter(can.ASCWriter):
    """ASC whose `date` header is the scenario's start, not the wall clock (deterministic)."""

    def __init__(self, path: Path, start_ts: float) -> None:
        super().__init__(path)
        # Rewrite the whole header: python-can's `date` line has unpadded milliseconds of the
        # wall clock (".5" or ".123"), so overwriting just that line in place leaves debris.
        self.file.seek(0)
        self.file.truncate()
        header = self._format_header_datetime(datetime.fromtimestamp(start_ts))
        self.file.write(f"date {header}\nbase hex  timestamps absolute\ninternal events logged\n")


def open_bus(interface: str, channel: str | None, **options: Any) -> can.BusABC:
    """A python-can bus for the simulator; on `virtual` receivers see simulated timestamps."""
    if interface == "virtual":
        options.setdefault("preserve_timestamps", True)
    try:
        return can.Bus(interface=interface, channel=channel, **options)
    except (can.CanError, OSError, ValueError, ImportError) as exc:
        raise SourceError(f"cannot open CAN bus {interface}:{channel}: {exc}") from None


def run_live(bus: can.BusABC, scenario: Scenario | str | Path, *, speed: float = 1.0, seed: int = 0,
             duration_s: float | None = None, stop_event: threading.Event | None = None,
             dbc: Path | None = None, fd: bool = False) -> RunStats:
    """Send a scenario onto a bus in (simulated time / speed), reacting to command frames.

    Returns when the scenario ends or ``stop_event`` is set. Frame timestamps are simulated
    epoch time; a VirtualBus is switched to preserve them, other interfaces stamp their own.
    """
    if speed <= 0:
        raise ConfigError(f"speed must be > 0 (got {speed})")
    if isinstance(bus, VirtualBus):
        bus.preserve_timestamps = True
    stop = stop_event or threading.Event()
    sim = Simulation(scenario, seed=seed, speed=speed, duration_s=duration_s, dbc=dbc)
    sim.fd = fd
    stats = RunStats()
    real0, sim0 = time.monotonic(), sim.now
    clock = _SimClock(real0, sim0, speed)
    last = sim0  # simulated time of the last frame sent: the clock never goes back before it
    while not sim.finished and not stop.is_set():
        stats.commands += _take_commands(bus, sim, clock.now(last))
        for msg in sim.step():
            if not _wait_until(bus, sim, stats, stop, clock, msg.timestamp, last):
                break
            stats.send_errors += _send(bus, msg)
            stats.frames += 1
            last = max(last, float(msg.timestamp))
    stats.simulated_s, stats.finished = sim.now - sim0, sim.finished
    log.info("simulator: %d frames, %d commands, %.0f s simulated", stats.frames, stats.commands,
             stats.simulated_s)
    return stats


@dataclass
class _SimClock:
    real0: float
    sim0: float
    speed: float

    def now(self, floor: float) -> float:
        """Simulated time now, never before `floor` (the last frame sent)."""
        return max(floor, self.sim0 + (time.monotonic() - self.real0) * self.speed)

    def real(self, sim_ts: float) -> float:
        return self.real0 + (sim_ts - self.sim0) / self.speed


DIAG_SLICE_S = 0.001  # while waiting for the next frame, the diagnostic ECUs are served this often


def _wait_until(bus: can.BusABC, sim: Simulation, stats: RunStats, stop: threading.Event, clock: _SimClock,
                sim_ts: float, floor: float) -> bool:
    """Wait for a frame's time, answering diagnostic requests meanwhile; False when stopped."""
    while True:
        delay = clock.real(sim_ts) - time.monotonic()
        if delay <= 0.0005:
            return True
        if stop.wait(min(delay, DIAG_SLICE_S)):
            return False
        now = clock.now(floor)
        stats.commands += _take_commands(bus, sim, now)
        for answer in sim.responses(now):
            answer.timestamp = max(answer.timestamp, now)
            stats.send_errors += _send(bus, answer)
            stats.frames += 1


def _take_commands(bus: can.BusABC, sim: Simulation, now: float) -> int:
    taken = 0
    while True:
        try:
            msg = bus.recv(timeout=0.0)
        except can.CanError:
            return taken
        if msg is None:
            return taken
        if not msg.is_error_frame and not msg.is_remote_frame:
            if sim.diagnostic(msg.arbitration_id, bytes(msg.data), now):
                continue
            name = sim.command(msg.arbitration_id, bytes(msg.data))
            if name is not None:
                log.info("simulator: command %s %s", name, bytes(msg.data).hex())
                taken += 1


def _send(bus: can.BusABC, msg: can.Message) -> int:
    for attempt in range(3):
        try:
            bus.send(msg, timeout=0.05)
            return 0
        except can.CanOperationError:
            time.sleep(0.001 * (attempt + 1))  # a full kernel tx queue drains in a moment
    return 1


class Simulator:
    """A scenario running on a bus in a background thread.

    >>> sim = Simulator(bus, "demo-day", speed=600).start()
    >>> sim.done.wait()          # set when the scenario has ended (or the thread failed)
    >>> sim.stop()
    """

    def __init__(self, bus: can.BusABC, scenario: Scenario | str | Path, *, speed: float = 1.0,
                 seed: int = 0, duration_s: float | None = None, dbc: Path | None = None,
                 fd: bool = False) -> None:
        self.bus = bus
        self.scenario = scenario
        self.kwargs: dict[str, Any] = {"speed": speed, "seed": seed, "duration_s": duration_s, "dbc": dbc,
                                       "fd": fd}
        self.done = threading.Event()
        self.stats: RunStats | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carfriend-simulator", daemon=True)

    def start(self) -> Simulator:
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """True when the scenario ended (or failed: see ``error``) within timeout."""
        return self.done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.stats = run_live(self.bus, self.scenario, stop_event=self._stop, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the owner through .error
            log.error("simulator failed: %s", exc)
            self.error = exc
        finally:
            self.done.set()
