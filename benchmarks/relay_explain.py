"""The plans PostgreSQL picks for the relay pages' queries on a few million rows.

    .venv/bin/python benchmarks/relay_explain.py --messages 3000000 --vehicles 10000

Fills a throw-away cluster's database with SYNTHETIC rows (generate_series: messages spread
over the vehicles and two years, a state history, commands), ANALYZEs it, then runs the real
query functions of relay/queries.py with a hook that EXPLAINs (ANALYZE) every SELECT they send,
then the retention (relay.retention.Pruner: a month of messages past the limit, the state
history thinned) with each of its statements EXPLAINed once (DELETEs without ANALYZE) and each
batch delete timed; prints each plan's shape and time. It fails when a query reads the
messages or state_history table by a sequential scan.
"""

from __future__ import annotations

import argparse
import re
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
from relay.config import RetentionConfig  # noqa: E402
from relay.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from relay.permissions import Access  # noqa: E402
from relay.retention import Pruner  # noqa: E402

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

        seen: set[str] = set()

        def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            verb = statement.lstrip().split(None, 1)[0].upper()
            if not label[0] or verb not in ("SELECT", "DELETE"):
                return
            table = re.search(r"\bFROM (\w+)", statement)
            if label[0].startswith("prune"):  # each statement on a table of the retention once
                if statement in seen or table is None:
                    return
                seen.add(statement)
            # A DELETE's plan without running it (ANALYZE would delete the batch).
            how = "ANALYZE, COSTS OFF" if verb == "SELECT" else "COSTS OFF"
            cursor.execute(f"EXPLAIN ({how}) " + statement, params)
            name = label[0] if not label[0].startswith("prune") else \
                f"{label[0]}: {verb} {table.group(1) if table else ''}"
            plans.append((name, "\n".join(r[0] for r in cursor.fetchall())))

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
        # The retention on the same rows: a month of messages (~4 % of them) past messages_days,
        # the state history thinned to one row a day per car after 7 days. Each batch is a
        # transaction of its own: its time is how long its rows stay locked (the ingest never
        # touches those old rows; it inserts others).
        batches: list[float] = []

        def started(conn: Any, *_: Any) -> None:
            conn.info["t0"] = time.perf_counter()

        def finished(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("DELETE"):
                batches.append(time.perf_counter() - conn.info["t0"])

        event.listen(engine, "before_cursor_execute", started)
        event.listen(engine, "after_cursor_execute", finished)
        label[0] = "prune"
        t1 = time.monotonic()
        pruned = Pruner(sessions, RetentionConfig(messages_days=700, state_downsample_s=86400,
                                                  state_raw_days=7)).prune(NOW)
        prune_s = time.monotonic() - t1
        label[0] = ""
        event.remove(engine, "before_cursor_execute", explain)
        event.remove(engine, "before_cursor_execute", started)
        event.remove(engine, "after_cursor_execute", finished)
        batches.sort()
        print(f"prune: {dict(pruned)} in {prune_s:.1f} s, {len(batches)} batch deletes of at most "
              f"2,000 rows: median {1000 * batches[len(batches) // 2]:.0f} ms, longest "
              f"{1000 * batches[-1]:.0f} ms" if batches else "prune: nothing deleted")
        seq_scans = []
        for name, plan in plans:
            ms = (plan.rsplit("Execution Time: ", 1)[-1].strip() if "Execution Time" in plan
                  else "(plan only)")
            shape = [line.strip() for line in plan.splitlines()
                     if any(k in line for k in ("Scan", "Sort", "Aggregate", "Limit", "Join",
                                                "Loop"))]
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
