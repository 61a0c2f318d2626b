"""`carfriend run --simulate`: the agent and the vehicle simulator in one process on a virtual bus (IO)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import can

from agent.cli.daemon import Agent, install_signal_handlers
from agent.core.settings import AgentConfig
from agent.io.sources import open_bus

log = logging.getLogger(__name__)


def simulated_config(config: AgentConfig) -> AgentConfig:
    """The config with [can] pointed at a private virtual bus of this process."""
    can_cfg = config.can.model_copy(update={"interface": "virtual", "channel": f"carfriend-sim-{os.getpid()}",
                                            "options": {}, "bitrate": None})
    return config.model_copy(update={"can": can_cfg})


def start_simulator(config: AgentConfig, scenario: str, speed: float, seed: int = 0) -> tuple[Any, can.BusABC]:
    import simulators

    bus = simulators.open_bus("virtual", config.can.channel)
    dbc = config.can.dbc[0] if config.can.dbc else None
    sim = simulators.Simulator(bus, scenario, speed=speed, seed=seed, dbc=dbc, fd=config.can.fd).start()
    return sim, bus


def run_simulated(config: AgentConfig, args: argparse.Namespace) -> int:
    import simulators

    simulators.load_scenario(args.simulate)  # an unknown scenario is a start-up error
    config = simulated_config(config)
    agent = Agent(config, config_path=None, bus_factory=lambda c, f: open_bus(c.can, f))
    install_signal_handlers(agent)
    sim, sim_bus = start_simulator(config, args.simulate, args.speed)
    log.info("simulating scenario %s at %gx on virtual bus %s", args.simulate, args.speed, config.can.channel)
    try:
        return agent.run()
    finally:
        sim.stop()
        sim_bus.shutdown()
