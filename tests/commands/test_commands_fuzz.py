"""The agent's command topics as a trust boundary: fuzzed payloads through a real Mosquitto into a
running agent on a python-can virtual bus, with a second bus watching for command frames."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import can
import paho.mqtt.client as mqtt
import pytest
from frames import EV_CONFIG, car_frames, message
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from mqtt_helpers import Mosquitto, Recorder

from agent.cli.command import signed_payload
from agent.cli.daemon import Agent
from agent.commands.protocol import COMMANDS, sign
from agent.profile.config import load_config

pytestmark = pytest.mark.slow
VID = "carfriend-ev-0001"
KEY = "fuzz-test-key-0123456789abcdef01"
COMMAND_FRAME_IDS = frozenset({0x6A0, 0x6A1, 0x6A2, 0x6A3})  # TCU_*Cmd in dbc/carfriend_ev.dbc
ZEROS = "0" * 64


class LiveAgent:
    """carfriend's daemon (agent.cli.daemon.Agent) on its own thread, on a virtual bus, against a real
    broker; a feeder plays the parked car's status frames, a watcher records what the agent sends."""

    def __init__(self, mosquitto: Mosquitto, state_dir: Path, channel: str, env: dict[str, str] | None = None) -> None:
        environ = {"CARFRIEND_MQTT__HOST": mosquitto.host, "CARFRIEND_MQTT__PORT": str(mosquitto.port),
                   "CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(state_dir),
                   "CARFRIEND_COMMANDS__RATE_PER_MINUTE": "100000", **(env or {})}
        self.agent = Agent(load_config(EV_CONFIG, environ=environ))
        self.error: BaseException | None = None
        self.worker = threading.Thread(target=self._run, daemon=True)
        self.worker.start()
        deadline = time.monotonic() + 20
        while self.agent.uplink is None or not self.agent.uplink.connected.is_set():
            assert self.worker.is_alive() and time.monotonic() < deadline, "the agent did not come up"
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:  # what would have ended `carfriend run` with exit 1
            self.error = exc
            raise

    @property
    def alive(self) -> bool:
        return self.worker.is_alive() and self.error is None

    def stop(self) -> None:
        self.agent.request_stop()
        self.worker.join(20)
        assert not self.worker.is_alive()


class Car:
    """The car's side of the bus: status frames every 0.1 s (parked unless told), and a watcher."""

    def __init__(self, channel: str) -> None:
        self.tx = can.Bus(interface="virtual", channel=channel)
        self.watch = can.Bus(interface="virtual", channel=channel)
        self.status: dict[str, Any] = {"soc": 80.0}
        self.speed_raw: bytes | None = None  # a raw Drive_State payload instead of the status speed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        while not self._stop.wait(0.1):
            frames = car_frames(time.time(), **self.status)
            if self.speed_raw is not None:
                frames[-1] = can.Message(timestamp=time.time(), arbitration_id=0xA0, data=self.speed_raw,
                                         is_extended_id=False)
            for frame in frames:
                self.tx.send(frame)

    def command_frames(self) -> list[can.Message]:
        out = []
        while (msg := self.watch.recv(0.0)) is not None:
            if msg.arbitration_id in COMMAND_FRAME_IDS:
                out.append(msg)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.tx.shutdown()
        self.watch.shutdown()


class Cloud:
    """The owner's side: publishes on the car's command topics, records its results."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.recorder = Recorder(mosquitto.host, mosquitto.port, [f"carfriend/v1/{VID}/cmd/+/result",
                                                                  f"carfriend/v1/{VID}/messages"])
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        self.n = 0

    def publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(f"carfriend/v1/{VID}/cmd/{name}", payload, qos=1, retain=retain)
        assert info.wait_for_publish(5) is None and info.is_published()

    def results(self, cid: str) -> list[dict[str, Any]]:
        return [d for p in self.recorder.payloads("/result") for d in [json.loads(p)] if d["id"] == cid]

    def send(self, name: str, args: dict[str, Any] | None = None, *, final: tuple[str, ...] = ("completed", "rejected",
             "failed"), timeout: float = 15.0) -> list[dict[str, Any]]:
        """A valid signed command; its results once one of `final` came (or what came in `timeout`)."""
        self.n += 1
        cid = f"good-{self.n}-{time.monotonic_ns()}"
        self.publish(name, json.dumps(signed_payload(KEY.encode(), VID, name, args or {}, cid)).encode())
        self.recorder.wait_for(lambda r: any(d["status"] in final for d in self.results(cid)), timeout)
        return self.results(cid)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.recorder.close()


@pytest.fixture
def rig(mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """rig(**env) -> (LiveAgent, Car, Cloud) on one broker and bus; everything is closed afterwards."""
    monkeypatch.setenv("CARFRIEND_COMMAND_KEY", KEY)
    channel = f"fuzz-{time.monotonic_ns()}"
    car, cloud = Car(channel), Cloud(mosquitto)
    agents: list[LiveAgent] = []

    def start(**env: str) -> tuple[LiveAgent, Car, Cloud]:
        agents.append(LiveAgent(mosquitto, tmp_path / "state", channel, env))
        for _ in range(5):  # until the agent's subscription is in place
            if cloud.send("ping", timeout=2.0):
                break
        else:
            raise AssertionError("the agent answers no ping")
        return agents[-1], car, cloud

    yield start
    for a in agents:
        if a.worker.is_alive():
            a.stop()
    car.close()
    cloud.close()


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn about `weight` times as often."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda i: pool[i])


# -- what the fuzzer sends -----------------------------------------------------------------
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)  # lone surrogates too
NASTY_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00", "2099-01-01T00:00:00Z",
               "1970-01-01T00:00:00Z", "", "Z", "2026-13-45T25:61:61Z", "2026-11-22T03:00:00", "\ud800",
               "２０２６-11-22T03:00:00Z", "2026-11-22T03:00:00+99:99", "NaN", "2026-11-22T03:00:00.0000000000001Z",
               "2026-W47-7T03:00Z", "20261122T030000Z", "2026-11-22 03:00:00+00:00", "x" * 5000]
FAR_TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1999, 1, 1)) | st.datetimes(
    min_value=datetime(2200, 1, 1), max_value=datetime(9999, 12, 31))
ZONES = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
TIMES = st.sampled_from(NASTY_TIMES) | st.builds(lambda d, z: d.replace(tzinfo=z).isoformat(), FAR_TIMES, ZONES) | TEXT
NUMBERS = st.integers(-(10**400), 10**400) | st.floats() | st.sampled_from([2**63, -(2**63) - 1, 1e308, 5e-324])
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=12)
LITERALS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"9" * 4400, b"1" + b"0" * 400,
            b"-0", b"1E400", b"0." + b"0" * 500 + b"1", b"tru", b"nul", b'"\\ud800"', b'"\\udfff\\ud800"', b"\xed\xa0\x80"]
# Topic levels Mosquitto accepts (it disconnects a client publishing control characters or
# non-characters); the agent's own name check is what is fuzzed.
NAMES = weighted((4, st.sampled_from(sorted(COMMANDS))), (1, st.text(st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Cn"), exclude_characters="/+#"), max_size=80)))


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: lone surrogates go out as \udXXX escapes


@st.composite
def envelopes(draw: st.DrawFn, name: str) -> bytes:
    """Envelope-shaped: each field right, wrong or missing; sometimes correctly signed."""
    doc: dict[str, Any] = {}
    fields = {"id": weighted((4, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)), (1, VALUES)),
              "issued_at": weighted((4, TIMES), (1, VALUES)),
              "args": weighted((2, st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), SCALARS, max_size=3)),
                               (1, st.dictionaries(TEXT, VALUES, max_size=4)), (1, VALUES)),
              "sig": st.sampled_from([ZEROS, "A" * 64, "0" * 63, ""]) | VALUES}
    for key, strategy in fields.items():
        if draw(st.integers(0, 9)):
            doc[key] = draw(strategy)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(TEXT)] = draw(VALUES)
    if draw(st.integers(0, 2)) and isinstance(doc.get("id"), str) and isinstance(doc.get("issued_at"), str):
        # signed as the cloud would: it passes the signature and reaches the later checks
        with contextlib.suppress(ValueError, TypeError):  # not encodable (a lone surrogate): unsigned
            doc["sig"] = sign(KEY.encode(), VID, name, doc["id"], doc["issued_at"], doc.get("args", {}))
    return _dump(doc)


@st.composite
def payloads(draw: st.DrawFn, name: str) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return _dump(draw(VALUES))
    if kind == 1:
        return draw(envelopes(name))
    if kind == 2:
        depth, where = draw(st.integers(1, 3000)), draw(st.integers(0, 2))
        nested = b"[" * depth + b"]" * depth if draw(st.booleans()) else b'{"a":' * depth + b"1" + b"}" * depth
        return [nested, b'{"id":"deep","issued_at":"2026-11-22T03:00:00Z","args":{"x":%s},"sig":"%s"}'
                % (nested, ZEROS.encode()), b'{"id":%s}' % nested][where]
    if kind == 3:
        literal = draw(st.sampled_from(LITERALS))
        return b'{"id":"lit","issued_at":"2026-11-22T03:00:00Z","args":{"x":%s},"sig":"%s"}' % (literal, ZEROS.encode())
    if kind == 4:
        return draw(st.binary(max_size=600))
    if kind == 5:  # signed and fresh, with arguments no command takes: checked past the signature
        args = draw(st.dictionaries(st.from_regex(r"zz[a-z_]{0,8}", fullmatch=True), SCALARS, min_size=1, max_size=3))
        with contextlib.suppress(ValueError, TypeError):
            return _dump(signed_payload(KEY.encode(), VID, name, args, f"fresh-{time.monotonic_ns()}"))
        return b"{}"
    if kind == 6:  # around and past the size limit
        return b'{"id":"big","pad":"' + b"a" * draw(st.integers(3900, 70000)) + b'"}'
    return draw(envelopes(name))[: draw(st.integers(0, 200))]  # truncated


BATCH = st.lists(st.tuples(NAMES, st.booleans()).flatmap(
    lambda nr: st.tuples(st.just(nr[0]), payloads(nr[0]), st.just(nr[1]))), min_size=1, max_size=6)
REVIEW = [("ping", b'{"id":"k1","issued_at":"\\ud800","args":{},"sig":"%s"}' % ZEROS.encode(), False),
          *[("climate.start", b'{"id":"deep-%d","issued_at":"2026-11-22T03:00:00Z","args":{"x":%s},"sig":"%s"}'
             % (d, b"[" * d + b"]" * d, ZEROS.encode()), False) for d in range(940, 1000, 2)]]


def test_fuzzed_command_payloads_never_stop_the_agent_nor_send_a_frame(rig: Callable[..., Any]) -> None:
    live, car, cloud = rig()
    retained: dict[str, bytes] = {}  # topic level -> the broker's retained payload

    @settings(max_examples=int(os.environ.get("CARFRIEND_FUZZ_EXAMPLES", "40")), deadline=None,
              phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking against a live agent
              suppress_health_check=list(HealthCheck))
    @example(batch=REVIEW)
    @example(batch=[(n, p, True) for n, p, _ in REVIEW[:2]])
    @given(batch=BATCH)
    def one_batch(batch: list[tuple[str, bytes, bool]]) -> None:
        for name, payload, retain in batch:
            cloud.publish(name, payload, retain=retain)
            if retain:
                retained[name] = payload  # an empty one deletes it
        results = cloud.send("ping")  # the agent takes them in order: the bad ones came first
        assert live.alive, f"the agent stopped: {live.error!r}"
        assert [r["status"] for r in results] == ["completed"], results
        assert car.command_frames() == []

    one_batch()
    assert live.agent.commands is not None
    counts = live.agent.commands.counts  # the review's payloads: one answered, the deep ones dropped
    assert counts["rejected"] >= 1 and counts["dropped: payload nested more than 4 levels deep"] >= 30, counts
    # The car still obeys a valid command (and only then sends a frame).
    results = cloud.send("climate.start", {"target_c": 21}, final=("accepted", "rejected"))
    assert [r["status"] for r in results][:1] == ["accepted"], results
    assert [f.arbitration_id for f in car.command_frames()] == [0x6A0]

    # A restart: every retained payload comes again, flagged retained, and is ignored.
    live.stop()
    kept = sum(1 for p in retained.values() if p)
    assert kept
    live, _, _ = rig()
    assert cloud.send("ping")[-1]["status"] == "completed"
    assert live.alive and car.command_frames() == []
    assert live.agent.uplink is not None and live.agent.uplink.retained_commands >= kept


def test_a_not_available_speed_refuses_an_actuation_until_a_valid_reading_comes(rig: Callable[..., Any]) -> None:
    live, car, cloud = rig()
    assert cloud.send("climate.start", {"target_c": 21}, final=("accepted", "rejected"))[0]["status"] == "accepted"
    car.speed_raw = bytes(message(0, "Drive_State", VehicleSpeed=655.35, Gear="P").data)  # raw 0xFFFF: not available
    time.sleep(0.5)
    refused = cloud.send("climate.start", {"target_c": 22}, final=("accepted", "rejected"))
    assert refused[0]["status"] == "rejected" and "speed unknown or stale" in refused[0]["reason"]
    car.speed_raw = None
    time.sleep(0.5)
    assert cloud.send("climate.start", {"target_c": 22}, final=("accepted", "rejected"))[0]["status"] == "accepted"
    assert [f.arbitration_id for f in car.command_frames()] == [0x6A0, 0x6A0]


def test_a_silent_bus_refuses_an_actuation_within_the_interlock_limit(rig: Callable[..., Any]) -> None:
    live, car, cloud = rig(CARFRIEND_COMMANDS__INTERLOCK_MAX_AGE_S="1.0")
    car._stop.set()  # the bus goes quiet: speed and gear age on the agent's clock
    time.sleep(1.5)
    refused = cloud.send("climate.start", {"target_c": 21}, final=("accepted", "rejected"))
    assert refused[0]["status"] == "rejected" and "unknown or stale" in refused[0]["reason"]
    assert car.command_frames() == []


def test_reply_later_cannot_schedule_when_charge_schedule_is_not_allowed(rig: Callable[..., Any]) -> None:
    live, car, cloud = rig(CARFRIEND_COMMANDS__ALLOWLIST='["reply", "ping"]', CARFRIEND_RULES__CHARGING__SETTLE_S="0.5")
    car.status = {"soc": 60.0, "charging": True, "plugged": True, "power_kw": 7.0}
    assert cloud.recorder.wait_for(lambda r: any(m["kind"] == "charge.started" for m in r.json("/messages")), 30)
    started = next(m for m in cloud.recorder.json("/messages") if m["kind"] == "charge.started")
    assert started["question"] == ["ok", "later"]
    later = cloud.send("reply", {"message_id": started["id"], "answer": "later"})
    assert later[-1]["status"] == "rejected" and "charge.schedule is not on this vehicle's allowlist" in later[-1]["reason"]
    assert car.command_frames() == []
    ok = cloud.send("reply", {"message_id": started["id"], "answer": "ok"})  # still open: answered now
    assert ok[-1]["status"] == "completed"
    assert live.alive
