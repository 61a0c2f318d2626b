"""`carfriend run`: the daemon on a CAN bus, or with the vehicle simulator in-process (IO)."""

from __future__ import annotations

import argparse
import faulthandler
import logging

from agent.cli.daemon import Agent, install_signal_handlers
from agent.cli.simulate import run_simulated
from agent.core.errors import CarfriendError, ConfigError
from agent.io.sdnotify import SystemdNotifier
from agent.profile.config import load_config

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    faulthandler.enable()  # a watchdog SIGABRT writes the hung thread's stack to the journal
    try:
        config = load_config(args.config, dbc_override=args.dbc)
        if args.simulate:
            return run_simulated(config, args)
        agent = Agent(config, config_path=args.config, dbc_override=args.dbc)
        for warning in agent.vehicle.warnings:  # e.g. a unit the mapping does not convert
            log.warning("%s", warning)
        install_signal_handlers(agent)
        return agent.run()
    except CarfriendError as exc:
        # `systemctl status` shows STATUS= even where the journal lines are not at hand
        first = exc.problems[0] if isinstance(exc, ConfigError) else str(exc)
        SystemdNotifier().status(f"failed to start: {first}")
        raise

