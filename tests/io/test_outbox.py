"""The durable outbox on a real SQLite file: nothing lost or reordered, capped, corruption survived."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.io.outbox import SqliteOutbox


def test_put_is_idempotent_by_id_and_survives_reopening(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    assert box.put("a", "t", b"1", "info", 1.0) is True
    assert box.put("a", "t", b"1", "info", 1.0) is False
    box.close()
    box = SqliteOutbox(tmp_path / "o.db")
    assert [e.id for e in box.pending(10)] == ["a"]


def test_backlog_drains_most_severe_first_in_order_within_severity(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    for i, sev in enumerate(["info", "warning", "info", "critical", "warning", "critical"]):
        box.put(f"m{i}", "t", b"x", sev, float(i))
    assert [e.id for e in box.pending(10)] == ["m3", "m5", "m1", "m4", "m0", "m2"]
    assert [e.id for e in box.pending(2, exclude={box.pending(1)[0].seq})] == ["m5", "m1"]


def test_cap_drops_oldest_low_severity_first_never_critical(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db", max_messages=100)
    for i in range(60):
        box.put(f"c{i}", "t", b"x", "critical", float(i))
    for i in range(30):
        box.put(f"w{i}", "t", b"x", "warning", float(i))
    for i in range(50):
        box.put(f"i{i}", "t", b"x", "info", float(i))
    ids = {e.id for e in box.pending(1000)}
    assert {f"c{i}" for i in range(60)} <= ids and len(ids) == 100
    assert {f"i{i}" for i in range(40, 50)} <= ids and "i0" not in ids  # oldest info went first
    assert box.status()["dropped"] == {"info": 40, "warning": 0}
    for i in range(60, 200):
        box.put(f"c{i}", "t", b"x", "critical", float(i))
    status = box.status()
    assert status["queued"]["critical"] == 200  # over the cap rather than silently dropped
    assert status["dropped"] == {"info": 50, "warning": 30}


def test_corrupt_outbox_is_kept_aside_and_a_new_one_started(tmp_path: Path, caplog) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    box = SqliteOutbox(path)
    assert box.put("a", "t", b"x", "info", 0.0)
    aside = list(tmp_path.glob("outbox.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert any("UNREADABLE" in r.message for r in caplog.records)


def test_a_commit_is_durable_before_put_returns(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    box.put("a", "t", b"x", "info", 0.0)
    # Another connection (another process after a crash) sees it without any close or checkpoint.
    other = sqlite3.connect(str(tmp_path / "o.db"))
    assert other.execute("SELECT id FROM outbox").fetchall() == [("a",)]
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class OutboxMachine(RuleBasedStateMachine):
    """put / ack / crash-and-reopen in any order: the queue is always exactly what was put and
    not acknowledged, in severity-then-put order."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp())
        self.box = SqliteOutbox(self.dir / "o.db")
        self.model: list[tuple[str, str]] = []  # (id, severity) in put order
        self.n = 0

    @rule(severity=st.sampled_from(["info", "warning", "critical"]), repeat=st.booleans())
    def put(self, severity: str, repeat: bool) -> None:
        if repeat and self.model:
            msg_id, severity = self.model[-1]
            assert self.box.put(msg_id, "t", b"p", severity, 0.0) is False
            return
        self.n += 1
        msg_id = f"m{self.n}"
        assert self.box.put(msg_id, "t", b"p", severity, float(self.n)) is True
        self.model.append((msg_id, severity))

    @rule(k=st.integers(min_value=1, max_value=3))
    def ack_next(self, k: int) -> None:
        for entry in self.box.pending(k):
            self.box.ack(entry.seq)
            self.model = [m for m in self.model if m[0] != entry.id]

    @rule()
    def crash_and_reopen(self) -> None:
        # No close(): what a SIGKILL leaves behind (the connection simply goes away).
        self.box = SqliteOutbox(self.dir / "o.db")

    @invariant()
    def queue_matches_model(self) -> None:
        rank = {"critical": 0, "warning": 1, "info": 2}
        expected = [m[0] for m in sorted(self.model, key=lambda m: rank[m[1]])]
        assert [e.id for e in self.box.pending(10_000)] == expected


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
