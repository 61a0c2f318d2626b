"""`carfriend outbox status|flush`: look into and deliver the durable outbox (IO)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="the durable outbox: status, flush")
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    status = osub.add_parser("status", help="queued messages by severity, oldest age, drops (JSON)")
    status.add_argument("--config", "-c", type=Path, required=True)
    status.set_defaults(func=cmd_status)
    flush = osub.add_parser("flush", help="deliver what is queued, then exit (1 if anything is left)")
    flush.add_argument("--config", "-c", type=Path, required=True)
    flush.add_argument("--timeout", type=float, default=60.0)
    flush.set_defaults(func=cmd_flush)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.cli.daemon import open_outbox
    from agent.profile.config import load_config

    config = load_config(args.config)
    outbox = open_outbox(config)
    try:
        print(json.dumps({"outbox": str(outbox.path), **outbox.status()}, indent=2))
    finally:
        outbox.close()
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    from agent.cli.daemon import open_outbox
    from agent.cli.replay import drain
    from agent.core.errors import ConfigError
    from agent.profile.config import load_config

    config = load_config(args.config)
    if not config.mqtt.host:
        raise ConfigError(f"{args.config}: [mqtt] host: no broker configured to flush to")
    outbox = open_outbox(config)
    try:
        before = outbox.queued_total()
        left = drain(config, outbox, args.timeout)
    finally:
        outbox.close()
    print(f"delivered {before - left} message(s); {left} left in {outbox.path}")
    return 1 if left else 0
