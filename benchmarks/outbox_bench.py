"""The durable outbox: messages/s into it with durability on, and time to drain 10,000 queued
messages to a local Mosquitto once it is back. Prints figures; `--json FILE` writes them.

    python benchmarks/outbox_bench.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mqtt_helpers import Mosquitto, Recorder  # noqa: E402

from agent.cli.replay import drain  # noqa: E402
from agent.core.settings import load_config  # noqa: E402
from agent.io.outbox import SqliteOutbox  # noqa: E402

CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"
PAYLOAD = json.dumps({"id": "x" * 36, "kind": "battery.low", "text": "My battery is down to 19 %. " * 3,
                      "data": {"soc": 19.5}}).encode()


def put_rate(path: Path, n: int) -> float:
    box = SqliteOutbox(path)
    t0 = time.perf_counter()
    for i in range(n):
        box.put(f"m{i}", "carfriend/v1/bench/messages", PAYLOAD, "info", float(i))
    rate = n / (time.perf_counter() - t0)
    box.close()
    return rate


def drain_time(n: int) -> tuple[float, int]:
    workdir = Path(tempfile.mkdtemp(prefix="carfriend-outbox-bench-"))
    config = load_config(CONFIG, environ={"CARFRIEND_STORAGE__STATE_DIR": str(workdir)})
    box = SqliteOutbox(workdir / "outbox.db")
    for i in range(n):  # produced while the broker was down
        box.put(f"m{i}", config.topic("messages"), PAYLOAD, "info", float(i))
    broker = Mosquitto().start()  # ... and now it is back
    recorder = Recorder(broker.host, broker.port, [config.topic("messages")])
    config = load_config(CONFIG, environ={"CARFRIEND_STORAGE__STATE_DIR": str(workdir),
                                          "CARFRIEND_MQTT__HOST": broker.host,
                                          "CARFRIEND_MQTT__PORT": str(broker.port)})
    try:
        t0 = time.perf_counter()
        left = drain(config, box, timeout=600)
        elapsed = time.perf_counter() - t0
        recorder.wait_for(lambda r: len(r.payloads("/messages")) >= n, timeout=60)
        received = len(recorder.payloads("/messages"))
    finally:
        recorder.close()
        broker.close()
        box.close()
    assert left == 0, f"{left} messages left"
    return elapsed, received


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n_put, n_drain = (300, 500) if args.quick else (5_000, 10_000)
    rate = put_rate(Path(tempfile.mkdtemp()) / "outbox.db", n_put)
    print(f"outbox put (WAL, synchronous=FULL, one commit per message)  {rate:,.0f} messages/s")
    elapsed, received = drain_time(n_drain)
    print(f"drain {n_drain:,} queued messages to a local Mosquitto     {elapsed:.1f} s "
          f"({n_drain / elapsed:,.0f} messages/s, {received:,} received, window 20 in flight)")
    if args.json:
        args.json.write_text(json.dumps({"outbox_put_per_s": rate, "drain_messages": n_drain,
                                         "drain_s": elapsed, "drain_received": received}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
