"""The `carfriend` command line: the only place that exits, sets up logging and parses argv."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.core.errors import CarfriendError, ConfigError

log = logging.getLogger("carfriend")

# Subcommand modules: each has add_subcommand(subparsers) that registers its parser and sets
# `func` (a callable taking the parsed args and returning an exit code). Modules that are not
# importable (an optional part missing) are skipped.
SUBCOMMAND_MODULES = (
    "agent.cli.command",
    "agent.cli.outbox",
    "agent.cli.scan",
    "simulators.cli",
    "relay.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carfriend",
        description="carfriend: the in-car agent that reads the CAN bus and lets the car talk.",
    )
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(sub)
    _add_replay(sub)
    _add_check(sub)
    _add_demo(sub)
    _add_schema(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = __import__(name, fromlist=["add_subcommand"])
        except ImportError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part is not installed
            raise
        module.add_subcommand(sub)
    return parser


def _dbc_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dbc", action="append", type=Path, metavar="FILE",
                   help="DBC file (repeatable); replaces the config's [can] dbc list")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent (the daemon)")
    p.add_argument("--config", "-c", type=Path, required=True)
    _dbc_option(p)
    p.add_argument("--simulate", metavar="SCENARIO",
                   help="run the vehicle simulator in-process on a virtual bus instead of [can]")
    p.add_argument("--speed", type=float, default=1.0, help="simulation speed factor (with --simulate)")
    p.set_defaults(func=_lazy("agent.cli.run", "cmd_run"))


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the pipeline over a recorded log; messages as JSON lines")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.add_argument("log", type=Path, help="candump .log, .asc, .blf, .trc, or SavvyCAN/GVRET .csv")
    _dbc_option(p)
    p.add_argument("--publish", action="store_true", help="also publish the messages to the broker")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="with --publish: seconds to wait for the broker's acknowledgements")
    p.add_argument("--state", type=Path, metavar="FILE", help="write the final vehicle state as JSON")
    p.add_argument("--start-time", metavar="ISO8601",
                   help="anchor a log with relative timestamps (GVRET, relative ASC) at this UTC time")
    p.add_argument("--stats", action="store_true",
                   help="also print, per drop reason, the ids, messages and signals with the most drops")
    p.set_defaults(func=_lazy("agent.cli.replay", "cmd_replay"))


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a config, its DBCs and mapping; list every problem")
    p.add_argument("config", type=Path)
    _dbc_option(p)
    p.set_defaults(func=_lazy("agent.cli.check_config", "cmd_check_config"))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a simulated car, the agent and a broker: see what a subscriber receives")
    p.add_argument("--scenario", default="demo-day", help="simulator scenario (default: demo-day)")
    p.add_argument("--speed", type=float, default=None,
                   help="simulation speed factor (default: 600; 60 for a car whose values are polled)")
    p.add_argument("--config", type=Path, help="agent config (default: the reference EV)")
    p.set_defaults(func=_lazy("agent.cli.demo", "cmd_demo"))


def _add_schema(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of the persona message")
    p.set_defaults(func=_lazy("agent.cli.schema", "cmd_schema"))


def _lazy(module: str, attr: str) -> Callable[[argparse.Namespace], int]:
    """Import a subcommand's module only when it runs (start-up time matters on a Pi)."""

    def run(args: argparse.Namespace) -> int:
        func = getattr(__import__(module, fromlist=[attr]), attr)
        return int(func(args))

    return run


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        if args.debug:
            raise
        return 1
    except CarfriendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.debug:
            raise
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
