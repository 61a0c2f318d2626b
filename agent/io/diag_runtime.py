"""Diagnostic polling in the agent: frames in, ISO-TP ports, the poller, values into the pipeline (IO).

Fed by the daemon's (or replay's) own receive loop, frame by frame: response frames go to the
ISO-TP port of their id, every other frame of the car tells the poller it is awake. Requests
go out through ``send`` (the daemon's bus); without one (replay, listen-only) nothing is ever
sent and responses in a recorded session are matched to their request by their echo.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import can

from agent.core.diag_j1979 import replay_plans
from agent.core.diag_plan import DiagDecoder, DiagPlan, DiagProfile, negative_response
from agent.core.diag_poll import Poller
from agent.core.diag_profile import FUNCTIONAL_ID, OBD_RESPONSE_IDS
from agent.core.pipeline import Pipeline
from agent.io.isotp_link import IsoTpPort
from agent.io.pid_memory import forget_supported, load_supported, save_supported

log = logging.getLogger(__name__)
Send = Callable[[can.Message], None]


class DiagRuntime:
    """One vehicle's diagnostic polling; runs on the worker thread that owns the pipeline."""

    def __init__(self, profile: DiagProfile, pipeline: Pipeline, send: Send | None, *, bitrate: int = 500_000,
                 memory: Path | None = None, vehicle_id: str = "") -> None:
        """memory: the state-dir file remembering the supported standard PIDs across restarts."""
        self.profile = profile
        self.pipeline = pipeline
        self.send = send
        self.counts: Counter[str] = Counter()
        broadcast = frozenset(s.path for plan in pipeline.decoder.plans.values() for s in plan.signals)
        skip = profile.skip_paths | broadcast
        self.poller = Poller(profile.plans, profile.config, bitrate, skip_paths=skip)
        self.poller.counts = self.counts
        self.memory = memory if send is not None and profile.config.standard_pids else None
        self.vehicle_id = vehicle_id
        self._remembered = False
        self.saver: threading.Thread | None = None  # writes the memory file once discovery is done
        if self.memory is not None:
            known = load_supported(self.memory, vehicle_id)
            if known is not None:
                self.poller.remember(known)
                self._remembered = True
                self.counts["supported_pids_remembered"] += 1
        self.decoder = DiagDecoder(pipeline.state)
        self.decoder.drops = self.counts
        self.replay_plans: list[DiagPlan] = []
        if send is None and profile.config.standard_pids:
            self.replay_plans = replay_plans(profile.config, skip)
        self.ports: dict[int, IsoTpPort] = {}
        pairs = {(p.tx_id, rx, p.extended) for p in profile.plans for rx in p.rx_ids if not p.functional}
        if profile.config.standard_pids or any(p.functional for p in profile.plans):
            pairs |= {(rx - 8, rx, False) for rx in OBD_RESPONSE_IDS}
        for tx, rx, ext in sorted(pairs):
            self.ports.setdefault(rx, IsoTpPort(tx, rx, ext, send, self.counts))
        self._functional: dict[bool, IsoTpPort] = {}
        awake = profile.config.awake_signal
        self.awake_signal_ids = frozenset(
            fid for fid, plan in pipeline.decoder.plans.items() if any(sp.path == awake for sp in plan.signals)
        ) if awake else frozenset()
        self.ours = frozenset(self.ports) | {p.tx_id for p in profile.plans} | {FUNCTIONAL_ID} | \
            {rx - 8 for rx in OBD_RESPONSE_IDS}

    # -- frames in ----------------------------------------------------------------------------
    def on_frame(self, ts: float, can_id: int, data: bytes) -> bool:
        """One received frame; True when it was diagnostic traffic (not for the DBC decoder)."""
        port = self.ports.get(can_id)
        if port is None:
            if can_id in self.ours:
                return True  # another tester's request or flow control: not the car's own traffic
            self.poller.heard(ts)
            return False
        port.now = ts
        for payload in port.feed(data):
            self._payload(can_id, payload, ts)
        return True

    def after_broadcast(self, ts: float, can_id: int) -> None:
        """A frame of the car's own went through the DBC decoder: a true awake signal it carried
        (stamped at ts, so read from this very frame, never from a polled answer) shows the car awake."""
        if can_id in self.awake_signal_ids:
            path = self.profile.config.awake_signal
            assert path is not None
            self.poller.awake_signal(self.pipeline.state.current(path, ts, 0.0), ts)

    def _payload(self, rx_id: int, payload: bytes, ts: float) -> None:
        if self.send is None:
            self._recorded(rx_id, payload, ts)
            return
        plan, outcome = self.poller.on_payload(rx_id, payload, ts)
        if plan is not None and outcome in ("positive", "late") and plan.kind != "supported":
            self.pipeline.values_changed(self.decoder.apply(plan, payload, ts), ts)
        if outcome != "pending":
            self._send_due(ts)  # that ECU is free: its next request now, not at the next loop turn

    def _recorded(self, rx_id: int, payload: bytes, ts: float) -> None:
        """Replay: a response in a recorded session, matched to a known request by its echo."""
        for plan in self._candidates(rx_id):
            if payload.startswith(plan.echo):
                self.pipeline.values_changed(self.decoder.apply(plan, payload, ts), ts)
                return
            nrc = negative_response(plan, payload)
            if nrc is not None:
                self.counts[f"nrc_0x{nrc:02X}"] += 1
                return
        self.counts["unmatched_response"] += 1

    def _candidates(self, rx_id: int) -> list[DiagPlan]:
        return [p for p in (*self.poller.plans.values(), *self.replay_plans) if rx_id in p.rx_ids]

    # -- requests out -------------------------------------------------------------------------
    def poll(self, now: float) -> None:
        """Send what is due at event time `now` (nothing while the car is quiet)."""
        if self.send is None:
            return
        for port in self.ports.values():
            for payload in port.tick():
                self._payload(port.rx_id, payload, now)
        self._send_due(now)

    def _send_due(self, now: float) -> None:
        due = self.poller.due(now, self.pipeline.state)
        if self.memory is not None:
            self._update_memory()
        for plan in due:
            try:
                port = self._port_for(plan)
                port.now = now
                port.send(plan.request, functional=plan.functional)
            except (can.CanError, OSError, RuntimeError, ValueError) as exc:
                self.counts["send_failed"] += 1
                self.poller.outstanding.pop(plan.tx_id, None)
                log.debug("request %s not sent: %s", plan.label, exc)

    def _update_memory(self) -> None:
        """Write the supported PIDs once discovered; delete a memory the car contradicted.
        Off the worker thread: a disk stalled by other writers must not stall polling."""
        assert self.memory is not None
        wrong = self.poller.memory_wrong
        if wrong is not None:
            self.poller.memory_wrong = None
            log.warning("%s: remembered supported PIDs do not fit this car (%s); asking the car again",
                        self.memory, wrong)
            self._in_background(forget_supported, self.memory)
            self._remembered = False
        if not self._remembered:
            found = self.poller.discovered()
            if found is not None:
                snapshot = {rx: set(pids) for rx, pids in found.items()}
                self._in_background(save_supported, self.memory, self.vehicle_id, snapshot)
                self._remembered = True

    def _in_background(self, target: Callable[..., None], *args: object) -> None:
        previous = self.saver
        def run() -> None:
            if previous is not None:
                previous.join()  # in order: a delete never overtakes the write before it
            target(*args)
        self.saver = threading.Thread(target=run, name="pid-memory", daemon=True)
        self.saver.start()

    def _port_for(self, plan: DiagPlan) -> IsoTpPort:
        if plan.functional:
            port = self._functional.get(plan.extended)
            if port is None:
                port = self._functional[plan.extended] = IsoTpPort(plan.tx_id, 0x7E8, plan.extended,
                                                                  self.send, self.counts)
            return port
        return self.ports[min(plan.rx_ids)]

    def counters(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
