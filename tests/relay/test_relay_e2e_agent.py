"""End to end with the real agent: `carfriend run --simulate` (agent + simulator, one process)
publishes to Mosquitto, the relay shows its charge.started, the owner answers "later" on the web,
and the agent's signed-command handler schedules the charge and confirms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from relay_testkit import SseReader, csrf_of, login, start_simulated_agent, stop_agent, wait_until
from sqlalchemy import select

from relay.admin import add_vehicles, grant
from relay.models import Command, Message
from relay.server import Relay

ROOT = Path(__file__).resolve().parents[2]
AGENT_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"
VEHICLE = "carfriend-ev-0001"
# The relay on one database: these tests are about the browser, the agent or the broker.
pytestmark = [pytest.mark.slow, pytest.mark.backends("sqlite")]


def test_owner_answers_later_and_the_real_agent_schedules_the_charge(relay: Relay,
                                                                     tmp_path: Path) -> None:
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, [VEHICLE], name="Kit", generate_key=True)
        grant(s, "alice", "owner", VEHICLE)
    agent, log = start_simulated_agent(relay, tmp_path, VEHICLE)
    try:
        alice = login(relay, "alice")
        live = SseReader(login(relay, "alice"), f"/v/{VEHICLE}/events")

        def question() -> Message | None:
            with relay.ctx.sessions() as s:
                return s.scalars(select(Message).where(Message.vehicle_id == VEHICLE,
                                                       Message.kind == "charge.started")).first()

        asked = wait_until(question, 60, "the agent's charge.started at the relay")
        assert asked.question and "later" in asked.question and asked.data.get("eta")
        wait_until(lambda: any("charge.started" in d for d in live.of("item")), 10,
                   "charge.started on the live stream")
        token = csrf_of(alice.get(f"/v/{VEHICLE}").text)
        r = alice.post(f"/v/{VEHICLE}/reply", headers={"accept": "application/json"},
                       data={"csrf": token, "message_id": asked.msg_id, "answer": "later"})
        assert r.status_code == 200, r.text

        def status() -> str:
            with relay.ctx.sessions() as s:
                cmd = s.scalars(select(Command)).one()
                return cmd.status if cmd.status in ("completed", "rejected", "failed") else ""

        final = wait_until(status, 60, "the agent's final result")
        assert final == "completed", (tmp_path / "agent.log").read_text()[-3000:]
        wait_until(lambda: "completed" in [json.loads(d)["status"] for d in live.of("command")],
                   10, "completed on the live stream")
        wait_until(lambda: any("charge.scheduled" in d for d in live.of("item")), 30,
                   "the car's confirmation on the live stream")
        live.close()
    finally:
        stop_agent(agent, log)


def test_fleet_sim_cars_reach_the_relay(relay: Relay, tmp_path: Path) -> None:
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, ["sim-0001", "sim-0002"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fleet-sim", "--config", str(AGENT_CONFIG),
         "--vehicles", "2", "--speed", "60", "--scenario", "plugged-in-at-home",
         "--host", relay.config.mqtt.host, "--port", str(relay.config.mqtt.port),
         "--state-dir", str(tmp_path / "fleet"), "--duration", "6"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]

    def kinds() -> set[tuple[str, str]]:
        with relay.ctx.sessions() as s:
            return {(v, k) for v, k in s.execute(select(Message.vehicle_id, Message.kind))}

    wait_until(lambda: {("sim-0001", "charge.started"), ("sim-0002", "charge.started")} <= kinds(),
               10, "charge.started from both simulated cars")
