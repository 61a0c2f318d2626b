"""The store on SQLite and on a real PostgreSQL: migrations, concurrent writers (two relay
instances), commit-ordered message numbers, NUL at the boundary, round trips per batch."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from relay_testkit import (
    BACKENDS,
    CarPublisher,
    base_url,
    count_rows,
    csrf_of,
    login,
    persona_message,
    wait_until,
)
from sqlalchemy import event, func, inspect, select, text

from relay import queries
from relay.admin import add_vehicles
from relay.config import IngestConfig, MqttConfig, RelayConfig
from relay.db import alembic_config, make_engine, make_sessionmaker, migrate
from relay.hub import Hub
from relay.ingest import Inbound, InboundMessage, InboundState, Limits, parse
from relay.livebus import LiveBus
from relay.models import Message, StateRecord, Vehicle, utcnow
from relay.mqtt import MqttIngest
from relay.permissions import Access
from relay.server import Relay

SIGNAL = "Vehicle.Cabin.Sensor{:03d}"
OWNER = Access(frozenset({"owner"}))


@pytest.fixture(params=BACKENDS)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The URL of an empty database (no schema) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relay.db'}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


def test_migrations_build_the_schema_from_an_empty_database(empty_db: str) -> None:
    engine = make_engine(empty_db)
    migrate(engine)
    migrate(engine)  # idempotent
    tables = set(inspect(engine).get_table_names())
    assert {"vehicles", "messages", "state_history", "login_failures", "relay_settings",
            "web_sessions"} <= tables
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            kinds = dict(conn.execute(text(
                "SELECT table_name || '.' || column_name, data_type FROM "
                "information_schema.columns WHERE column_name IN ('seq', 'message_seq') "
                "AND table_schema = 'public'")).all())
            assert set(kinds.values()) == {"bigint"}, kinds  # notify_cursor too
            seq_type = conn.execute(text(
                "SELECT data_type FROM information_schema.sequences "
                "WHERE sequence_name = 'state_history_seq_seq'")).scalar()
            assert seq_type == "bigint"
    engine.dispose()


def test_upgrading_from_the_previous_revision_keeps_the_messages_in_order(empty_db: str) -> None:
    from alembic import command

    engine = make_engine(empty_db)
    cfg = alembic_config(empty_db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(text("INSERT INTO vehicles (id, name, created_at, public_feed, revision) "
                          "VALUES ('car-a', '', '2026-01-01', false, 0), "
                          "('car-b', '', '2026-01-01', false, 0)"))
        for i, vid in enumerate(["car-a", "car-b", "car-a", "car-a"]):
            conn.execute(text(
                "INSERT INTO messages (vehicle_id, msg_id, ts, received_at, kind, severity, "
                "visibility, text, locale, persona, data) VALUES (:v, :m, '2026-01-01', "
                "'2026-01-01', 'battery.low', 'warning', 'private', :t, 'en', '', '{}')"),
                {"v": vid, "m": f"m{i}", "t": f"old {i}"})
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        old = [m.text for m in queries.timeline_messages(s, "car-a", OWNER)]
        assert old == ["old 0", "old 2", "old 3"]
        assert s.get(Vehicle, "car-a").msg_seq == 4  # type: ignore[union-attr]
    # A new message continues after the old ones; a browser's old cursor stays valid.
    store = _store_one(sessions, "car-a", "new one")
    assert store == ["old 0", "old 2", "old 3", "new one"]
    # And down again to the previous revision and back.
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    migrate(engine)
    engine.dispose()


def _store_one(sessions: Any, vid: str, words: str) -> list[str]:
    from relay.store import Store

    msg = persona_message(vid, text=words)
    rec = parse(f"carfriend/v1/{vid}/messages", json.dumps(msg).encode(),
                Limits(), utcnow())
    with sessions() as s, s.begin():
        Store(0).apply(s, [rec], utcnow())
    with sessions() as s:
        return [m.text for m in queries.timeline_messages(s, vid, OWNER)]


# -- two writers, as two relay instances would be ------------------------------------------

@pytest.fixture
def two_ingests(tmp_path: Path, db_url: str | None) -> Any:
    """Two ingest workers (not connected to a broker) on one database, as two relay instances."""
    url = db_url or f"sqlite:///{tmp_path / 'relay.db'}"
    engines = [make_engine(url) for _ in range(2)]
    migrate(engines[0])
    sessions = [make_sessionmaker(e) for e in engines]
    with sessions[0]() as s:
        add_vehicles(s, RelayConfig(), [f"car-{i}" for i in range(8)])
    cfg = IngestConfig(state_history_min_interval_s=0, max_signals=1000)
    ingests = [MqttIngest(MqttConfig(client_id=f"relay-{n}"), sessions[n],
                          LiveBus(Hub(), engines[n].url), cfg) for n in range(2)]
    yield ingests
    for e in engines:
        e.dispose()


def _run_both(work: Any) -> None:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def _delta(vid: str, ts: Any, signal: int) -> Inbound:
    iso = ts.isoformat(timespec="milliseconds") + "Z"
    doc = {"ts": iso, "full": False, "signals": {SIGNAL.format(signal): {"value": signal,
                                                                         "ts": iso}}}
    return Inbound(vid, "state", _state(doc, Limits(max_signals=1000)))


def _state(doc: dict[str, Any], limits: Limits | None = None) -> InboundState:
    return InboundState.model_validate_json(
        json.dumps(doc), context={"now": utcnow(), "limits": limits or Limits()})


def test_a_burst_of_deltas_split_over_two_instances_keeps_every_signal(two_ingests: Any) -> None:
    """300 deltas of one car, each a new signal with its own time, dealt alternately to two
    writers in batches of 3 that run at once (a shared subscription does that): every signal is
    in the final state. Before row locks and per-signal times two instances kept 151 of 300."""
    base = utcnow() - timedelta(minutes=10)
    deltas = [_delta("car-0", base + timedelta(milliseconds=10 * i), i) for i in range(300)]
    batches = [deltas[i:i + 3] for i in range(0, 300, 3)]

    def work(n: int) -> None:
        for batch in batches[n::2]:
            assert two_ingests[n]._commit(batch) == {"car-0"}

    _run_both(work)
    with two_ingests[0].sessions() as s:
        vehicle = s.get(Vehicle, "car-0")
        assert vehicle is not None and vehicle.state is not None
        assert sorted(int(k[-3:]) for k in vehicle.state) == list(range(300))
        assert vehicle.state_at == deltas[-1].body.ts
    assert all(not i.dropped for i in two_ingests), [dict(i.dropped) for i in two_ingests]


def test_two_writers_touching_cars_in_opposite_orders_never_deadlock_or_lose_a_delta(
        two_ingests: Any) -> None:
    base = utcnow() - timedelta(minutes=10)
    cars = [f"car-{i}" for i in range(8)]

    def work(n: int) -> None:
        order = cars if n == 0 else cars[::-1]
        for r in range(40):
            ts = base + timedelta(milliseconds=2 * r + n)  # interleaved in time as well
            two_ingests[n]._commit([_delta(v, ts, 100 * n + r) for v in order])

    _run_both(work)
    with two_ingests[0].sessions() as s:
        for vid in cars:
            state = s.get(Vehicle, vid).state  # type: ignore[union-attr]
            assert len(state) == 80, (vid, len(state))
    assert all(not i.dropped for i in two_ingests), [dict(i.dropped) for i in two_ingests]


def test_a_late_delta_changes_only_signals_it_has_newer_values_of(two_ingests: Any) -> None:
    base = utcnow() - timedelta(minutes=10)
    ingest = two_ingests[0]
    at = [base + timedelta(seconds=i) for i in range(3)]
    iso = [t.isoformat(timespec="milliseconds") + "Z" for t in at]
    soc, speed = SIGNAL.format(1), SIGNAL.format(2)
    newest = _state({"ts": iso[2], "full": False, "signals": {soc: {"value": 80, "ts": iso[2]}}})
    late = _state({"ts": iso[1], "full": False, "signals": {
        soc: {"value": 81, "ts": iso[1]}, speed: {"value": 50, "ts": iso[1]}}})
    late_full = _state({"ts": iso[0], "full": True, "signals": {soc: {"value": 99, "ts": iso[0]}}})
    for doc in (newest, late, late_full):
        ingest._commit([Inbound("car-1", "state", doc)])
    with ingest.sessions() as s:
        vehicle = s.get(Vehicle, "car-1")
        assert vehicle is not None and vehicle.state is not None
        assert vehicle.state[soc]["value"] == 80 and vehicle.state[speed]["value"] == 50
        assert vehicle.state_at == newest.ts


def _message(vid: str, words: str) -> Inbound:
    msg = persona_message(vid, text=words, id=str(uuid.uuid4()))
    body = InboundMessage.model_validate_json(json.dumps(msg),
                                              context={"now": utcnow(), "limits": Limits()})
    return Inbound(vid, "messages", body)


def count_rows_in(ingest: MqttIngest, model: type) -> int:
    with ingest.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_message_numbers_follow_commit_order_so_a_live_cursor_misses_nothing(
        two_ingests: Any) -> None:
    """Two writers store 2 x 150 messages of one car while a reader polls like a live page
    (vseq > cursor): the reader sees all 300. With the global seq, a row committed after a
    higher one was skipped (81 of 4,500 on the issue's run)."""
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            with two_ingests[0].sessions() as s:
                for m in queries.timeline_messages(s, "car-2", OWNER, cursor, 1000):
                    seen.append(m.vseq)
                    cursor = m.vseq
            if finished:
                return
            time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()

    def work(n: int) -> None:
        for i in range(30):
            two_ingests[n]._commit([_message("car-2", f"w{n}-{i}-{k}") for k in range(5)])

    try:
        _run_both(work)
    finally:
        done.set()
        reader.join(60)
    assert len(seen) == 300 and len(set(seen)) == 300
    assert count_rows_in(two_ingests[0], Message) == 300


def test_a_batch_of_many_cars_takes_a_few_statements_not_a_few_per_car(two_ingests: Any) -> None:
    """store.apply: one locking SELECT, one INSERT per table, one UPDATE for the vehicles,
    whatever the number of cars (the issue's PostgreSQL run did a SELECT and UPDATE per car)."""
    ingest = two_ingests[0]
    base = utcnow() - timedelta(minutes=5)
    batch = [_delta(f"car-{i}", base, i) for i in range(8)] + \
        [_message(f"car-{i}", "hello") for i in range(8)]
    statements: list[str] = []
    engine = ingest.sessions.kw["bind"]

    def count(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", count)
    try:
        ingest._commit(batch)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= 8, statements
    assert count_rows_in(ingest, StateRecord) == 8 and count_rows_in(ingest, Message) == 8


# -- NUL at the boundary -------------------------------------------------------------------

def test_nul_bytes_in_urls_forms_and_payloads_are_refused_at_the_boundary(
        relay: Relay, car: CarPublisher) -> None:
    alice = login(relay, "alice")
    for path in ("/v/%00", "/v/car-a%00", "/public/%00", "/v/%00/events", "/public/car-pub%00x"):
        r = alice.get(path)
        assert r.status_code == 400 and "Traceback" not in r.text, (path, r.status_code)
    anonymous = httpx.Client(base_url=base_url(relay), timeout=10)
    token = csrf_of(anonymous.get("/login").text)
    r = anonymous.post("/login", data={"csrf": token, "username": "ali\x00ce",
                                       "password": "x" * 10})
    assert r.status_code == 400
    # A message whose text holds U+0000 is invalid (never a database error), the next is stored.
    bad = persona_message("car-a", text="nul \u0000 inside")
    car.publish("carfriend/v1/car-a/messages", bad)
    good = car.message("car-a", "battery.ok")
    wait_until(lambda: count_rows(relay, Message, msg_id=good["id"]) == 1, 10, "the next message")
    assert relay.ingest.dropped == {"invalid": 1}
    assert count_rows(relay, Message, msg_id=bad["id"]) == 0
