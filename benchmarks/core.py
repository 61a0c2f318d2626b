"""Throughput of the pure core and of log replay against a naive cantools baseline (writes temp files)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.cli.replay import replay
from agent.core.model import PersonaMessage
from agent.core.pipeline import Pipeline
from agent.core.settings import AgentConfig
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle
from benchmarks.traffic import REFERENCE_CONFIG, Traffic


def reference_config(traffic: Traffic) -> AgentConfig:
    """The reference EV config reading a bus that also carries the other ECUs' messages."""
    return load_config(REFERENCE_CONFIG, dbc_override=traffic.dbc_files)


def new_pipeline(config: AgentConfig, sink: Callable[[PersonaMessage], None] | None = None) -> Pipeline:
    return Pipeline(load_vehicle(config), sink or (lambda _m: None))


def best_fps(run: Callable[[Pipeline | None], int], repeat: int, config: AgentConfig | None = None) -> float:
    """Frames per second of the fastest of `repeat` runs (the least disturbed by neighbours).

    With a config, each run gets a fresh pipeline, built (DBC parsed) before the clock starts.
    """
    best = 0.0
    vehicle = load_vehicle(config) if config is not None else None
    for _ in range(repeat):
        pipeline = Pipeline(vehicle, lambda _m: None) if vehicle is not None else None
        t0 = time.perf_counter()
        n = run(pipeline)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def pipeline_fps(traffic: Traffic, config: AgentConfig, repeat: int) -> tuple[float, dict[str, int]]:
    counters: dict[str, int] = {}

    def run(p: Pipeline | None) -> int:
        assert p is not None
        p.process_frames(traffic.frames)  # the agent's batch path (replay uses it too)
        counters.update({k: v for k, v in p.counters().items() if isinstance(v, int)})
        return len(traffic.frames)

    return best_fps(run, repeat, config), counters


def baseline_fps(traffic: Traffic, repeat: int) -> float:
    """What a script does: cantools decodes every frame, every signal, with choices and scaling."""
    decode = traffic.database.decode_message

    def run(_p: Pipeline | None) -> int:
        for _ts, fid, data in traffic.frames:
            decode(fid, data)
        return len(traffic.frames)

    return best_fps(run, repeat)


def write_candump(frames: Iterable[tuple[float, int, bytes]], path: Path) -> None:
    with path.open("w") as fh:
        for ts, fid, data in frames:
            ident = f"{fid:08X}" if fid > 0x7FF else f"{fid:03X}"
            fh.write(f"({ts:.6f}) can0 {ident}#{data.hex().upper()}\n")


def write_gvret(frames: Iterable[tuple[float, int, bytes]], path: Path) -> None:
    with path.open("w") as fh:
        fh.write("Time Stamp,ID,Extended,Dir,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8\n")
        for ts, fid, data in frames:
            cells = ",".join(f"{b:02X}" for b in data)
            fh.write(f"{round(ts * 1e6)},{fid:08X},{'true' if fid > 0x7FF else 'false'},Rx,0,{len(data)},{cells}\n")


def replay_fps(path: Path, n_frames: int, config: AgentConfig, repeat: int) -> float:
    def run(p: Pipeline | None) -> int:
        assert p is not None
        replay(p, path)
        return n_frames

    return best_fps(run, repeat, config)
