"""The plans PostgreSQL picks for the relay pages' queries on a few million rows.

    .venv/bin/python benchmarks/relay_explain.py --messages 3000000 --vehicles 10000

Fills a throw-away cluster's database with SYNTHETIC rows (generate_series: messages spread
over the vehicles and two years, a state history, commands), ANALYZEs it, then runs the real
query functions of relay/queries.py (and the retention's deletes) with a hook that EXPLAINs
(ANALYZE) every SELECT they send, and prints each plan's shape and time. It fails when a query
reads the messages table by a sequential scan.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pg_helpers import PostgresCluster  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from relay import queries  # noqa: E402
from relay.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from relay.permissions import Access  # noqa: E402

NOW = datetime(2026, 12, 1, 12, 0)


def fill(s: Any, vehicles: int, messages: int, history: int) -> None:
    s.execute(text(
        "INSERT INTO vehicles (id, name, created_at, public_feed, revision, msg_seq) "
        "SELECT 'car-' || lpad(i::text, 6, '0'), '', :now, i % 50 = 0, 0, 0 "
        "FROM generate_series(1, :n) i"), {"now": NOW, "n": vehicles})
    # Messages: vehicle i gets every vehicles-th row, so vseq = row / vehicles; 1 in 20 is a
    # warning, 1 in 50 charge.started, visibilities mixed; times spread over two years.
    s.execute(text(
        "INSERT INTO messages (vehicle_id, vseq, msg_id, ts, received_at, kind, severity, "
        "visibility, text, locale, persona, data) "
        "SELECT 'car-' || lpad((1 + r % :n)::text, 6, '0'), 1 + r / :n, md5(r::text), "
        ":now - (r * interval '1 second' * (63072000.0 / :m)), "
        ":now - (r * interval '1 second' * (63072000.0 / :m)), "
        "CASE WHEN r % 50 = 0 THEN 'charge.started' ELSE 'battery.low' END, "
        "CASE WHEN r % 20 = 0 THEN 'warning' ELSE 'info' END, "
        "(ARRAY['private', 'family', 'public'])[1 + r % 3], 'text', 'en', '', "
        "'{\"eta\": \"23:00\"}' FROM generate_series(1, :m) r"),
        {"now": NOW, "n": vehicles, "m": messages})
    s.execute(text(
        "INSERT INTO state_history (vehicle_id, ts, received_at, signals) "
        "SELECT 'car-' || lpad((1 + r % :n)::text, 6, '0'), "
        ":now - (r * interval '1 second' * (31536000.0 / :h)), :now, '{}' "
        "FROM generate_series(1, :h) r"), {"now": NOW, "n": vehicles, "h": history})
    s.execute(text(
        "INSERT INTO commands (id, vehicle_id, name, args, issued_at, status, updated_at) "
        "SELECT md5(r::text), 'car-' || lpad((1 + r % :n)::text, 6, '0'), 'ping', '{}', "
        ":now - r * interval '1 minute', 'completed', :now FROM generate_series(1, :c) r"),
        {"now": NOW, "n": vehicles, "c": vehicles * 20})
    s.execute(text("UPDATE vehicles SET msg_seq = :m / :n + 1"),
              {"m": messages, "n": vehicles})
    s.execute(text("INSERT INTO users (username, display_name, password_hash, created_at, "
                   "session_version) VALUES ('ops', '', 'x', :now, 1)"), {"now": NOW})
    s.execute(text("INSERT INTO memberships (user_id, vehicle_id, role) "
                   "SELECT id, NULL, 'operator' FROM users WHERE username = 'ops'"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vehicles", type=int, default=10000)
    p.add_argument("--messages", type=int, default=3_000_000)
    p.add_argument("--history", type=int, default=3_000_000)
    args = p.parse_args()
    cluster = PostgresCluster().start()
    try:
        engine = make_engine(cluster.create_database())
        migrate(engine)
        sessions = make_sessionmaker(engine)
        t0 = time.monotonic()
        with sessions() as s, s.begin():
            fill(s, args.vehicles, args.messages, args.history)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        print(f"filled {args.messages:,} messages, {args.history:,} state rows, "
              f"{args.vehicles:,} vehicles in {time.monotonic() - t0:.0f} s")
        plans: list[tuple[str, str]] = []
        label = [""]

        def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and label[0]:
                cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, params)
                plans.append((label[0], "\n".join(r[0] for r in cursor.fetchall())))

        event.listen(engine, "before_cursor_execute", explain)
        car, quiet = "car-000007", "car-000008"
        owner, family = Access(frozenset({"owner"})), Access(frozenset({"family"}))
        operator = Access(frozenset({"operator"}))
        with sessions() as s:
            ops = s.scalar(text("SELECT id FROM users WHERE username = 'ops'"))
            for name, call in (
                    ("owner timeline", lambda: queries.timeline_messages(s, car, owner)),
                    ("owner live update", lambda: queries.timeline_messages(
                        s, car, owner, args.messages // args.vehicles - 2)),
                    ("family timeline", lambda: queries.timeline_messages(s, car, family)),
                    ("operator alerts", lambda: queries.timeline_messages(s, quiet, operator)),
                    ("latest ETA", lambda: queries.latest_eta(s, car)),
                    ("public feed", lambda: queries.public_messages(s, "car-000050")),
                    ("recent commands", lambda: queries.recent_commands(
                        s, car, NOW - timedelta(days=1))),
                    ("fleet page 1", lambda: queries.fleet(s, ops, NOW)),
                    ("fleet page 50", lambda: queries.fleet(s, ops, NOW, 50))):
                label[0] = name
                call()
            label[0] = ""
        event.remove(engine, "before_cursor_execute", explain)
        seq_scans = []
        for name, plan in plans:
            ms = plan.rsplit("Execution Time: ", 1)[-1].strip()
            shape = [line.strip() for line in plan.splitlines()
                     if any(k in line for k in ("Scan", "Sort", "Aggregate", "Limit"))]
            print(f"{name}: {ms}\n    " + "\n    ".join(shape))
            if "Seq Scan on messages" in plan or "Seq Scan on state_history" in plan:
                seq_scans.append(name)
        if seq_scans:
            print(f"SEQUENTIAL SCANS of a big table: {seq_scans}")
            return 1
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
