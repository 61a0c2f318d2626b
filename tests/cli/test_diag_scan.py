"""`carfriend scan` against the simulated car's diagnostic ECUs, with a second reader on the bus."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import can
import pytest

import simulators
from agent.cli import main
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

ROOT = Path(__file__).resolve().parents[2]
OBD_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev-obd.toml"
KONA_SET = ROOT.parent / "shared" / "realdata" / "obdb" / "hyundai-kona-electric" / "signalset-v3.json"


def run_scan(argv: list[str], channel: str, monkeypatch: pytest.MonkeyPatch, awake: bool) -> tuple[int, list[can.Message]]:
    monkeypatch.setenv("CARFRIEND_CAN__CHANNEL", channel)
    watcher = can.Bus(interface="virtual", channel=channel)
    car = simulators.open_bus("virtual", channel)
    sim = simulators.Simulator(car, "diagnostics-only", speed=1, duration_s=120).start() if awake else None
    rc: list[int] = []
    worker = threading.Thread(target=lambda: rc.append(main(["scan", "--config", str(OBD_CONFIG), *argv])))
    try:
        time.sleep(0.2)
        worker.start()
        worker.join(90)
    finally:
        if sim is not None:
            sim.stop()
        car.shutdown()
    seen = []
    while (msg := watcher.recv(0.05)) is not None:
        seen.append(msg)
    watcher.shutdown()
    return rc[0], seen


def test_scan_lists_the_supported_pids_and_writes_a_profile_that_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profile.toml"
    rc, _ = run_scan(["--out", str(out), "--wait-awake", "5"], f"scan-{time.monotonic_ns()}", monkeypatch, True)
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0, text + captured.err
    assert "0x7E8   0D   vehicle speed" in text and "0x7E8   42   control module voltage (12 V)" in text
    assert "0x7E8   A6   odometer" in text and "0x7EC   5B   hybrid/EV battery remaining" in text
    vehicle = load_vehicle(load_config(out))
    assert vehicle.diagnostics is not None and vehicle.diagnostics.config.standard_pids


@pytest.mark.skipif(not KONA_SET.is_file(), reason=f"OBDb real data not present at {KONA_SET}")
def test_scan_tries_each_signalset_request(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = run_scan(["--signalset", str(KONA_SET), "--timeout", "0.3"], f"scan-{time.monotonic_ns()}",
                     monkeypatch, True)
    text = capsys.readouterr().out
    assert rc == 0, text
    for did in ("0101", "0102", "0103", "0104", "0105"):
        assert f"7E4.22{did}       answered" in text
    assert "7A0.22C00B       no answer" in text  # the simulated car has no tyre-pressure ECU


def test_scan_on_a_silent_bus_sends_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rc, seen = run_scan(["--wait-awake", "1"], f"scan-{time.monotonic_ns()}", monkeypatch, False)
    assert rc == 1 and "the bus is silent" in capsys.readouterr().out
    assert seen == []


def test_scan_refuses_listen_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CARFRIEND_CAN__LISTEN_ONLY", "true")
    rc, seen = run_scan([], f"scan-{time.monotonic_ns()}", monkeypatch, True)
    assert rc == 1 and "listen_only = true: scan sends requests" in capsys.readouterr().err
    assert [m for m in seen if m.arbitration_id in (0x7DF, *range(0x7E0, 0x7E8))] == []
