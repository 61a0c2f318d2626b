"""The poller: which diagnostic request goes out when, on event time, without waking the car (no IO).

Rules, all on event time passed in:
- nothing is sent unless a frame of the car's own (not polling traffic) was heard within
  ``quiet_after_s``: never a first frame on a silent bus, and polling stops as soon as it is quiet;
- one request at a time per ECU; each request at its period for the vehicle mode (driving,
  charging, parked; 0 = never);
- polling traffic stays under ``bus_share`` of the bitrate (a token bucket of bits);
- after ``timeouts_before_backoff`` timeouts in a row an ECU is left alone, 30 s doubling up
  to ``backoff_max_s``; NRC 0x31/0x11/0x12 stop asking that request, 0x78 keeps waiting,
  0x21/0x22/0x7F back it off (30 s doubling, back to its period at its next answer);
- a request an ECU never answers while it answers others is one it does not support (SAE
  J1979 ECUs say so by silence): after ``timeouts_before_backoff`` of those it is not asked
  again, and those timeouts never back the ECU off (its other requests go on);
- an answer after the timeout (``late``) still counts: its values, and the ECU's health;
- supported PIDs remembered from an earlier run are trusted until the car contradicts them:
  a remembered PID refused (NRC 0x11/0x12/0x31) or never answered while its ECU answers
  others, or a remembered ECU backed off without having answered once, forgets them all
  (``memory_wrong``) and the bitmaps are asked again.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from agent.core import vss
from agent.core.diag_j1979 import BITMAP_PIDS, bitmap_plan, parse_supported, plans_for
from agent.core.diag_plan import DiagPlan, is_response_to, negative_response
from agent.core.diag_profile import FUNCTIONAL_ID, DiagnosticsConfig, Mode
from agent.core.state import VehicleState

NEVER = math.inf
BACKOFF_BASE_S = 30.0
RESPONSE_PENDING_S = 5.0  # P2* of ISO 14229-2: how long a responsePending extends the wait
STOP_ASKING = {0x11: "service not supported", 0x12: "sub-function not supported", 0x31: "request out of range"}
BACK_OFF = {0x21: "busy, repeat request", 0x22: "conditions not correct", 0x7E: "not supported in session",
            0x7F: "service not supported in session"}
Outcome = Literal["positive", "pending", "negative", "late", "unsolicited"]


def frame_bits(extended: bool) -> int:
    """Bits on the wire of one 8-byte frame, with worst-case bit stuffing (ISO 11898-1)."""
    return 160 if extended else 135


def response_frames(length: int) -> int:
    """Frames of an ISO-TP message of `length` bytes (plus the tester's flow control)."""
    return 1 if length <= 7 else 2 + math.ceil((length - 6) / 7)


@dataclass(slots=True)
class Outstanding:
    plan: DiagPlan
    sent_at: float
    deadline: float
    answered: int = 0


@dataclass(slots=True)
class EcuHealth:
    timeouts: int = 0  # in a row
    level: int = 0
    until: float = -NEVER
    answered: bool = False  # has answered some request (so it is there and awake-capable)


@dataclass
class Discovery:
    """Which standard PIDs each ECU supports, asked once through the bitmaps and remembered."""

    pending: list[tuple[int, int | None]] = field(default_factory=lambda: [(0x00, None)])  # (base, rx or functional)
    supported: dict[int, set[int]] = field(default_factory=dict)  # rx id -> PIDs
    done: bool = False


class Poller:
    def __init__(self, plans: list[DiagPlan], diag: DiagnosticsConfig, bitrate: int, *,
                 skip_paths: frozenset[str] = frozenset()) -> None:
        self.diag = diag
        self.plans: dict[str, DiagPlan] = {p.key: p for p in plans}
        self.skip_paths = skip_paths
        self.next_due: dict[str, float] = {}
        self.grid: dict[tuple[int, float], float] = {}  # (tx id, period) -> the anchor of its rounds
        self.disabled: dict[str, str] = {}
        self.plan_backoff: dict[str, int] = {}
        self.ecus: dict[int, EcuHealth] = {}
        self.outstanding: dict[int, Outstanding] = {}  # tx id -> the request it waits for
        self.counts: Counter[str] = Counter()
        self.last_heard = -NEVER
        self.rate_bps = diag.bus_share * bitrate
        self.tokens = 0.0
        self._tokens_at: float | None = None
        self.expected_len: dict[str, int] = {p.key: _expected_length(p) for p in plans}
        self.discovery = Discovery() if diag.standard_pids else None
        self.asked: set[str] = set()  # requests sent at least once (a late answer is still theirs)
        self.answered_keys: set[str] = set()  # requests answered at least once (positively or not)
        self.silences: dict[str, int] = {}  # request -> timeouts in a row while its ECU answered others
        self._taken_pids: set[int] = set()
        self.discovered_keys: set[str] = set()  # the plans discovery (or the memory) added
        self.remembered = False  # discovery came from an earlier run's memory, not from this car's bitmaps
        self.memory_wrong: str | None = None  # why the memory was forgotten (the runtime deletes its file)

    # -- the car's own traffic ---------------------------------------------------------------
    def heard(self, ts: float) -> None:
        """A frame of the car's own (not polling traffic) at event time ts."""
        if ts > self.last_heard:
            self.last_heard = ts

    def awake_signal(self, value: object, ts: float) -> None:
        """The configured awake signal, decoded from a frame of the car's own at event time ts
        (never from a polled answer): a true value is evidence the car is awake."""
        if value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value):
            self.counts["awake_signal"] += 1
            self.heard(ts)

    def awake(self, now: float) -> bool:
        return now - self.last_heard <= self.diag.quiet_after_s

    @staticmethod
    def mode(state: VehicleState, now: float) -> Mode:
        if state.fresh(vss.IS_CHARGING, now) is True:
            return "charging"
        speed = state.fresh(vss.SPEED, now)
        if isinstance(speed, int | float) and not isinstance(speed, bool) and speed > 0.5:
            return "driving"
        return "parked"

    # -- what to send now -------------------------------------------------------------------
    def due(self, now: float, state: VehicleState) -> list[DiagPlan]:
        """Requests to send now (each is then outstanding until answered or timed out)."""
        self.expire(now)
        if not self.awake(now):
            return []
        self._refill(now)
        out: list[DiagPlan] = []
        if self.discovery is not None and not self.discovery.done:
            plan = self._discovery_request(now)
            if plan is not None:
                out.append(plan)
        mode = self.mode(state, now)
        for key, plan in self.plans.items():
            period = plan.periods.get(mode, 0.0)
            if not period or key in self.disabled or self.next_due.get(key, -NEVER) > now:
                continue
            if plan.tx_id in self.outstanding or self.ecus.get(plan.tx_id, EcuHealth()).until > now:
                continue
            if not self._afford(plan):
                self.counts["deferred_bus_share"] += 1
                continue
            self.next_due[key] = self._next_on_grid(plan.tx_id, period, now)
            self._send(plan, now)
            out.append(plan)
        return out

    def _next_on_grid(self, tx: int, period: float, now: float) -> float:
        """The next due time after `now` on the grid of the ECU's first request at this period.
        One grid per ECU and period, not per request: the requests of a round go out back to back,
        each as soon as the answer before it is in (a grid per request, anchored at its own first
        send, kept every later round waiting for the first round's latencies: +15-30 ms a round)."""
        anchor = self.grid.setdefault((tx, period), now)
        return anchor + period * (math.floor((now - anchor) / period) + 1)

    def _discovery_request(self, now: float) -> DiagPlan | None:
        d = self.discovery
        assert d is not None
        if not d.pending:
            if not any(o.plan.kind == "supported" for o in self.outstanding.values()):
                d.done = True
                self._finish_discovery()
            return None
        base, rx = d.pending[0]
        tx = FUNCTIONAL_ID if rx is None else rx - 8
        if tx in self.outstanding or self.ecus.get(tx, EcuHealth()).until > now:
            return None
        plan = bitmap_plan(base, rx)
        if not self._afford(plan):
            return None
        d.pending.pop(0)
        self._send(plan, now)
        return plan

    def remember(self, supported: dict[int, set[int]]) -> None:
        """Supported PIDs per response id known from an earlier run: no bitmap is asked again."""
        if self.discovery is None or self.discovery.done or not supported:
            return
        self.discovery = Discovery(pending=[], supported={rx: set(p) for rx, p in supported.items()}, done=True)
        self.remembered = True
        self._finish_discovery()

    def forget(self, reason: str) -> None:
        """The remembered supported PIDs do not fit this car: drop what they added, ask the bitmaps again."""
        if not self.remembered:
            return
        self.remembered = False
        self.memory_wrong = reason
        self.counts["supported_pids_forgotten"] += 1
        for key in self.discovered_keys:
            self.plans.pop(key, None)
            self.next_due.pop(key, None)
            self.disabled.pop(key, None)
            self.plan_backoff.pop(key, None)
            self.silences.pop(key, None)
        remembered_tx = {rx - 8 for rx in self.discovery.supported} if self.discovery else set()
        for tx in remembered_tx:
            self.ecus.pop(tx, None)  # an ECU backed off for the memory's sake is asked afresh
            out = self.outstanding.get(tx)
            if out is not None and out.plan.key in self.discovered_keys:
                del self.outstanding[tx]
        self.discovered_keys.clear()
        self._taken_pids.clear()
        self.discovery = Discovery()

    def _from_memory(self, plan: DiagPlan) -> bool:
        return self.remembered and plan.key in self.discovered_keys

    def _contradicts_memory(self, plan: DiagPlan) -> bool:
        """A remembered PID the ECU refuses or ignores (its DTC services may be silent: J1979 allows it)."""
        return self._from_memory(plan) and plan.request[0] == 0x01

    def discovered(self) -> dict[int, set[int]] | None:
        """Supported PIDs per response id once discovery is done and some ECU answered, else None."""
        d = self.discovery
        if d is None or not d.done or not any(d.supported.values()):
            return None
        return d.supported

    def _finish_discovery(self) -> None:
        d = self.discovery
        assert d is not None
        for rx in sorted(d.supported):
            for plan in plans_for(rx, d.supported[rx], self.diag, self.skip_paths, self._taken_pids):
                self.discovered_keys.add(plan.key)
                self.plans.setdefault(plan.key, plan)
                self.expected_len.setdefault(plan.key, _expected_length(plan))

    def _send(self, plan: DiagPlan, now: float) -> None:
        self.outstanding[plan.tx_id] = Outstanding(plan, now, now + plan.timeout_s)
        self.asked.add(plan.key)
        self.counts["sent"] += 1

    def _cost(self, plan: DiagPlan) -> float:
        frames = 1 + response_frames(self.expected_len.get(plan.key, 8))
        return frames * frame_bits(plan.extended) * (4 if plan.functional else 1)

    def _refill(self, now: float) -> None:
        cap = max(self.rate_bps * 2.0, max((self._cost(p) for p in self.plans.values()), default=0.0))
        if self._tokens_at is None:
            self.tokens = cap  # may start at once, then at the bus share
        else:
            self.tokens = min(cap, self.tokens + (now - self._tokens_at) * self.rate_bps)
        self._tokens_at = now

    def _afford(self, plan: DiagPlan) -> bool:
        cost = self._cost(plan)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    # -- what came back ---------------------------------------------------------------------
    def on_payload(self, rx_id: int, payload: bytes, now: float) -> tuple[DiagPlan | None, Outcome]:
        """A reassembled response at rx_id: the request it answers and what it means."""
        for tx, out in list(self.outstanding.items()):
            plan = out.plan
            if rx_id not in plan.rx_ids or not is_response_to(plan, payload):
                continue
            nrc = negative_response(plan, payload)
            self.expected_len[plan.key] = max(len(payload), 3)
            if nrc == 0x78:
                out.deadline = now + RESPONSE_PENDING_S
                self.counts["nrc_0x78"] += 1
                return plan, "pending"
            self._answered(tx, plan)
            if not plan.functional:
                del self.outstanding[tx]
            out.answered += 1
            if nrc is not None:
                self._negative(plan, nrc, now)
                return plan, "negative"
            self.counts["positive"] += 1
            self.plan_backoff.pop(plan.key, None)  # answered: back to its period
            if plan.kind == "supported":
                self._supported(rx_id, plan, payload)
            return plan, "positive"
        for plan in self.plans.values():
            if plan.key in self.asked and rx_id in plan.rx_ids and is_response_to(plan, payload):
                # Asked, timed out, answered after all: the values are real and current, the
                # ECU is there (its timeout does not count against it).
                self.counts["late"] += 1
                self._answered(plan.tx_id, plan)
                return (None, "late") if negative_response(plan, payload) is not None else (plan, "late")
        self.counts["unsolicited"] += 1
        return None, "unsolicited"

    def _negative(self, plan: DiagPlan, nrc: int, now: float) -> None:
        self.counts[f"nrc_0x{nrc:02X}"] += 1
        if plan.kind == "supported" and nrc in BACK_OFF and self.discovery is not None:
            rx = None if plan.functional else min(plan.rx_ids)
            self.discovery.pending.append((plan.request[1], rx))  # ask that bitmap again
            return
        if nrc in STOP_ASKING:
            if self._contradicts_memory(plan):
                self.forget(f"{plan.label} at 0x{plan.tx_id:X} refused with NRC 0x{nrc:02X}")
                return
            self.disabled[plan.key] = f"NRC 0x{nrc:02X} {STOP_ASKING[nrc]}"
        elif nrc in BACK_OFF:
            level = self.plan_backoff.get(plan.key, 0)
            self.plan_backoff[plan.key] = level + 1
            self.next_due[plan.key] = now + min(BACKOFF_BASE_S * 2 ** level, self.diag.backoff_max_s)

    def _supported(self, rx_id: int, plan: DiagPlan, payload: bytes) -> None:
        d = self.discovery
        pids = parse_supported(plan.request[1], payload)
        if d is None or pids is None:
            self.counts["malformed_bitmap"] += 1
            return
        d.supported.setdefault(rx_id, set()).update(pids)
        nxt = plan.request[1] + 0x20
        if nxt in pids and nxt in BITMAP_PIDS:
            d.pending.append((nxt, rx_id))

    def _answered(self, tx: int, plan: DiagPlan) -> None:
        health = self.ecus.setdefault(tx, EcuHealth())
        health.timeouts, health.level, health.answered = 0, 0, True
        self.answered_keys.add(plan.key)
        self.silences.pop(plan.key, None)

    def expire(self, now: float) -> None:
        """Requests not answered by their deadline: timeouts, and an ECU's backoff."""
        for tx, out in list(self.outstanding.items()):
            if now < out.deadline or self.outstanding.get(tx) is not out:
                continue  # not yet, or dropped by forget() in this very loop
            del self.outstanding[tx]
            if out.plan.functional and out.answered:
                continue  # a functional request collects answers until its deadline
            self.counts["timeout"] += 1
            if out.plan.kind == "supported" and self.discovery is not None:
                rx = None if out.plan.functional else min(out.plan.rx_ids)
                self.discovery.pending.insert(0, (out.plan.request[1], rx))  # ask again later
            health = self.ecus.setdefault(tx, EcuHealth())
            if self._silent_to(out.plan, health):
                continue
            health.timeouts += 1
            if health.timeouts >= self.diag.timeouts_before_backoff:
                if not health.answered and self._from_memory(out.plan):
                    self.forget(f"remembered ECU 0x{tx:X} never answered ({health.timeouts} timeouts)")
                    continue
                health.until = now + min(BACKOFF_BASE_S * 2 ** health.level, self.diag.backoff_max_s)
                health.level += 1
                health.timeouts = 0
                self.counts["ecu_backoff"] += 1

    def _silent_to(self, plan: DiagPlan, health: EcuHealth) -> bool:
        """A timeout of a request this ECU has never answered, though it answers others: the
        request is unsupported, not the ECU gone. Counted against the request alone."""
        if not health.answered or plan.functional or plan.kind == "supported" or plan.key in self.answered_keys:
            return False
        n = self.silences[plan.key] = self.silences.get(plan.key, 0) + 1
        if n >= self.diag.timeouts_before_backoff:
            if self._contradicts_memory(plan):
                self.forget(f"{plan.label} at 0x{plan.tx_id:X} never answered ({n} requests)")
                return True
            self.disabled[plan.key] = f"never answered ({n} requests) while the ECU answered others"
            self.counts["silent_unsupported"] += 1
        return True

    def deadline(self, now: float, state: VehicleState) -> float:
        """The next event time at which due() will have something to do (NEVER while asleep:
        the next frame of the car is what wakes the poller then)."""
        if not self.awake(now):
            return NEVER
        times = [o.deadline for o in self.outstanding.values()]
        if self.discovery is not None and not self.discovery.done and self.discovery.pending:
            times.append(now)
        mode = self.mode(state, now)
        for key, plan in self.plans.items():
            if key in self.disabled or not plan.periods.get(mode) or plan.tx_id in self.outstanding:
                continue
            t = max(self.next_due.get(key, -NEVER), self.ecus.get(plan.tx_id, EcuHealth()).until)
            if t <= now and self.rate_bps > 0:
                t = max(t, now + (self._cost(plan) - self.tokens) / self.rate_bps)  # the bucket refills
            times.append(t)
        return min(times, default=NEVER)


def _expected_length(plan: DiagPlan) -> int:
    ends = [v.spec.end_byte for v in plan.values]
    return len(plan.echo) + max(ends, default=1)
