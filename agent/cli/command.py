"""`carfriend command`: sign a command with the vehicle's key, publish it, print its results (IO)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FINAL = ("completed", "failed", "rejected")


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("command", help="sign and send a remote command to a car; print its results")
    p.add_argument("--config", "-c", type=Path, required=True, help="the car's config (vehicle id, broker)")
    p.add_argument("--key-file", type=Path, required=True, help="the car's command key")
    p.add_argument("name", help="climate.start, climate.stop, charge.start, charge.stop, charge.schedule, "
                                "charge.limit, reply, status.request, ping")
    p.add_argument("args", nargs="?", default="{}", help='arguments as JSON, e.g. \'{"target_c": 21}\'')
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a final result")
    p.add_argument("--id", dest="command_id", help="command id (default: a new UUID)")
    p.add_argument("--print-payload", action="store_true", help="print the signed payload and exit")
    p.set_defaults(func=cmd_command)


def signed_payload(key: bytes, vehicle_id: str, name: str, args: dict[str, Any],
                   command_id: str | None = None, issued_at: datetime | None = None) -> dict[str, Any]:
    from agent.commands.protocol import sign

    cid = command_id or str(uuid.uuid4())
    issued = (issued_at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": cid, "issued_at": issued, "args": args, "sig": sign(key, vehicle_id, name, cid, issued, args)}


def cmd_command(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from agent.core.errors import ConfigError
    from agent.io.uplink import PahoUplink
    from agent.profile.config import load_config

    config = load_config(args.config)
    try:
        key = args.key_file.read_text().strip().encode()
        cmd_args = json.loads(args.args)
    except OSError as exc:
        raise ConfigError(f"{args.key_file}: cannot read the key: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"arguments are not JSON: {exc}") from None
    payload = signed_payload(key, config.vehicle.id, args.name, cmd_args, args.command_id)
    if args.print_payload:
        print(json.dumps(payload))
        return 0
    results: list[dict[str, Any]] = []
    done = threading.Event()
    uplink = PahoUplink(config, presence=False, client_suffix=f"-cmd-{uuid.uuid4().hex[:6]}")
    result_topic = config.topic(f"cmd/{args.name}/result")

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if doc.get("id") == payload["id"]:
            results.append(doc)
            print(json.dumps(doc), flush=True)
            if doc.get("status") in FINAL:
                done.set()

    uplink.client.on_message = on_message
    uplink.start()
    if not uplink.connected.wait(min(args.wait, 15)):
        print(f"error: cannot reach the broker {config.mqtt.host}:{config.mqtt.port}", file=sys.stderr)
        uplink.stop(0)
        return 2
    subscribed = threading.Event()
    uplink.client.on_subscribe = lambda *a: subscribed.set()
    uplink.client.subscribe(result_topic, qos=1)
    subscribed.wait(5)
    uplink.client.publish(config.topic(f"cmd/{args.name}"), json.dumps(payload), qos=1).wait_for_publish(10)
    done.wait(args.wait)
    time.sleep(0.2)
    uplink.stop(1)
    if not results:
        print(f"error: no result within {args.wait:g} s", file=sys.stderr)
        return 2
    return 0 if results[-1].get("status") == "completed" else 1
