"""`carfriend fleet-sim`: N simulated cars (the real agent + the vehicle simulator, in this process)
publishing to a broker, to load a relay with real agent traffic (does IO).

Each car is the agent of ``--config`` with its own vehicle id (``<prefix>-0001``...), private
virtual CAN bus, state directory and command key (``<keys-dir>/<id>.key`` when present), driven by
a scenario from ``--scenario`` (repeatable; the cars take turns). Every car is a few threads:
on 2 cores a few dozen cars at a high ``--speed`` is the practical limit; the relay benchmark
(benchmarks/relay_bench.py) covers 1,000 vehicles with a synthetic publisher.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_fleet_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet-sim", help="run N simulated cars (agent + simulator) against a broker")
    p.add_argument("--config", "-c", type=Path, required=True, help="the agent config every car uses")
    p.add_argument("--vehicles", type=int, default=10, metavar="N")
    p.add_argument("--speed", type=float, default=60.0, help="simulation speed factor")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="simulator scenario (repeatable; default: plugged-in-at-home, daily-commute)")
    p.add_argument("--host", help="broker host (default: the config's [mqtt] host)")
    p.add_argument("--port", type=int, help="broker port")
    p.add_argument("--prefix", default="sim", help="vehicle ids are <prefix>-0001, ...")
    p.add_argument("--keys-dir", type=Path, help="command keys, <id>.key (see `carfriend relay add-vehicle --generate-key`)")
    p.add_argument("--state-dir", type=Path, help="where the cars keep their outboxes (default: a temp dir)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: on Ctrl-C)")
    p.set_defaults(func=cmd_fleet_sim)


def car_config(base: Any, index: int, args: argparse.Namespace, state_root: Path) -> Any:
    vid = f"{args.prefix}-{index:04d}"
    mqtt = base.mqtt.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port))
                                        if v is not None})
    key = args.keys_dir / f"{vid}.key" if args.keys_dir else None
    commands = base.commands.model_copy(update={"key_file": key if key and key.exists() else None})
    return base.model_copy(update={
        "vehicle": base.vehicle.model_copy(update={"id": vid}),
        "can": base.can.model_copy(update={"interface": "virtual", "options": {}, "bitrate": None,
                                           "channel": f"fleet-sim-{os.getpid()}-{index}"}),
        "storage": base.storage.model_copy(update={"state_dir": state_root / vid}),
        "mqtt": mqtt, "commands": commands})


def cmd_fleet_sim(args: argparse.Namespace) -> int:
    import simulators
    from agent.cli.daemon import Agent
    from agent.io.sources import open_bus
    from agent.profile.config import load_config

    base = load_config(args.config)
    scenarios = args.scenario or ["plugged-in-at-home", "daily-commute"]
    for name in scenarios:
        simulators.load_scenario(name)  # an unknown scenario is a start-up error
    if not args.debug:
        logging.getLogger("agent").setLevel(logging.WARNING)  # N cars' INFO lines drown the rest
    state_root = args.state_dir or Path(tempfile.mkdtemp(prefix="carfriend-fleet-sim-"))
    agents, sims, threads = [], [], []
    for i in range(1, args.vehicles + 1):
        cfg = car_config(base, i, args, state_root)
        agent = Agent(cfg, bus_factory=lambda c, f: open_bus(c.can, f))
        sim_bus = simulators.open_bus("virtual", cfg.can.channel)
        dbc = cfg.can.dbc[0] if cfg.can.dbc else None
        sims.append((simulators.Simulator(sim_bus, scenarios[i % len(scenarios)], speed=args.speed,
                                          seed=i, dbc=dbc), sim_bus))
        agents.append(agent)
        threads.append(threading.Thread(target=agent.run, name=cfg.vehicle.id, daemon=True))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for t in threads:
        t.start()
    for sim, _bus in sims:
        sim.start()
    log.info("fleet-sim: %d cars at %gx (%s), state in %s", len(agents), args.speed,
             ", ".join(scenarios), state_root)
    deadline = time.monotonic() + args.duration if args.duration else None
    while not stop.wait(0.5):
        if deadline and time.monotonic() >= deadline:
            break
    for sim, sim_bus in sims:
        sim.stop()
        sim_bus.shutdown()
    for agent in agents:
        agent.request_stop()
    for t in threads:
        t.join(10)
    return 0
