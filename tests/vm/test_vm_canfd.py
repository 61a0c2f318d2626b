"""CAN FD on a real kernel: 64-byte frames on vcan0 (mtu 72) decoded live by `carfriend run` with
[can] fd = true, to the same state a replay of the same candump log gives on the host."""

from __future__ import annotations

import json
import re
import sys

import pytest
from vmharness import REPO, GuestRun, VirtualMachine

from agent.cli.replay import replay
from agent.core.pipeline import Pipeline
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

pytestmark = pytest.mark.vm

sys.path.insert(0, str(REPO))
from benchmarks import canfd  # noqa: E402  (the FD traffic generator)

PROFILE = REPO / "config" / "vehicles" / "carfriend-ev-fd.toml"
N_FRAMES = 150  # 50 of each 64-byte message


@pytest.fixture(scope="module")
def run(vm: VirtualMachine, guest_python: str, tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    job = tmp_path_factory.mktemp("vm-canfd")
    with (job / "fd.log").open("w") as fh:
        for ts, fid, data in canfd.traffic(N_FRAMES):
            fh.write(f"({ts:.6f}) vcan0 {fid:03X}##1{data.hex().upper()}\n")
    return vm.run("sh tests/vm/guest_canfd.sh", job, timeout_s=600, env={
        "PY": guest_python, "REPO": str(REPO), "GAP_S": "0.02"})


def host_replay(run: GuestRun) -> dict[str, object]:
    pipeline = Pipeline(load_vehicle(load_config(PROFILE, environ={})), lambda m: None)
    replay(pipeline, run.job / "fd.log")
    assert pipeline.decoder.frames == N_FRAMES
    return {path: entry["value"] for path, entry in pipeline.state.snapshot("x")["signals"].items()}


def last_full_state(run: GuestRun) -> dict[str, object]:
    states = []
    for line in run.file("mqtt.txt").splitlines():
        _retain, topic, payload = line.split("\t", 2)
        if topic.endswith("/state"):
            doc = json.loads(payload)
            if doc.get("full"):
                states.append(doc)
    assert states, f"no full state document on the broker\n{run.explain()}"
    return {path: entry["value"] for path, entry in states[-1]["signals"].items()}


def test_vcan0_carries_fd_frames_and_the_agent_stops_cleanly(run: GuestRun) -> None:
    assert run.rc == 0, run.explain()
    assert "mtu 72" in run.file("show-link.txt"), run.explain()
    assert f"played {N_FRAMES} frames, 64 bytes the longest" in run.file("play.log"), run.explain()
    assert run.file("agent.rc").strip() == "0", run.explain()


def test_every_64_byte_frame_is_read_and_decoded_live(run: GuestRun) -> None:
    match = re.search(r"stopping: frames=(\d+) decoded=(\d+) unchanged=(\d+) dropped\[([^\]]*)\]",
                      run.file("agent.log"))
    assert match, run.explain()
    frames, decoded, unchanged, dropped = int(match[1]), int(match[2]), int(match[3]), match[4]
    assert frames == N_FRAMES and decoded + unchanged == N_FRAMES, (match[0], run.explain())
    assert dropped == "none", match[0]


def test_the_live_state_equals_the_replay_of_the_same_log(run: GuestRun) -> None:
    live, replayed = last_full_state(run), host_replay(run)
    assert len(replayed) >= 12
    assert live == replayed
