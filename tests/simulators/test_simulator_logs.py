"""Scenarios written to log files: deterministic bytes, DBC cycle times, garbage, bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import can
import pytest

import simulators
from agent.core.errors import ConfigError
from simulators.frames import load_car_dbc

REQUIRED = {"daily-commute", "overnight-charge", "offpeak-delayed-charge", "parked-low-12v",
            "service-due", "fault-dtc", "soc-noise-20", "bus-garbage", "demo-day", "core-acceptance"}
SCENARIOS = sorted(simulators.list_scenarios())
ROOT = Path(__file__).resolve().parents[2]


def carfriend(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_every_required_scenario_is_shipped_with_a_description() -> None:
    listed = simulators.list_scenarios()
    assert set(listed) >= REQUIRED
    assert all(listed.values())


def test_simulate_list_prints_one_line_per_scenario() -> None:
    result = carfriend("simulate", "--list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == SCENARIOS


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_same_seed_writes_the_same_bytes(tmp_path: Path, name: str) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    simulators.write_log(a, name, seed=3, speed=1000, duration_s=1800)
    simulators.write_log(b, name, seed=3, speed=1000, duration_s=1800)
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
    assert a.stat().st_size > 0


@pytest.mark.parametrize("suffix", [".asc", ".blf"])
def test_asc_and_blf_logs_are_deterministic_and_readable(tmp_path: Path, suffix: str) -> None:
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    stats = simulators.write_log(a, "fault-dtc", seed=1, speed=1000)
    time.sleep(0.0123)  # a different wall-clock millisecond: it must not show in the file
    simulators.write_log(b, "fault-dtc", seed=1, speed=1000)
    # digests, not bytes: a multi-megabyte bytes diff takes pytest's difflib many minutes
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
    assert sum(1 for _ in can.LogReader(a)) == stats.frames


def test_a_different_seed_gives_different_noise(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    simulators.write_log(a, "soc-noise-20", seed=1, speed=1000, duration_s=600)
    simulators.write_log(b, "soc-noise-20", seed=2, speed=1000, duration_s=600)
    assert hashlib.sha256(a.read_bytes()).hexdigest() != hashlib.sha256(b.read_bytes()).hexdigest()


def intervals(messages: list[can.Message]) -> dict[int, list[float]]:
    last: dict[int, float] = {}
    gaps: dict[int, list[float]] = defaultdict(list)
    for msg in messages:
        if msg.arbitration_id in last:
            gaps[msg.arbitration_id].append(msg.timestamp - last[msg.arbitration_id])
        last[msg.arbitration_id] = msg.timestamp
    return gaps


def test_at_speed_1_every_message_follows_its_dbc_cycle_time() -> None:
    db = load_car_dbc()
    frames = list(simulators.frames("daily-commute", speed=1.0, duration_s=20))
    gaps = intervals(frames)
    for message in db.messages:
        if message.cycle_time is None:
            assert message.frame_id not in gaps  # command frames are the agent's to send
            continue
        assert gaps[message.frame_id], message.name
        assert all(abs(g - message.cycle_time / 1000) < 1e-5 for g in gaps[message.frame_id]), message.name


def test_at_high_speed_frames_are_thinned_to_one_each_2_simulated_seconds() -> None:
    frames = list(simulators.frames("daily-commute", speed=1000, duration_s=120))
    for frame_id, gaps in intervals(frames).items():
        assert all(abs(g - 2.0) < 1e-5 for g in gaps), hex(frame_id)


def test_the_frame_timestamps_are_the_scenarios_simulated_time() -> None:
    scenario = simulators.load_scenario("overnight-charge")
    first = next(iter(simulators.frames(scenario, speed=1000)))
    assert first.timestamp == scenario.start.timestamp()


def test_a_parked_car_sleeps_and_wakes_every_5_minutes() -> None:
    frames = list(simulators.frames("parked-low-12v", speed=1000, duration_s=3 * 3600))
    lv = [m.timestamp for m in frames if m.arbitration_id == 0x3C0]
    after_run = [t for t in lv if t - lv[0] > 60]
    gaps = {round(b - a) for a, b in zip(after_run, after_run[1:], strict=False)}
    assert gaps == {300}


def test_bus_garbage_has_unknown_ids_short_frames_error_and_remote_frames_and_bursts() -> None:
    known = {m.frame_id for m in load_car_dbc().messages}
    frames = list(simulators.frames("bus-garbage", speed=1000))
    unknown = [m for m in frames if m.arbitration_id not in known and not m.is_error_frame]
    short = [m for m in frames if m.arbitration_id in known and not m.is_remote_frame and m.dlc < 8]
    errors = [m for m in frames if m.is_error_frame]
    remote = [m for m in frames if m.is_remote_frame]
    assert len(unknown) > 1000 and len(short) > 100 and len(errors) > 50 and len(remote) > 20
    assert any(m.is_extended_id for m in unknown)
    stamps = sorted(m.timestamp for m in unknown)
    densest = max(sum(1 for t in stamps[i:i + 300] if t - stamps[i] < 0.1) for i in range(0, len(stamps), 50))
    assert densest >= 250  # a burst: hundreds of frames within 100 ms
    assert [m.timestamp for m in frames] == sorted(m.timestamp for m in frames)


def test_a_bad_scenario_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('description = "x"\nstart = "2026-11-21T18:30:00+09:00"\n'
                   '[car]\nsoc_pct = 150\nsoc_percent = 3\n[[phases]]\nkind = "fly"\n')
    with pytest.raises(ConfigError) as err:
        simulators.load_scenario(bad)
    text = "\n".join(err.value.problems)
    assert str(bad) in text
    assert "car.soc_pct" in text and "car.soc_percent" in text and "phases.0.kind" in text
    result = carfriend("simulate", "--scenario", str(bad), "--log", str(tmp_path / "x.log"))
    assert result.returncode == 1
    assert f"error: {bad}: car.soc_percent" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_scenario_is_an_error_listing_the_known_ones(tmp_path: Path) -> None:
    result = carfriend("simulate", "--scenario", "moon-landing", "--log", str(tmp_path / "x.log"))
    assert result.returncode == 1
    assert "unknown scenario 'moon-landing'" in result.stderr and "overnight-charge" in result.stderr


def test_a_dbc_without_the_needed_signals_is_an_error_naming_it(tmp_path: Path) -> None:
    dbc = tmp_path / "other.dbc"
    text = (ROOT / "dbc" / "carfriend_ev.dbc").read_text()
    dbc.write_text(text.replace(" SG_ SOC :", " SG_ StateOfCharge :").replace("VAL_ 928 ", "VAL_ 928 "))
    result = carfriend("simulate", "--scenario", "fault-dtc", "--dbc", str(dbc), "--log", str(tmp_path / "x.log"))
    assert result.returncode == 1
    assert f"{dbc}: message 'BMS_Status' has no signal 'SOC'" in result.stderr


def test_simulate_writes_a_log_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "x.log"
    result = carfriend("simulate", "--scenario", "service-due", "--log", str(out), "--speed", "1000")
    assert result.returncode == 0, result.stderr
    assert sum(1 for _ in can.LogReader(out)) > 1000
