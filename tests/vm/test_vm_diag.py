"""Diagnostic polling on a real kernel's vcan0: the agent polls the simulated car's ECUs over
ISO-TP, decodes their answers, sends nothing on a silent bus and stops when the bus goes quiet.

A second reader in the guest records every frame on vcan0 (tests/vm/guest_diag.sh).
"""

from __future__ import annotations

import re

import pytest
from vmharness import REPO, GuestRun, VirtualMachine

pytestmark = pytest.mark.vm

# Speed 1: 60 simulated s of driving in 60 s; a TCG guest runs Python ~15x slower than the host,
# the agent's requests time out at 2 s, the ECUs answer within ~30 ms of simulated time.
SPEED, DURATION_S = 1.0, 60.0
TESTER_IDS = frozenset({0x7DF, *range(0x7E0, 0x7E8)})
QUIET_AFTER_S = 3.0


@pytest.fixture(scope="module")
def run(vm: VirtualMachine, guest_python: str, tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    job = tmp_path_factory.mktemp("vm-diag")
    return vm.run("sh tests/vm/guest_diag.sh", job, timeout_s=600, env={
        "SPEED": str(SPEED), "DURATION": str(DURATION_S), "PY": guest_python, "REPO": str(REPO)})


def frames(run: GuestRun) -> list[tuple[float, int, str]]:
    out = []
    for line in run.file("frames.txt").splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((float(parts[0]), int(parts[1], 16), parts[2]))
    return out


def diag_counters(run: GuestRun) -> dict[str, int]:
    match = re.search(r"stopping: .* diag\[([^\]]*)\]", run.file("agent.log"))
    assert match, f"no diag counters in the agent's stopping line\n{run.explain()}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def test_agent_polls_the_simulated_ecus_and_decodes_their_answers(run: GuestRun) -> None:
    assert run.rc == 0, run.explain()
    assert run.file("agent.rc").strip() == "0", run.explain()
    counters = diag_counters(run)
    assert counters.get("positive", 0) >= 10, counters  # answers decoded into the state
    seen = frames(run)
    responses = [f for f in seen if f[1] in (0x7E8, 0x7EC, 0x7ED)]
    multi = [f for f in responses if f[2].startswith("10")]
    flow_control = [f for f in seen if f[1] == 0x7E4 and f[2].startswith("30")]
    assert multi and flow_control, "no multi-frame answer with the tester's flow control on vcan0"


def test_nothing_is_sent_before_the_car_talks_and_polling_stops_when_it_goes_quiet(run: GuestRun) -> None:
    seen = frames(run)
    car = [t for t, can_id, _ in seen if can_id == 0x510]  # the ECUs' network-management heartbeat
    tester = [t for t, can_id, _ in seen if can_id in TESTER_IDS]
    assert car and tester, run.explain()
    assert tester[0] > car[0], "a request went out before the car's own first frame"
    assert tester[-1] <= car[-1] + QUIET_AFTER_S + 1.0, (
        f"polling went on {tester[-1] - car[-1]:.1f} s after the bus went quiet")
