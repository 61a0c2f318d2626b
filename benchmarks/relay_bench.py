"""Relay benchmark: ingest rate, publish -> live timeline latency, database size per vehicle-day.

    .venv/bin/python benchmarks/relay_bench.py --vehicles 100 1000

The traffic comes from a SYNTHETIC PUBLISHER that publishes the agent's wire format (persona
messages, state snapshots, status) for N vehicle ids over a few MQTT connections; it is not the
agent. Everything runs on this machine: a private Mosquitto on a free loopback port, the relay
in-process with a fresh SQLite file, and live-timeline (SSE) readers for a sample of vehicles.

For each fleet size it reports:
  burst    messages/s the relay stores (and acknowledges) when the broker hands it a backlog
  steady   at a fixed offered rate: p50/p99 from publish to the message appearing on the owner's
           live timeline (server-sent events), measured on the sampled vehicles
  size     database bytes per vehicle-day for a modelled day of one car (see DAY below)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mqtt_helpers import Mosquitto, free_port  # noqa: E402

from relay.admin import add_user, add_vehicles, grant  # noqa: E402
from relay.config import RelayConfig  # noqa: E402
from relay.server import Relay  # noqa: E402

PASSWORD = "bench-password-123"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
# One modelled day of one car, as the agent publishes it: state on change at most every 5 s
# while driving (1 h) or charging (3 h), periodic state every 15 min otherwise, 12 messages,
# 24 fleet reports, 2 status changes.
DAY = {"active_state_every_s": 5, "active_h": 4, "idle_state_every_s": 900, "messages": 12,
       "fleet_reports": 24, "status": 2}


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def message(vid: str, ts: float, kind: str = "battery.low") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "vehicle_id": vid, "ts": iso(ts), "kind": kind,
            "severity": "warning", "visibility": "private",
            "text": "My battery is at 18 %. Could you plug me in tonight? — Kit",
            "locale": "en", "persona": "Kit", "question": None, "data": {SOC: 18.0}}


def state(vid: str, ts: float, soc: float) -> dict[str, Any]:
    sig = {"value": soc, "ts": iso(ts), "stale": False}
    names = [SOC, "Vehicle.Speed", "Vehicle.LowVoltageBattery.CurrentVoltage",
             "Vehicle.Powertrain.TractionBattery.Charging.IsCharging",
             "Vehicle.Powertrain.TractionBattery.CurrentPower", "Vehicle.TraveledDistance"]
    return {"vehicle_id": vid, "ts": iso(ts), "signals": {n: sig for n in names}}


class Publishers:
    """SYNTHETIC PUBLISHER: a few connections publishing for many vehicle ids, QoS 1."""

    def __init__(self, broker: Mosquitto, count: int = 4) -> None:
        self.clients = []
        for i in range(count):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{i}",
                            protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(1000)
            c.connect(broker.host, broker.port)
            c.loop_start()
            self.clients.append(c)
        self.n = 0

    def publish(self, topic: str, doc: dict[str, Any] | bytes) -> mqtt.MQTTMessageInfo:
        self.n += 1
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        # One connection per vehicle, like a car: its messages stay in order.
        return self.clients[hash(topic.split("/")[2]) % len(self.clients)].publish(topic, body, qos=1)

    def close(self) -> None:
        for c in self.clients:
            c.loop_stop()
            c.disconnect()


class LiveReader(threading.Thread):
    """One owner's live timeline: when each message id appeared (monotonic time)."""

    def __init__(self, base: str, cookies: httpx.Cookies, vid: str, seen: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base, cookies=cookies, timeout=None)
        self.vid, self.seen = vid, seen
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with self.client.stream("GET", f"/v/{self.vid}/events") as r:
                for line in r.iter_lines():
                    self.ready.set()
                    if 'data-message-id="' in line:
                        mid = line.split('data-message-id="', 1)[1].split('"', 1)[0]
                        self.seen.setdefault(mid, time.monotonic())
        except httpx.HTTPError:
            pass  # the relay stopped at the end of the run


def relay_config(tmp: Path, broker: Mosquitto) -> RelayConfig:
    return RelayConfig.model_validate({
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "bench-relay"},
        "database": {"url": f"sqlite:///{tmp / 'relay.db'}"},
        "web": {"port": free_port(), "secret_file": str(tmp / "secret")},
        "keys": {"dir": str(tmp / "keys")}})


def start_relay(tmp: Path, broker: Mosquitto, vids: list[str], sample: list[str]) -> Relay:
    cfg = relay_config(tmp, broker)
    relay = Relay(cfg, live_poll_s=5.0)
    with relay.ctx.sessions() as s:
        for i in range(0, len(vids), 500):
            add_vehicles(s, cfg, vids[i:i + 500])
        add_user(s, "owner", PASSWORD)
        for vid in sample:
            grant(s, "owner", "owner", vid)
    return relay.start()


def login(base: str) -> httpx.Cookies:
    c = httpx.Client(base_url=base, timeout=10)
    html = c.get("/login").text
    token = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = c.post("/login", data={"csrf": token, "username": "owner", "password": PASSWORD})
    assert r.status_code == 303, r.status_code
    return c.cookies


def wait_stored(relay: Relay, target: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while relay.ingest.stored < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"stored {relay.ingest.stored} of {target} in {timeout_s:g} s")
        time.sleep(0.01)
    return time.monotonic()


def publish_backlog(broker: Mosquitto, vids: list[str], per_vehicle: int) -> int:
    """While no relay is connected: the broker queues everything for the relay's session."""
    pubs = Publishers(broker)
    now, infos = time.time() - per_vehicle, []  # timestamps never ahead of the relay's clock
    for k in range(per_vehicle):
        for vid in vids:
            leaf = "messages" if k % 5 == 0 else "state"
            doc = message(vid, now + k) if leaf == "messages" else state(vid, now + k, 50.0)
            infos.append(pubs.publish(f"carfriend/v1/{vid}/{leaf}", doc))
    for info in infos:
        info.wait_for_publish(60)
    pubs.close()
    return len(infos)


def steady(relay: Relay, broker: Mosquitto, vids: list[str], sample: list[str], rate: float,
           duration_s: float) -> tuple[float, float, float, int]:
    """Offered `rate` messages/s for duration_s; latency of the sampled vehicles' messages."""
    base = f"http://127.0.0.1:{relay.config.web.port}"
    cookies = login(base)
    seen: dict[str, float] = {}
    readers = [LiveReader(base, cookies, vid, seen) for vid in sample]
    for r in readers:
        r.start()
        r.ready.wait(10)
    pubs = Publishers(broker)
    sent: dict[str, float] = {}
    sample_set = set(sample)
    t_start, n, i = time.monotonic(), 0, 0
    while (elapsed := time.monotonic() - t_start) < duration_s:
        due = int(elapsed * rate)
        while n < due:
            vid = vids[i % len(vids)]
            i += 1
            if vid in sample_set or n % 5 == 0:
                doc = message(vid, time.time())
                if vid in sample_set:
                    sent[doc["id"]] = time.monotonic()
                pubs.publish(f"carfriend/v1/{vid}/messages", doc)
            else:
                pubs.publish(f"carfriend/v1/{vid}/state", state(vid, time.time(), 60.0))
            n += 1
        time.sleep(0.002)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(mid not in seen for mid in sent):
        time.sleep(0.05)
    pubs.close()
    lat = sorted((seen[m] - t) * 1000 for m, t in sent.items() if m in seen)
    if not lat:
        return n / duration_s, float("nan"), float("nan"), 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return n / duration_s, statistics.median(lat), p99, len(lat)


def vehicle_day_bytes(tmp: Path, vehicles: int = 20) -> float:
    """Database growth for one modelled day (DAY) of `vehicles` cars, per vehicle-day."""
    broker = Mosquitto(extra_conf="max_queued_messages 0\nmax_inflight_messages 200").start()
    vids = [f"day-{i:04d}" for i in range(vehicles)]
    day_tmp = tmp / "day"
    day_tmp.mkdir()
    relay = start_relay(day_tmp, broker, vids, [])
    db = day_tmp / "relay.db"
    relay.engine.dispose()
    size0 = _db_bytes(db)
    pubs = Publishers(broker)
    # A modelled day that ended before now: the relay refuses timestamps ahead of its clock.
    t0, total = time.time() - 2 * 86400, 0
    active = DAY["active_h"] * 3600 // DAY["active_state_every_s"]
    idle = (24 - DAY["active_h"]) * 3600 // DAY["idle_state_every_s"]
    for vid in vids:
        for k in range(active):
            pubs.publish(f"carfriend/v1/{vid}/state",
                         state(vid, t0 + k * DAY["active_state_every_s"], 50 + k % 40))
        for k in range(idle):
            pubs.publish(f"carfriend/v1/{vid}/state", state(vid, t0 + 14400 + k * 900, 80.0))
        for k in range(DAY["messages"]):
            pubs.publish(f"carfriend/v1/{vid}/messages", message(vid, t0 + k * 7200))
        for k in range(DAY["fleet_reports"]):
            pubs.publish(f"carfriend/v1/{vid}/fleet", {
                "kind": "outbox.status", "vehicle_id": vid, "ts": iso(t0 + k * 3600),
                "outbox": {"queued_total": k, "dropped": {"info": 0, "warning": 0}}})
        for text in (b"online", b"offline"):
            pubs.publish(f"carfriend/v1/{vid}/status", text)
        total += active + idle + DAY["messages"] + DAY["fleet_reports"] + DAY["status"]
    wait_stored(relay, total, 900)
    pubs.close()
    relay.stop()
    broker.close()
    return (_db_bytes(db) - size0) / vehicles


def _db_bytes(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = con.execute("PRAGMA page_count").fetchone()[0] - con.execute(
        "PRAGMA freelist_count").fetchone()[0]
    size = pages * con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    return int(size)


def run(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker = Mosquitto(extra_conf=f"max_queued_messages 0\nmax_inflight_messages {args.inflight}")
    broker.start()
    vids = [f"car-{i:05d}" for i in range(n)]
    sample = vids[:: max(1, n // args.sample)][: args.sample]
    run_tmp = tmp / f"n{n}"
    run_tmp.mkdir()
    relay = start_relay(run_tmp, broker, vids, sample)  # creates the relay's broker session
    relay.ingest.connected.wait(10)
    time.sleep(0.5)
    relay.stop()
    backlog = publish_backlog(broker, vids, max(1, args.burst // n))
    relay = Relay(relay_config(run_tmp, broker), live_poll_s=5.0)
    t0 = time.monotonic()  # from the connection on: the broker hands over its backlog
    relay.start()
    try:
        rate_burst = backlog / (wait_stored(relay, backlog, 600) - t0)
        offered, p50, p99, samples = steady(relay, broker, vids, sample, args.rate, args.duration)
    finally:
        relay.stop()
        broker.close()
    return {"vehicles": n, "burst_msgs_per_s": round(rate_burst), "offered_msgs_per_s": round(offered),
            "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "latency_samples": samples,
            "dropped": dict(relay.ingest.dropped)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vehicles", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--burst", type=int, default=20000, help="messages in the backlog burst")
    p.add_argument("--rate", type=float, default=500.0, help="offered messages/s in the steady phase")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of steady load")
    p.add_argument("--sample", type=int, default=10, help="vehicles with a live timeline open")
    p.add_argument("--inflight", type=int, default=200, help="Mosquitto max_inflight_messages")
    p.add_argument("--day-vehicles", type=int, default=20, help="cars in the vehicle-day run (0: skip)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    results: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        for n in args.vehicles:
            r = run(n, args, Path(tmp))
            results["runs"].append(r)
            print(f"{n:5d} vehicles: burst {r['burst_msgs_per_s']} msg/s stored; steady "
                  f"{r['offered_msgs_per_s']} msg/s offered: publish->live timeline "
                  f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms ({r['latency_samples']} samples)",
                  flush=True)
        if args.day_vehicles:
            per_day = vehicle_day_bytes(Path(tmp), args.day_vehicles)
            results["db_bytes_per_vehicle_day"] = round(per_day)
            print(f"database: {per_day / 1024:.0f} KiB per vehicle-day (SQLite, modelled day: {DAY})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
