"""`carfriend scan`: which standard PIDs and signal-set requests a connected car answers; a starting profile (IO).

Read-only and never waking the car: it sends nothing until it has heard the car's own
traffic, stops when the car goes quiet, refuses to run with `[can] listen_only`, and asks
only read services (the same checks as the agent's profile).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import can

from agent.core.diag_j1979 import BITMAP_PIDS, STANDARD_PIDS, bitmap_plan, parse_supported
from agent.core.diag_plan import DiagPlan, negative_response
from agent.core.diag_poll import RESPONSE_PENDING_S
from agent.core.diag_profile import FUNCTIONAL_ID, OBD_RESPONSE_IDS, DiagnosticsConfig
from agent.core.errors import ConfigError, SourceError
from agent.core.settings import AgentConfig
from agent.io.isotp_link import IsoTpPort
from agent.io.sources import open_bus
from agent.profile.config import load_config
from agent.profile.signalset import SignalSetBuilder, parse_signalset

PID_NAMES = {0x01: "MIL and DTC count", 0x0D: "vehicle speed", 0x42: "control module voltage (12 V)",
             0x5B: "hybrid/EV battery remaining", 0xA6: "odometer"}


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="ask a connected car which diagnostic requests it answers; write a profile")
    p.add_argument("--config", "-c", type=Path, required=True, help="the car's config ([vehicle], [can])")
    p.add_argument("--signalset", type=Path, help="an OBDb signal set to try (default: the config's)")
    p.add_argument("--out", type=Path, help="write a starting profile here")
    p.add_argument("--wait-awake", type=float, default=10.0, metavar="S",
                   help="how long to listen for the car's own traffic before giving up (default 10)")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S", help="per request (default 1)")
    p.set_defaults(func=cmd_scan)


@dataclass
class ScanResult:
    supported: dict[int, set[int]] = field(default_factory=dict)  # response id -> standard PIDs
    answers: dict[str, str] = field(default_factory=dict)  # signal-set request key -> outcome
    stopped: str | None = None  # why the scan ended early (the car went quiet)


class Scanner:
    """One request at a time over the bus, with the never-wake rules of the poller."""

    def __init__(self, bus: can.BusABC, quiet_after_s: float = 3.0, timeout_s: float = 1.0) -> None:
        self.bus, self.quiet_after_s, self.timeout_s = bus, quiet_after_s, timeout_s
        self.ports: dict[int, IsoTpPort] = {}
        self.last_heard = -1e18
        self.sent = 0

    def port(self, tx: int, rx: int, extended: bool) -> IsoTpPort:
        if rx not in self.ports:
            self.ports[rx] = IsoTpPort(tx, rx, extended, self.bus.send)
        return self.ports[rx]

    def wait_awake(self, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            self._pump(0.1)
            if self.awake():
                return True
        return False

    def awake(self) -> bool:
        return time.monotonic() - self.last_heard <= self.quiet_after_s

    def _pump(self, timeout: float) -> list[tuple[int, bytes]]:
        msg = self.bus.recv(timeout)
        out: list[tuple[int, bytes]] = []
        while msg is not None:
            if not msg.is_error_frame and not msg.is_remote_frame:
                port = self.ports.get(msg.arbitration_id)
                if port is not None:
                    out += [(msg.arbitration_id, p) for p in port.feed(bytes(msg.data))]
                elif msg.arbitration_id not in (FUNCTIONAL_ID, *range(0x7E0, 0x7E8)):
                    self.last_heard = time.monotonic()
            msg = self.bus.recv(0.0)
        return out

    def ask(self, plan: DiagPlan) -> list[tuple[int, bytes]]:
        """Send one request (if the car is awake); the answers within the timeout."""
        if not self.awake():
            raise SourceError("the car went quiet: scan stopped (it never wakes a sleeping car)")
        for rx in plan.rx_ids:
            self.port(rx - 8 if plan.functional else plan.tx_id, rx, plan.extended)
        sender = IsoTpPort(plan.tx_id, min(plan.rx_ids), plan.extended, self.bus.send) if plan.functional \
            else self.ports[min(plan.rx_ids)]
        sender.send(plan.request, functional=plan.functional)
        self.sent += 1
        answers: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for rx, payload in self._pump(0.01):
                if negative_response(plan, payload) == 0x78:
                    deadline = time.monotonic() + RESPONSE_PENDING_S
                    continue
                answers.append((rx, payload))
                if not plan.functional:
                    return answers
        return answers


def scan(scanner: Scanner, plans: Iterable[DiagPlan]) -> ScanResult:
    result = ScanResult()
    try:
        _standard(scanner, result)
        for plan in plans:
            answers = scanner.ask(plan)
            if not answers:
                result.answers[plan.key] = "no answer"
                continue
            nrc = negative_response(plan, answers[0][1])
            result.answers[plan.key] = f"NRC 0x{nrc:02X}" if nrc is not None else \
                f"answered ({len(answers[0][1])} bytes)"
    except SourceError as exc:
        result.stopped = str(exc)
    return result


def _standard(scanner: Scanner, result: ScanResult) -> None:
    queue: list[tuple[int, int | None]] = [(0x00, None)]
    retried: set[tuple[int, int | None]] = set()
    while queue:
        base, rx = queue.pop(0)
        plan = bitmap_plan(base, rx)
        for answer_rx, payload in scanner.ask(plan):
            if negative_response(plan, payload) is not None and (base, rx) not in retried:
                retried.add((base, rx))  # busy or conditions not correct: once more
                queue.append((base, rx))
            pids = parse_supported(base, payload)
            if pids is None:
                continue
            result.supported.setdefault(answer_rx, set()).update(pids)
            if base + 0x20 in pids and base + 0x20 in BITMAP_PIDS:
                queue.append((base + 0x20, answer_rx))


def table(result: ScanResult, plans: list[DiagPlan]) -> str:
    lines = ["ECU     PID  what", "------  ---  ----"]
    for rx in sorted(result.supported):
        for pid in sorted(p for p in result.supported[rx] if p in STANDARD_PIDS):
            lines.append(f"0x{rx:03X}   {pid:02X}   {PID_NAMES[pid]}")
        others = sorted(p for p in result.supported[rx] if p not in STANDARD_PIDS and p not in BITMAP_PIDS)
        if others:
            lines.append(f"0x{rx:03X}   ..   also supported: {' '.join(f'{p:02X}' for p in others)}")
    if plans:
        lines += ["", "request          answer", "---------------  ------"]
        for plan in plans:
            lines.append(f"{plan.key:<15}  {result.answers.get(plan.key, 'not asked')}")
    if result.stopped:
        lines += ["", f"stopped early: {result.stopped}"]
    return "\n".join(lines)


def profile(config: AgentConfig, result: ScanResult, signalset: Path | None) -> str:
    """A starting profile: the config's vehicle and bus, the diagnostics that answered."""
    v, c = config.vehicle, config.can
    out = ["# Written by `carfriend scan`: a starting point; see docs/diagnostics.md.",
           "[vehicle]", f'id = "{v.id}"', f'persona = "{v.persona}"', f'locale = "{v.locale}"',
           f'timezone = "{v.timezone}"', f"battery_capacity_kwh = {v.battery_capacity_kwh}", "",
           "[can]", f'interface = "{c.interface}"', f'channel = "{c.channel}"']
    if c.bitrate:
        out.append(f"bitrate = {c.bitrate}")
    out += ["", "[diagnostics]", f"standard_pids = {'true' if result.supported else 'false'}"]
    for rx in sorted(result.supported):
        found = ", ".join(f"{p:02X} {PID_NAMES[p]}" for p in sorted(result.supported[rx]) if p in STANDARD_PIDS)
        out.append(f"# 0x{rx:03X} answers: {found or 'no PID carfriend uses'}")
    if signalset is not None:
        out.append(f'signalset = "{signalset.absolute()}"')
        for key, outcome in sorted(result.answers.items()):
            out.append(f"# {key}: {outcome}")
    return "\n".join(out) + "\n"


def cmd_scan(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.can.listen_only:
        raise ConfigError(f"{args.config}: [can] listen_only = true: scan sends requests, which that forbids")
    diag = config.diagnostics or DiagnosticsConfig()
    path = args.signalset or diag.signalset
    plans = _signalset_plans(path, diag, config.vehicle.model_year) if path is not None else []
    bus = open_bus(config.can, None)
    try:
        scanner = Scanner(bus, diag.quiet_after_s, args.timeout)
        if not scanner.wait_awake(args.wait_awake):
            print(f"the bus is silent: no frame of the car in {args.wait_awake:g} s, and scan never sends "
                  "the first frame (it would wake the car). Switch the car on, or plug it in, and scan again.")
            return 1
        for rx in OBD_RESPONSE_IDS:
            scanner.port(rx - 8, rx, False)
        result = scan(scanner, plans)
    finally:
        bus.shutdown()
    print(table(result, plans))
    if args.out is not None:
        args.out.write_text(profile(config, result, path))
        print(f"\nprofile written to {args.out} (check it with: carfriend check-config {args.out})")
    return 0 if result.stopped is None else 1


def _signalset_plans(path: Path, diag: DiagnosticsConfig, model_year: int | None) -> list[DiagPlan]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read signal set: {exc.strerror or exc}") from None
    sset, problems = parse_signalset(text, str(path))
    if sset is None:
        raise ConfigError(problems)
    builder = SignalSetBuilder(sset, str(path), diag, {}, model_year)
    plans = builder.plans()
    if builder.problems:
        raise ConfigError(builder.problems)
    return plans
