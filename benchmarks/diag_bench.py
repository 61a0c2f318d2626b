"""Diagnostic polling: poll-round latency of the Kona BMS DIDs 0x0101-0x0105 against the simulated
ECU (20 ms latency), bus load at the default periods, CPU of polling five DIDs every second, and
frames sent on a silent bus over a simulated 12-hour night. Prints figures; `--json FILE` writes them.

    python benchmarks/diag_bench.py [--quick] [--json FILE]

Targets (issue 14): poll round p99 <= 150 ms; bus load <= 1 % of 500 kbit/s; CPU <= 0.5 % of a
core; zero frames on a silent bus.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

import simulators  # noqa: E402
from agent.cli.daemon import Agent  # noqa: E402
from agent.core.diag_poll import Poller, frame_bits, response_frames  # noqa: E402
from agent.core.pipeline import Pipeline  # noqa: E402
from agent.io.diag_runtime import DiagRuntime  # noqa: E402
from agent.io.sources import open_bus  # noqa: E402
from agent.profile.config import load_config  # noqa: E402
from agent.profile.vehicle import load_vehicle  # noqa: E402
from simulators import diag_ecu  # noqa: E402
from simulators.diag_ecu import reference_ecus  # noqa: E402
from simulators.model import EVModel  # noqa: E402

OBD_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev-obd.toml"
BMS_DIDS = """
[vehicle]
id = "diag-bench"
[can]
interface = "virtual"
channel = "diag-bench"
[diagnostics]
standard_pids = false
bus_share = {share}
[diagnostics.periods]
driving = {period}
charging = {period}
parked = {period}
""" + "".join(f"""
[[diagnostics.request]]
tx_id = 0x7E4
rx_id = 0x7EC
service = 0x22
identifier = 0x010{i}
[[diagnostics.request.signal]]
path = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
bit = {32 if i == 1 else 248 if i == 5 else 40}
length = 8
scale = 0.5
""" for i in range(1, 6))


def bms_config(tmp: Path, period: float, share: float, channel: str) -> Path:
    path = tmp / f"bms-{period:g}.toml"
    text = BMS_DIDS.format(period=period, share=share).replace('channel = "diag-bench"', f'channel = "{channel}"')
    # one VSS path per DID is enough to decode each; the others go to paths of their own
    for i, path_name in enumerate(("CurrentVoltage", "CurrentCurrent", "CurrentPower", "Temperature.Average"), 2):
        text = text.replace(f"identifier = 0x010{i}\n[[diagnostics.request.signal]]\n"
                            'path = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"',
                            f"identifier = 0x010{i}\n[[diagnostics.request.signal]]\n"
                            f'path = "Vehicle.Powertrain.TractionBattery.{path_name}"')
    path.write_text(text)
    return path


def run_agent(config_path: Path, channel: str, seconds: float, scenario: str = "diagnostics-only") -> tuple[Agent, dict[str, Any]]:
    """The agent and the simulated car (speed 1: ECU latency 20 ms real) for `seconds`."""
    agent = Agent(load_config(config_path), bus_factory=lambda c, f: open_bus(c.can, f))
    latencies: list[float] = []
    trace = RoundTrace()
    sent: dict[str, float] = {}
    worker = threading.Thread(target=agent.run, name="agent")
    worker.start()
    while agent.diag is None and worker.is_alive():
        time.sleep(0.01)
    diag = agent.diag
    if diag is not None:
        _instrument(diag, sent, latencies, trace)
    car = simulators.open_bus("virtual", channel)
    sim = simulators.Simulator(car, scenario, speed=1.0, duration_s=seconds + 5).start()
    proc = psutil.Process()
    thread_id = worker.native_id
    time.sleep(2.0)  # the car wakes, the first round starts
    cpu0 = _thread_cpu(proc, thread_id)
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu = (_thread_cpu(proc, thread_id) - cpu0) / (time.monotonic() - t0) * 100.0
    sim.stop()
    agent.request_stop()
    worker.join(15)
    car.shutdown()
    return agent, {"latencies": latencies, "rounds": trace.rounds, "incomplete": trace.incomplete, "cpu_pct": cpu}


class RoundTrace:
    """Where a round's time goes, from the agent's side of the bus (perf_counter at each frame the
    agent sends or receives for the BMS, and when the last DID's values are decoded).

    Between a frame the agent sent and the next frame it received, it waits for the ECU (its
    latency, a responsePending's extra wait, its consecutive frames, the virtual bus hand-over
    and the simulator's 1 ms service slice); between a frame received and the next frame sent
    (the flow control, the next request) or the decoded values, the time is the agent's."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []  # (perf_counter, "tx" | "rx" | "rx78" | "done")
        self.asked: set[bytes] = set()  # the DIDs requested in this round
        self.rounds: list[dict[str, float]] = []
        self.incomplete = 0  # rounds with a DID left out (backed off after an NRC 0x22 for 30 s)

    def frame(self, kind: str, data: bytes) -> None:
        now = time.perf_counter()
        if kind == "tx" and data[:2] == b"\x03\x22":
            if data[2:4] == b"\x01\x01":
                if self.events:
                    self.incomplete += 1  # the round before never got to 0105 (backed off)
                self.events, self.asked = [], set()  # a round starts with the request of 0101
            self.asked.add(bytes(data[2:4]))
        self.events.append((now, "rx78" if kind == "rx" and data[1:4] == b"\x7f\x22\x78" else kind))

    def done(self) -> None:
        """The values of 0105 are decoded: the round ends. Only whole rounds (all five asked) count."""
        self.events.append((time.perf_counter(), "done"))
        ev, self.events = self.events, []
        if not ev or ev[0][1] != "tx":
            return
        if len(self.asked) != 5:
            self.incomplete += 1
            return
        agent = ecu = 0.0
        for (t1, k1), (t2, k2) in zip(ev, ev[1:], strict=False):
            if k1.startswith("rx") and k2 in ("tx", "done"):
                agent += t2 - t1
            else:
                ecu += t2 - t1
        self.rounds.append({"total": ev[-1][0] - ev[0][0], "agent": agent, "ecu": ecu,
                            "pending": float(any(k == "rx78" for _, k in ev))})


def _instrument(diag: DiagRuntime, sent: dict[str, float], latencies: list[float], trace: RoundTrace) -> None:
    poller_send, payload, on_frame = diag.poller._send, diag._payload, diag.on_frame

    def timed_send(plan: Any, now: float) -> None:
        sent[plan.key] = time.perf_counter()
        poller_send(plan, now)

    def timed_payload(rx: int, data: bytes, ts: float) -> None:
        payload(rx, data, ts)
        key = f"7E4.22{data[1:3].hex().upper()}" if data[:1] == b"\x62" else ""
        if key in sent:
            latencies.append(time.perf_counter() - sent.pop(key))
            if key.endswith("0105"):
                trace.done()

    def traced_frame(ts: float, can_id: int, data: bytes) -> bool:
        if can_id == 0x7EC:
            trace.frame("rx", data)
        return on_frame(ts, can_id, data)

    for port in diag.ports.values():
        if port.tx_id == 0x7E4 and port.send_frame is not None:
            port_send = port.send_frame

            def traced_send(msg: Any, _send: Any = port_send) -> None:
                trace.frame("tx", bytes(msg.data))
                _send(msg)

            port.send_frame = traced_send
    diag.poller._send = timed_send  # type: ignore[method-assign]
    diag._payload = timed_payload  # type: ignore[method-assign,assignment]
    diag.on_frame = traced_frame  # type: ignore[method-assign]


def _thread_cpu(proc: psutil.Process, native_id: int | None) -> float:
    for t in proc.threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bus_load_at_default_periods(hours: float = 1.0) -> dict[str, float]:
    """The reference OBD profile polled on event time over `hours` of driving, answered by the
    simulated ECUs (their real answer lengths): bits on the wire / (time x 500 kbit/s)."""
    vehicle = load_vehicle(load_config(OBD_CONFIG))
    assert vehicle.diagnostics is not None
    sim = simulators.load_scenario("diagnostics-only")
    model = EVModel.from_setup(sim.car, sim.tz, sim.start_ts, 0)
    model.ignition, model.ready, model.speed_kmh = "ON", True, 50.0
    ecus = {e.tx_id: e for e in reference_ecus()}
    pipeline = Pipeline(vehicle, lambda m: None)
    poller = Poller(vehicle.diagnostics.plans, vehicle.diagnostics.config, 500_000,
                    skip_paths=vehicle.diagnostics.skip_paths)
    bits = 0.0
    t, end = 0.0, hours * 3600.0
    pipeline.state.set("Vehicle.Speed", 50.0, 0.0)
    while t < end:
        poller.heard(t)
        pipeline.state.set("Vehicle.Speed", 50.0, t)
        for plan in poller.due(t, pipeline.state):
            for rx in sorted(plan.rx_ids)[:2 if plan.functional else 1]:
                ecu = ecus.get(rx - 8)
                answer = ecu.answer(model, plan.request) if ecu is not None else None
                bits += frame_bits(False)  # the request
                if answer is not None:
                    bits += response_frames(len(answer)) * frame_bits(False)
                    poller.on_payload(rx, answer, t + 0.03)
        t += 0.5
    return {"bus_load_pct": bits / end / 500_000 * 100.0, "requests_per_min": poller.counts["sent"] / (end / 60)}


def silent_night(hours: float = 12.0) -> int:
    """Frames the agent's diagnostics send on a bus that stays silent for a night (event time)."""
    vehicle = load_vehicle(load_config(OBD_CONFIG))
    assert vehicle.diagnostics is not None
    frames: list[Any] = []
    runtime = DiagRuntime(vehicle.diagnostics, Pipeline(vehicle, lambda m: None), frames.append)
    t, end = 1_800_000_000.0, 1_800_000_000.0 + hours * 3600.0
    while t < end:
        runtime.poll(t)
        t += 0.2
    return len(frames)


LATENCY_PERIOD_S = 0.25


def latency_figures(run: dict[str, Any], suffix: str) -> dict[str, float]:
    """Per request and per round (p50/p99, ms); each round split into the agent's and the ECU's part."""
    lat_ms = [x * 1000 for x in run["latencies"]]
    rounds = run["rounds"]

    def ms(part: str, only: list[dict[str, float]] | None = None) -> list[float]:
        return [r[part] * 1000 for r in (rounds if only is None else only)]

    out = {"request_p50_ms": pct(lat_ms, 0.5), "request_p99_ms": pct(lat_ms, 0.99),
           "round_p50_ms": pct(ms("total"), 0.5), "round_p99_ms": pct(ms("total"), 0.99),
           "round_agent_p50_ms": pct(ms("agent"), 0.5), "round_agent_p99_ms": pct(ms("agent"), 0.99),
           "round_ecu_p50_ms": pct(ms("ecu"), 0.5), "round_ecu_p99_ms": pct(ms("ecu"), 0.99),
           "rounds": float(len(rounds)), "rounds_incomplete": float(run["incomplete"])}
    if not suffix:
        calm = [r for r in rounds if not r["pending"]]
        out["rounds_with_pending_pct"] = 100.0 * (len(rounds) - len(calm)) / max(1, len(rounds))
        out["round_p99_ms_without_pending"] = pct(ms("total", calm), 0.99)
    return {k + suffix: v for k, v in out.items()}


def verdict(figures: dict[str, float]) -> str:
    clean, pending = figures["round_p99_ms_clean_ecu"] <= 150.0, figures["round_p99_ms"] <= 150.0
    if clean and pending:
        return "the target holds, with the simulated responsePending too"
    if clean:
        return "the target holds only without the simulated responsePending"
    return "the target is missed even with the ECU's 20 ms latency alone"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test of the benchmark)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seconds = 8.0 if args.quick else 60.0
    # The simulated ECU runs in this process (python-can's virtual bus does not cross processes):
    # a short GIL switch interval keeps its thread from adding up to 5 ms per hand-over.
    sys.setswitchinterval(0.0005)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["CARFRIEND_STORAGE__STATE_DIR"] = tmp
        channel = f"diag-bench-{os.getpid()}"
        # Latency: a round every 0.25 s (~240 rounds a minute, enough for a p99), the simulated
        # ECU with its 20 ms mean latency and 2 % responsePending (100 ms more) ... but no NRC:
        # an NRC 0x22 backs that DID off for 30 s (by design), so at 4 rounds a second most
        # rounds would lack a DID and not be whole rounds (counted in rounds_incomplete).
        nrc_rate, pending_rate = diag_ecu.NRC_RATE, diag_ecu.PENDING_RATE
        diag_ecu.NRC_RATE = 0.0
        _, run = run_agent(bms_config(Path(tmp), LATENCY_PERIOD_S, 0.2, channel), channel, seconds)
        figures.update(latency_figures(run, ""))
        # ... and an ECU that never answers responsePending either: its 20 ms latency alone.
        diag_ecu.PENDING_RATE = 0.0
        _, clean = run_agent(bms_config(Path(tmp), LATENCY_PERIOD_S, 0.2, channel + "-clean"), channel + "-clean",
                             seconds)
        diag_ecu.NRC_RATE, diag_ecu.PENDING_RATE = nrc_rate, pending_rate
        figures.update(latency_figures(clean, "_clean_ecu"))
        # CPU: the five DIDs every second, against the same agent not polling.
        _, cpu = run_agent(bms_config(Path(tmp), 1.0, 0.05, channel + "-1hz"), channel + "-1hz", seconds)
        _, idle = run_agent(bms_config(Path(tmp), 0.0, 0.05, channel + "-idle"), channel + "-idle", seconds)
        figures["cpu_pct_polling_5_dids_1hz"] = cpu["cpu_pct"]
        figures["cpu_pct_not_polling"] = idle["cpu_pct"]
        figures["cpu_pct_added_by_polling"] = cpu["cpu_pct"] - idle["cpu_pct"]
    figures.update(bus_load_at_default_periods(0.2 if args.quick else 1.0))
    figures["frames_on_silent_night"] = float(silent_night(1.0 if args.quick else 12.0))
    for key, value in figures.items():
        print(f"{key:36} {value:10.3f}")
    print(f"\ntargets: round p99 <= 150 ms with a 20 ms ECU latency: {figures['round_p99_ms_clean_ecu']:.1f} ms "
          f"with the ECU's 20 ms latency alone (of it the agent's {figures['round_agent_p99_ms_clean_ecu']:.1f} ms); "
          f"{figures['round_p99_ms']:.1f} ms with the simulated 2 % responsePending (+100 ms each, in "
          f"{figures['rounds_with_pending_pct']:.0f} % of rounds), "
          f"{figures['round_p99_ms_without_pending']:.1f} ms over that run's rounds without one: "
          f"{verdict(figures)}; "
          f"bus load <= 1 % ({figures['bus_load_pct']:.3f} %); CPU added <= 0.5 % "
          f"({figures['cpu_pct_added_by_polling']:.2f} %); 0 frames on a silent night "
          f"({figures['frames_on_silent_night']:.0f})")
    print("A round's time is the ECU's (its latency, responsePending, consecutive frames, the simulator's "
          "1 ms service slice) and the agent's (a received frame to the next frame it sends or to the "
          "decoded values); see docs/diagnostics.md.")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
