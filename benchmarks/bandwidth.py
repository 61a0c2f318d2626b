"""Bytes per day on the MQTT link for a typical day (commute + overnight charge), measured by
replaying the simulator's scenarios through the agent's pipeline and state reporter.

    python benchmarks/bandwidth.py [--json FILE]

Counts MQTT 5 packets as sent on the wire (fixed header, topic, packet id, properties length,
payload), the PUBACKs coming back, keepalive pings, and one CONNECT/CONNACK/online per day.
TLS adds ~29 bytes per record (TLS 1.2/1.3 AES-GCM) on top: shown separately.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import simulators  # noqa: E402
from agent.core.pipeline import Pipeline  # noqa: E402
from agent.core.settings import load_config  # noqa: E402
from agent.core.statepub import StateReporter  # noqa: E402
from agent.profile.vehicle import load_vehicle  # noqa: E402

CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"
TLS_RECORD_OVERHEAD = 29


def publish_bytes(topic: str, payload: bytes, qos: int) -> int:
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + len(payload)  # +1: MQTT 5 properties length
    header = 2 if remaining < 128 else 3 if remaining < 16384 else 4
    return header + remaining


def measure(scenarios: list[str]) -> dict[str, float]:
    config = load_config(CONFIG, environ={})
    totals = {"seconds": 0.0, "messages": 0, "message_bytes": 0, "state_full": 0, "state_delta": 0,
              "state_bytes": 0}
    for name in scenarios:  # each scenario is its own stretch of time
        messages: list[bytes] = []
        pipeline = Pipeline(load_vehicle(config), lambda m, out=messages: out.append(m.model_dump_json().encode()))
        reporter = StateReporter(config.vehicle.id, min_interval_s=config.mqtt.state_min_interval_s,
                                 full_interval_s=config.mqtt.state_interval_s)
        start = end = None
        for msg in simulators.frames(name, speed=1000):
            if msg.is_error_frame or msg.is_remote_frame:
                continue
            pipeline.process(msg.timestamp, msg.arbitration_id, bytes(msg.data))
            start = msg.timestamp if start is None else start
            end = msg.timestamp
            due = reporter.poll(pipeline.state, msg.timestamp)
            if due is not None:
                doc, full = due
                totals["state_full" if full else "state_delta"] += 1
                totals["state_bytes"] += publish_bytes(config.topic("state"),
                                                       json.dumps(doc, separators=(",", ":")).encode(), 1)
        assert start is not None and end is not None
        totals["seconds"] += end - start
        totals["messages"] += len(messages)
        totals["message_bytes"] += sum(publish_bytes(config.topic("messages"), m, 1) for m in messages)
    hours = totals["seconds"] / 3600
    publishes = totals["messages"] + totals["state_full"] + totals["state_delta"]
    pings = 4 * int(24 * 3600 / config.mqtt.keepalive_s)
    session = 150 + publish_bytes(config.topic("status"), b"online", 1)  # CONNECT with will + CONNACK
    per_day = (totals["message_bytes"] + totals["state_bytes"] + 4 * publishes) * 24 / hours + pings + session
    records_per_day = 2 * publishes * 24 / hours + 2 * 24 * 3600 / config.mqtt.keepalive_s
    return {**totals, "hours_simulated": hours, "bytes_per_day": per_day,
            "bytes_per_day_tls": per_day + TLS_RECORD_OVERHEAD * records_per_day}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = measure(["daily-commute", "overnight-charge"])
    print(f"simulated {r['hours_simulated']:.1f} h (daily-commute + overnight-charge), scaled to 24 h:")
    print(f"  messages      {r['messages']:>4}  {r['message_bytes']:>8,} bytes")
    print(f"  state         {r['state_full']:>4} full + {r['state_delta']} deltas  {r['state_bytes']:>8,} bytes")
    print(f"  per day, MQTT 5 incl. PUBACKs, keepalive pings, one connect: {r['bytes_per_day'] / 1024:,.1f} KiB")
    print(f"  per day with TLS record overhead:                             {r['bytes_per_day_tls'] / 1024:,.1f} KiB")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
