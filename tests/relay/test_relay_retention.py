"""Retention on SQLite and PostgreSQL: a simulated month of 1,000 cars stays within what the
config keeps, pruning in small transactions never holds the ingest up, the schedule and the
`prune` command run it, and the thinning rule itself (plain values)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relay_testkit import add_message, count_rows, relay_config, wait_until
from sqlalchemy import func, insert, select

from relay.admin import add_vehicles
from relay.cli import cmd_prune
from relay.config import RelayConfig, RetentionConfig
from relay.db import make_engine, make_sessionmaker, migrate
from relay.models import (
    Command,
    CommandResult,
    FleetReport,
    Message,
    StateRecord,
    Vehicle,
    utcnow,
)
from relay.retention import Pruner, thin
from relay.server import Relay
from relay.store import add_messages

DAY0 = datetime(2026, 1, 1)


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 20_000)), max_size=60))
def test_thinning_keeps_the_first_row_of_each_vehicles_slot_and_nothing_else(
        rows: list[tuple[str, int]]) -> None:
    ordered = sorted((vid, DAY0 + timedelta(seconds=s), seq) for seq, (vid, s) in enumerate(rows))
    doomed = set(thin([(seq, vid, ts) for vid, ts, seq in ordered], 900))
    kept = [(vid, ts) for vid, ts, seq in ordered if seq not in doomed]
    slots = [(vid, int((ts - DAY0).total_seconds()) // 900) for vid, ts in kept]
    assert len(slots) == len(set(slots))  # one row per vehicle and slot
    assert set(slots) == {(vid, int((ts - DAY0).total_seconds()) // 900) for vid, ts, _ in ordered}
    for vid, ts in kept:  # and it is the slot's first row
        slot = int((ts - DAY0).total_seconds()) // 900
        assert ts == min(t for v, t, _ in ordered
                         if v == vid and int((t - DAY0).total_seconds()) // 900 == slot)


@pytest.fixture
def sessions(tmp_path: Path, db_url: str | None) -> Any:
    engine = make_engine(db_url or f"sqlite:///{tmp_path / 'relay.db'}")
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _insert(s: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    s.execute(insert(model), rows)  # executemany: compiled once, batched by the driver


def _one_day(s: Any, cars: list[str], day: int) -> None:
    """What 1,000 cars leave in a day, reduced: 12 state rows 5 minutes apart (an hour of
    driving), 2 messages, 2 fleet reports, a command and its result."""
    start = DAY0 + timedelta(days=day, hours=8)
    _insert(s, StateRecord, [
        dict(vehicle_id=v, ts=start + timedelta(minutes=5 * i), received_at=start,
             signals={"Vehicle.Speed": {"value": i}}) for v in cars for i in range(12)])
    _insert(s, Message, [
        dict(vehicle_id=v, vseq=2 * day + k + 1, msg_id=f"{day}-{k}", ts=start,
             received_at=start + timedelta(hours=k), kind="battery.low", severity="info",
             visibility="private", text="hi", locale="en", persona="", data={})
        for v in cars for k in range(2)])
    _insert(s, FleetReport, [
        dict(vehicle_id=v, received_at=start + timedelta(hours=k), dedup_key=f"{day}-{k}",
             report={"kind": "outbox.status"}) for v in cars for k in range(2)])
    _insert(s, Command, [
        dict(id=f"{v}-{day}", vehicle_id=v, name="ping", args={}, issued_at=start,
             status="completed", updated_at=start) for v in cars])
    _insert(s, CommandResult, [
        dict(vehicle_id=v, command_id=f"{v}-{day}", name="ping", status="completed",
             ts=start, received_at=start) for v in cars])


def _count(sessions: Any, model: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.slow
def test_a_month_of_1000_cars_stays_within_what_the_retention_keeps(sessions: Any) -> None:
    cars = [f"car-{i:04d}" for i in range(1000)]
    with sessions() as s:
        add_vehicles(s, RelayConfig(), cars)
    days, history = 30, []
    # Shorter than the defaults for commands and fleet reports, so a month sees them pruned
    # too; batches big enough that SQLite's pauses for the ingest do not slow the test.
    pruner = Pruner(sessions, RetentionConfig(commands_days=20, fleet_reports_days=20,
                                              batch_rows=100_000))
    for day in range(days):
        with sessions() as s, s.begin():
            _one_day(s, cars, day)
        pruner.prune(DAY0 + timedelta(days=day + 1))  # the nightly run
        history.append(_count(sessions, StateRecord))
    # 7 days at full resolution (12 rows a day), the 23 days before thinned to 4 rows (08:00,
    # 08:15, 08:30, 08:45): the history grows by 4 rows a car-day, not 12.
    assert history[-1] == 1000 * (7 * 12 + 23 * 4)
    assert history[-1] - history[-8] == 7 * 1000 * 4
    assert _count(sessions, FleetReport) == 1000 * 2 * 20
    assert _count(sessions, Command) == _count(sessions, CommandResult) == 1000 * 20
    assert _count(sessions, Message) == 1000 * 2 * days  # 2 years: none old enough yet
    # A second run at the same time finds nothing more to delete.
    assert not pruner.prune(DAY0 + timedelta(days=days))


def test_pruning_never_holds_the_ingest_up(sessions: Any) -> None:
    """Delete 60,000 old messages while a writer commits a message every 10 ms: no commit
    waits longer than a second (each delete is a transaction of batch_rows, 2,000, rows)."""
    with sessions() as s:
        add_vehicles(s, RelayConfig(), ["car-a", "car-b"])
    old = DAY0 - timedelta(days=1000)
    with sessions() as s, s.begin():
        _insert(s, Message, [dict(vehicle_id="car-a", vseq=i + 1, msg_id=f"old-{i}", ts=old,
                                  received_at=old, kind="k", severity="info", visibility="private",
                                  text="old", locale="en", persona="", data={})
                             for i in range(60_000)])
        s.execute(Vehicle.__table__.update().where(Vehicle.id == "car-a").values(msg_seq=60_000))
    result: dict[str, Any] = {}
    pruning = threading.Thread(target=lambda: result.update(
        Pruner(sessions, RetentionConfig()).prune(utcnow())))
    pruning.start()
    waits, i = [], 0
    while pruning.is_alive() and i < 5000:
        started = time.monotonic()
        with sessions() as s, s.begin():
            add_messages(s, [dict(vehicle_id="car-b", msg_id=f"new-{i}", ts=utcnow(),
                                  received_at=utcnow(), kind="k", severity="info",
                                  visibility="private", text="new", locale="en", persona="",
                                  data={})])
        waits.append(time.monotonic() - started)
        i += 1
        time.sleep(0.01)
    pruning.join(120)
    assert result["messages"] == 60_000 and len(waits) >= 3
    assert max(waits) < 1.0, sorted(waits)[-5:]
    assert _count(sessions, Message) == i


def test_the_relay_prunes_on_its_schedule_and_the_command_prunes_on_demand(
        tmp_path: Path, mosquitto: Any, db_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = Relay(relay_config(tmp_path, mosquitto, db_url,
                               retention={"interval_s": 0.3, "messages_days": 1}))
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, ["car-a"])
    old, now = utcnow() - timedelta(days=2), utcnow()
    add_message(relay, vehicle_id="car-a", msg_id="old", ts=old, received_at=old, kind="k",
                severity="info", visibility="private", text="old", data={})
    add_message(relay, vehicle_id="car-a", msg_id="new", ts=now, kind="k", severity="info",
                visibility="private", text="new", data={})
    relay.start()
    try:
        wait_until(lambda: count_rows(relay, Message) == 1, 10, "the schedule to prune")
        assert count_rows(relay, Message, msg_id="new") == 1
    finally:
        relay.stop()
    # The command, on the same database: a message 3 days old goes.
    add_message(relay, vehicle_id="car-a", msg_id="old-2", ts=old, received_at=old - timedelta(
        days=1), kind="k", severity="info", visibility="private", text="old", data={})
    import argparse

    assert cmd_prune(argparse.Namespace(config=tmp_path / "relay.toml")) == 0
    assert "messages: 1 deleted" in capsys.readouterr().out
    assert count_rows(relay, Message) == 1


def test_one_prune_at_a_time_whichever_instance_starts_it(tmp_path: Path,
                                                          db_url: str | None) -> None:
    """Two relay instances (two engines on one database) prune at the same moment: one does the
    work, the other skips; every old row is deleted once, nothing else is, nothing is left."""
    url = db_url or f"sqlite:///{tmp_path / 'relay.db'}"
    engines = [make_engine(url) for _ in range(3)]
    migrate(engines[0])
    first, second, third = (Pruner(make_sessionmaker(e), RetentionConfig(batch_rows=500))
                            for e in engines)
    sessions = first.sessions
    with sessions() as s:
        add_vehicles(s, RelayConfig(), ["car-a"])
    old, new = DAY0 - timedelta(days=1000), utcnow()
    with sessions() as s, s.begin():
        _insert(s, Message, [dict(vehicle_id="car-a", vseq=i + 1, msg_id=f"m-{i}",
                                  ts=old if i < 6000 else new, received_at=old if i < 6000 else new,
                                  kind="k", severity="info", visibility="private", text="t",
                                  locale="en", persona="", data={}) for i in range(6100)])
    try:
        # Another instance holds the prune: this one skips and deletes nothing.
        with third.exclusive() as mine:
            assert mine
            assert first.prune(utcnow()) == {} and first.skipped == 1
            assert _count(sessions, Message) == 6100
        # Both at once.
        results: list[dict[str, int]] = []
        start = threading.Barrier(2)

        def run(pruner: Pruner) -> None:
            start.wait(10)
            results.append(dict(pruner.prune(utcnow())))

        threads = [threading.Thread(target=run, args=(p,)) for p in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(results, key=len) == [{}, {"messages": 6000}], results
        assert first.skipped + second.skipped == 2, "the second run did not see the first's lock"
        assert _count(sessions, Message) == 100
        # The lock is free again once a run is over.
        assert third.prune(utcnow()) == {} and third.skipped == 0
    finally:
        for e in engines:
            e.dispose()
