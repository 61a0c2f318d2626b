"""Relay benchmark at fleet scale: SQLite vs PostgreSQL, one vs two relay instances.

    .venv/bin/python benchmarks/relay_bench.py --vehicles 1000 10000 --setups sqlite pg pg2

The traffic comes from a SYNTHETIC PUBLISHER that publishes the agent's wire format (persona
messages, state documents, fleet reports) for N vehicle ids over a few MQTT connections; it is
not the agent. Everything runs on this machine: a private Mosquitto on a free loopback port, a
throw-away PostgreSQL cluster (tests/pg_helpers.py) or a SQLite file, and each relay instance
as a process of its own (`carfriend relay --config ...`), so CPU and memory are its own.

Setups: `sqlite` (one instance), `pg` (one instance on PostgreSQL), `pg2` (two instances on one
PostgreSQL behind one Mosquitto, each with its own plain persistent subscription: both process
every message and the database stores it once; see docs/relay.md), `pg2s` (two instances with
MQTT shared subscriptions, each message to one of them: what a broker that can keep cars out of
the share group allows; the bench's private Mosquitto has no ACL, so it works here).

For each fleet size and setup it reports:
  burst    messages/s stored and acknowledged when the broker hands over a backlog (20% persona
           messages, 80% state deltas; time until the first instance has processed all of it)
  steady   a realistic mix for --duration s: 1/6 of the cars driving or charging (a state delta
           every 5-30 s), the others a full state every 15 min, 12 messages and 24 fleet reports
           a car-day, plus a message every 2 s for each of --sample cars whose owner has the live
           timeline open (server-sent events, on the last instance). Ingest lag = received_at -
           ts of every message stored in the window (p50/p99); live = publish -> the message on
           the owner's timeline (p50/p99); CPU (% of one core) and RSS of each instance.
  size     database bytes per vehicle-day for a modelled day of one car (DAY), compacted
           (SQLite VACUUM INTO, PostgreSQL VACUUM FULL): as stored, after the 7-day thinning of
           the state history, and after 30 days (fleet reports gone).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mqtt_helpers import Mosquitto, free_port  # noqa: E402
from pg_helpers import PostgresCluster  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from relay.admin import add_user, add_vehicles, grant, open_sessions  # noqa: E402
from relay.config import RelayConfig, load_config  # noqa: E402
from relay.models import Message  # noqa: E402
from relay.retention import Pruner  # noqa: E402

PASSWORD = "bench-password-123"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
NAMES = [SOC, "Vehicle.Speed", "Vehicle.LowVoltageBattery.CurrentVoltage",
         "Vehicle.Powertrain.TractionBattery.Charging.IsCharging",
         "Vehicle.Powertrain.TractionBattery.CurrentPower", "Vehicle.TraveledDistance"]
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


def state(vid: str, ts: float, soc: float, full: bool = True) -> dict[str, Any]:
    names = NAMES if full else NAMES[:2]
    return {"vehicle_id": vid, "ts": iso(ts), "full": full,
            "signals": {n: {"value": soc, "ts": iso(ts), "stale": False} for n in names}}


def fleet_report(vid: str, ts: float, k: int) -> dict[str, Any]:
    return {"kind": "outbox.status", "vehicle_id": vid, "ts": iso(ts),
            "outbox": {"queued_total": k, "dropped": {"info": 0, "warning": 0}}}


class Publishers:
    """SYNTHETIC PUBLISHER: a few connections publishing for many vehicle ids, QoS 1."""

    def __init__(self, broker: Mosquitto, count: int = 4) -> None:
        self.clients = []
        for i in range(count):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                            client_id=f"bench-pub-{uuid.uuid4().hex[:6]}-{i}",
                            protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(1000)
            c.connect(broker.host, broker.port)
            c.loop_start()
            self.clients.append(c)

    def publish(self, vid: str, leaf: str, doc: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        # One connection per vehicle, like a car: its messages stay in order.
        client = self.clients[hash(vid) % len(self.clients)]
        return client.publish(f"carfriend/v1/{vid}/{leaf}", json.dumps(doc).encode(), qos=1)

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


# -- the relay instances, each a process ------------------------------------------------------

class Instance:
    """`carfriend relay --config F` in a process of its own."""

    def __init__(self, tmp: Path, name: str, broker: Mosquitto, url: str,
                 shared: bool = False) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_path = self.dir / "relay.toml"
        self.config_path.write_text(
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "{name}"\n'
            f'shared_subscriptions = {"true" if shared else "false"}\n'
            f'[database]\nurl = "{url}"\n[web]\nport = {self.port}\n'
            f'[keys]\ndir = "{tmp / "keys"}"\n[retention]\ninterval_s = 0\n')
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> RelayConfig:
        return load_config(self.config_path, environ={})

    def start(self) -> Instance:
        log = (self.dir / "relay.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "relay", "--config",
                                      str(self.config_path)], stdout=log, stderr=log, cwd=ROOT,
                                     env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).text == "ok":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.dir}: the relay did not become healthy: "
                           f"{(self.dir / 'relay.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None

    def stored(self, client: httpx.Client) -> int:
        """The instance's own counter, from the fleet page (a fleet-wide operator's view)."""
        found = re.search(r"since it started: stored (\d+)", client.get(f"{self.base}/fleet").text)
        return int(found.group(1)) if found else 0


def login(base: str, user: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=30)
    html = c.get("/login").text
    token = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = c.post("/login", data={"csrf": token, "username": user, "password": PASSWORD})
    assert r.status_code == 303, r.status_code
    return c


def prepare(inst: Instance, vids: list[str], sample: list[str]) -> None:
    cfg = inst.config()
    with open_sessions(cfg)() as s:
        for i in range(0, len(vids), 1000):
            add_vehicles(s, cfg, vids[i:i + 1000])
        for user in ("owner", "ops"):
            add_user(s, user, PASSWORD)
        for vid in sample:
            grant(s, "owner", "owner", vid)
        grant(s, "ops", "operator", None)


# -- phases -------------------------------------------------------------------------------

def publish_backlog(broker: Mosquitto, vids: list[str], total: int) -> int:
    """While no relay is connected: the broker queues everything for the relays' sessions."""
    pubs, infos = Publishers(broker), []
    per_vehicle = max(1, total // len(vids))
    now = time.time() - per_vehicle  # never ahead of the relay's clock
    for k in range(per_vehicle):
        for i, vid in enumerate(vids):
            if (k * len(vids) + i) % 5 == 0:
                infos.append(pubs.publish(vid, "messages", message(vid, now + k)))
            else:
                infos.append(pubs.publish(vid, "state", state(vid, now + k, 50.0, full=False)))
    for info in infos:
        info.wait_for_publish(120)
    pubs.close()
    return len(infos)


def burst(instances: list[Instance], broker: Mosquitto, vids: list[str], total: int,
          shared: bool) -> float:
    """Backlog messages/s: until one instance has processed all of it (plain subscriptions:
    each gets everything), or until the instances together have (shared subscriptions)."""
    for inst in instances:  # each creates its persistent session, then goes away
        inst.start()
    for inst in instances:
        inst.stop()
    backlog = publish_backlog(broker, vids, total)
    t0 = time.monotonic()
    for inst in instances:
        inst.start()
    ops = login(instances[0].base, "ops")
    deadline = time.monotonic() + 900
    def done() -> bool:
        counts = [inst.stored(ops) for inst in instances]
        return sum(counts) >= backlog if shared else max(counts) >= backlog

    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("the backlog was not stored within 900 s")
        time.sleep(0.25)
    return backlog / (time.monotonic() - t0)


def steady(instances: list[Instance], broker: Mosquitto, vids: list[str], sample: list[str],
           duration_s: float, url: str) -> dict[str, Any]:
    reader_base = instances[-1].base
    owner = login(reader_base, "owner")
    seen: dict[str, float] = {}
    readers = [LiveReader(reader_base, owner.cookies, vid, seen) for vid in sample]
    for r in readers:
        r.start()
        r.ready.wait(10)
    procs = [psutil.Process(inst.proc.pid) for inst in instances if inst.proc]
    cpu0 = [p.cpu_times() for p in procs]
    rng = random.Random(1)
    n = len(vids)
    active = set(rng.sample(vids, n // 6))
    # Each car's next event time (seconds from the start), spread over its period.
    due = {vid: rng.uniform(0, 30 if vid in active else 900) for vid in vids}
    msg_every, fleet_every = 86400 / 12 / n, 86400 / 24 / n  # fleet-wide intervals
    pubs, sent = Publishers(broker), {}
    t_start, wall0 = time.monotonic(), datetime.utcnow()
    next_msg = next_fleet = next_sample = 0.0
    offered = 0
    order = sorted(vids, key=due.__getitem__)
    while (elapsed := time.monotonic() - t_start) < duration_s:
        now = time.time()
        for vid in order:  # the cars due by now (a sorted scan, stopping at the first not due)
            if due[vid] > elapsed:
                break
            pubs.publish(vid, "state", state(vid, now, 60.0, full=vid not in active))
            due[vid] += rng.uniform(5, 30) if vid in active else 900
            offered += 1
        order.sort(key=due.__getitem__)
        while next_msg <= elapsed:
            vid = rng.choice(vids)
            pubs.publish(vid, "messages", message(vid, now))
            next_msg += msg_every
            offered += 1
        while next_fleet <= elapsed:
            vid = rng.choice(vids)
            pubs.publish(vid, "fleet", fleet_report(vid, now, offered))
            next_fleet += fleet_every
            offered += 1
        while next_sample <= elapsed:
            for vid in sample:
                doc = message(vid, now, "charge.started")
                sent[doc["id"]] = time.monotonic()
                pubs.publish(vid, "messages", doc)
                offered += 1
            next_sample += 2.0
        time.sleep(0.01)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(mid not in seen for mid in sent):
        time.sleep(0.05)
    cpu = [_cpu_pct(p, c0, duration_s) for p, c0 in zip(procs, cpu0, strict=True)]
    rss = [round(p.memory_info().rss / 2**20) for p in procs]
    pubs.close()
    live = sorted((seen[m] - t) * 1000 for m, t in sent.items() if m in seen)
    lag = _ingest_lag_ms(instances[0], wall0)
    return {"offered_msgs_per_s": round(offered / duration_s, 1),
            "ingest_lag_p50_ms": _pct(lag, 50), "ingest_lag_p99_ms": _pct(lag, 99),
            "lag_samples": len(lag), "live_p50_ms": _pct(live, 50), "live_p99_ms": _pct(live, 99),
            "live_samples": len(live), "live_missing": len(sent) - len(live),
            "cpu_pct": cpu, "rss_mb": rss}


def _cpu_pct(proc: psutil.Process, before: Any, duration_s: float) -> float:
    after = proc.cpu_times()
    return round(100 * (after.user + after.system - before.user - before.system) / duration_s, 1)


def _ingest_lag_ms(inst: Instance, since: datetime) -> list[float]:
    with open_sessions(inst.config())() as s:
        rows = s.execute(select(Message.ts, Message.received_at)
                         .where(Message.received_at >= since)).all()
    return sorted((recv - ts).total_seconds() * 1000 for ts, recv in rows)


def _pct(values: list[float], p: int) -> float:
    if not values:
        return float("nan")
    if p == 50:
        return round(statistics.median(values), 1)
    return round(values[min(len(values) - 1, int(len(values) * p / 100))], 1)


def vehicle_day_bytes(tmp: Path, url: str, db_file: Path | None, vehicles: int) -> dict[str, Any]:
    """One modelled day (DAY) of `vehicles` cars through the relay; compacted database bytes
    per vehicle-day as stored, after the state history's 7-day thinning, after 30 days."""
    broker = Mosquitto(extra_conf="max_queued_messages 0\nmax_inflight_messages 200").start()
    inst = Instance(tmp, "day-relay", broker, url)
    vids = [f"day-{i:04d}" for i in range(vehicles)]
    prepare(inst, vids, [])
    empty = _db_bytes(url, db_file, tmp)
    inst.start()
    pubs, total = Publishers(broker), 0
    t0 = time.time() - 2 * 86400  # a day that ended before now
    active = DAY["active_h"] * 3600 // DAY["active_state_every_s"]
    idle = (24 - DAY["active_h"]) * 3600 // DAY["idle_state_every_s"]
    for vid in vids:
        for k in range(active):
            pubs.publish(vid, "state", state(vid, t0 + k * DAY["active_state_every_s"],
                                             50 + k % 40, full=False))
        for k in range(idle):
            pubs.publish(vid, "state", state(vid, t0 + 14400 + k * 900, 80.0))
        for k in range(DAY["messages"]):
            pubs.publish(vid, "messages", message(vid, t0 + k * 7200))
        for k in range(DAY["fleet_reports"]):
            pubs.publish(vid, "fleet", fleet_report(vid, t0 + k * 3600, k))
        total += active + idle + DAY["messages"] + DAY["fleet_reports"]
    ops = login(inst.base, "ops")
    deadline = time.monotonic() + 900
    while inst.stored(ops) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    pubs.close()
    inst.stop()
    broker.close()
    out = {"stored": round((_db_bytes(url, db_file, tmp) - empty) / vehicles)}
    sessions = open_sessions(inst.config())
    cfg = inst.config().retention
    day0 = datetime.utcfromtimestamp(t0)
    for label, days in (("after_7_days", 8), ("after_30_days", 31)):
        # received_at is the relay's clock (today): shift the cut-offs as if `days` had passed.
        Pruner(sessions, cfg).prune(day0 + timedelta(days=days))
        if days > 30:
            with sessions() as s, s.begin():
                s.execute(text("DELETE FROM fleet_reports"))  # their received_at is today
        out[label] = round((_db_bytes(url, db_file, tmp) - empty) / vehicles)
    return out


def _db_bytes(url: str, db_file: Path | None, tmp: Path) -> int:
    if db_file is not None:
        copy = tmp / "compacted.db"
        copy.unlink(missing_ok=True)
        con = sqlite3.connect(db_file)
        con.execute(f"VACUUM INTO '{copy}'")
        con.close()
        size = copy.stat().st_size
        copy.unlink()
        return size
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM FULL")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0


# -- runs -------------------------------------------------------------------------------------

def run(n: int, setup: str, args: argparse.Namespace, tmp: Path,
        cluster: PostgresCluster | None) -> dict[str, Any]:
    broker = Mosquitto(extra_conf=f"max_queued_messages 0\nmax_inflight_messages {args.inflight}")
    broker.start()
    run_tmp = tmp / f"{setup}-{n}"
    run_tmp.mkdir()
    url = (cluster.create_database() if cluster and setup.startswith("pg")
           else f"sqlite:///{run_tmp / 'relay.db'}")
    count, shared = (2 if setup.startswith("pg2") else 1), setup == "pg2s"
    instances = [Instance(run_tmp, f"bench-relay-{i + 1}", broker, url, shared)
                 for i in range(count)]
    vids = [f"car-{i:05d}" for i in range(n)]
    sample = vids[:: max(1, n // args.sample)][: args.sample]
    prepare(instances[0], vids, sample)
    try:
        rate = burst(instances, broker, vids, args.burst, shared)
        figures = steady(instances, broker, vids, sample, args.duration, url)
    finally:
        for inst in instances:
            inst.stop()
        broker.close()
        if cluster and setup.startswith("pg"):
            cluster.drop_database(url)
    return {"vehicles": n, "setup": setup, "instances": count,
            "burst_msgs_per_s": round(rate), **figures}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vehicles", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--setups", nargs="+", default=["sqlite", "pg", "pg2"],
                   choices=["sqlite", "pg", "pg2", "pg2s"])
    p.add_argument("--burst", type=int, default=20000, help="messages in the backlog burst")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    p.add_argument("--sample", type=int, default=10, help="cars with a live timeline open")
    p.add_argument("--inflight", type=int, default=200, help="Mosquitto max_inflight_messages")
    p.add_argument("--day-vehicles", type=int, default=20,
                   help="cars in the vehicle-day run on each database (0: skip)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--durable", action="store_true",
                   help="PostgreSQL with fsync, synchronous_commit and full_page_writes on (a "
                        "production server's settings) instead of the test cluster's off")
    args = p.parse_args()
    results: dict[str, Any] = {"runs": [], "db_bytes_per_vehicle_day": {}}
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    cluster = (PostgresCluster(durable=args.durable).start()
               if any(s.startswith("pg") for s in args.setups) else None)
    if cluster is not None:
        print(f"PostgreSQL: fsync {'on' if args.durable else 'off'} (the relay's ingest transactions "
              "use synchronous_commit=on either way)", flush=True)
    try:
        for n in args.vehicles:
            for setup in args.setups:
                r = run(n, setup, args, tmp, cluster)
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
        if args.day_vehicles:
            for db in sorted({"sqlite" if s == "sqlite" else "pg" for s in args.setups}):
                day_tmp = tmp / f"day-{db}"
                day_tmp.mkdir()
                if db == "pg" and cluster is not None:
                    url, db_file = cluster.create_database(), None
                else:
                    db_file = day_tmp / "relay.db"
                    url = f"sqlite:///{db_file}"
                sizes = vehicle_day_bytes(day_tmp, url, db_file, args.day_vehicles)
                results["db_bytes_per_vehicle_day"][db] = sizes
                print(f"database ({db}) bytes per vehicle-day: {sizes}", flush=True)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
