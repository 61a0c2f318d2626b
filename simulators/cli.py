"""`carfriend simulate`: run a scenario onto a bus, an emulated slcan adapter or a log file."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from agent.core.errors import ConfigError

if TYPE_CHECKING:
    import can

log = logging.getLogger(__name__)


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate the reference EV onto a CAN bus or into a log file",
                       description="Simulate the reference EV (dbc/carfriend_ev.dbc). See docs/simulator.md.")
    p.add_argument("--list", action="store_true", help="list the scenarios, one a line, and exit")
    p.add_argument("--scenario", metavar="NAME", help="scenario name (see --list) or a .toml file")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--interface", "-i", metavar="I", help="python-can interface (default: virtual)")
    out.add_argument("--log", type=Path, metavar="FILE", help="write a .log (candump), .asc or .blf file")
    out.add_argument("--slcan-pty", action="store_true",
                     help="emulate an slcan USB adapter on a new pseudo-terminal and print its path")
    p.add_argument("--channel", "-c", metavar="C", help="python-can channel (default: carfriend)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="time factor: 600 = ten simulated minutes a second (a log is thinned alike)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="simulated seconds to run (default: until the scenario ends)")
    p.add_argument("--dbc", type=Path, metavar="FILE", help="DBC to encode with (default: the reference EV's)")
    p.add_argument("--fd", action="store_true",
                   help="send every frame as CAN FD with bit rate switching (socketcan: an FD interface, "
                        "e.g. vcan0 with mtu 72)")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    import simulators

    if args.list:
        for name, description in simulators.list_scenarios().items():
            print(f"{name:24} {description}")
        return 0
    if not args.scenario:
        raise ConfigError("simulate: --scenario NAME is required (or --list)")
    if args.speed <= 0:
        raise ConfigError(f"simulate: --speed must be > 0 (got {args.speed})")
    scenario = simulators.load_scenario(args.scenario)
    options = {"seed": args.seed, "speed": args.speed, "duration_s": args.duration, "dbc": args.dbc, "fd": args.fd}
    if args.log:
        stats = simulators.write_log(args.log, scenario, **options)
        print(f"{args.log}: {stats.frames} frames, {stats.simulated_s:.0f} s simulated", file=sys.stderr)
        return 0
    bus: can.BusABC
    if args.slcan_pty:
        adapter = simulators.SlcanPtyBus()
        print(f"slcan adapter on {adapter.tty_path} (interface=slcan, channel={adapter.tty_path})", flush=True)
        bus = adapter
    else:
        bus_options = {"fd": True} if args.fd else {}
        bus = simulators.open_bus(args.interface or "virtual", args.channel or "carfriend", **bus_options)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        stats = simulators.run_live(bus, scenario, stop_event=stop, **options)
    finally:
        bus.shutdown()
    print(f"{stats.frames} frames, {stats.commands} commands, {stats.simulated_s:.0f} s simulated"
          f"{'' if stats.finished else ' (stopped)'}", file=sys.stderr)
    return 0
