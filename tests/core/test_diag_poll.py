"""The poller on event time: never wake the car, periods per mode, bus share, backoff, NRCs (pure)."""

from __future__ import annotations

import pytest

from agent.core import vss
from agent.core.diag_plan import BitSpec, DiagPlan, DiagValue
from agent.core.diag_poll import Poller
from agent.core.diag_profile import DiagnosticsConfig
from agent.core.state import VehicleState


def plan(did: int, tx: int = 0x7E4, periods: tuple[float, float, float] = (10, 10, 300)) -> DiagPlan:
    return DiagPlan(key=f"{tx:X}.22{did:04X}", label=f"{did:04X}", tx_id=tx, rx_ids=frozenset({tx + 8}),
                    extended=False, request=bytes([0x22]) + did.to_bytes(2, "big"),
                    periods=dict(zip(("driving", "charging", "parked"), periods, strict=True)),
                    values=[DiagValue("SOC", vss.SOC, BitSpec(0, 8))])


def poller(*plans: DiagPlan, **cfg: object) -> Poller:
    return Poller(list(plans), DiagnosticsConfig(standard_pids=False, **cfg), 500_000)  # type: ignore[arg-type]


def ok(p: DiagPlan) -> bytes:
    return p.echo + b"\x40"


def test_nothing_is_sent_on_a_silent_bus_and_polling_stops_as_soon_as_it_is_quiet() -> None:
    a = plan(0x0101)
    p, state = poller(a), VehicleState()
    assert p.due(1000.0, state) == []  # never heard the car: not a single request
    p.heard(1000.0)
    assert p.due(1000.1, state) == [a]
    p.on_payload(0x7EC, ok(a), 1000.2)
    assert p.due(1400.0, state) == []  # due again, but the car has been quiet for 400 s
    p.heard(1400.0)
    assert p.due(1400.0, state) == [a]
    p.on_payload(0x7EC, ok(a), 1400.1)
    assert p.due(1403.2, state) == []  # 3.2 s without the car's own traffic: quiet
    assert p.counts["sent"] == 2


def test_periods_follow_the_vehicle_mode() -> None:
    a = plan(0x0101, periods=(5, 20, 0))
    p, state = poller(a), VehicleState({vss.SPEED: 100, vss.IS_CHARGING: 100})
    t = 0.0
    state.set(vss.SPEED, 50.0, t)
    sent = []
    while t < 60:
        p.heard(t)
        if p.due(t, state):
            sent.append(t)
            p.on_payload(0x7EC, ok(a), t + 0.05)
        t += 1.0
    assert sent == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]  # driving: every 5 s
    state.set(vss.SPEED, 0.0, t)
    state.set(vss.IS_CHARGING, True, t)
    assert Poller.mode(state, t) == "charging"
    state.set(vss.IS_CHARGING, False, t)
    p.heard(t + 100)
    assert p.due(t + 100, state) == []  # parked: never, in this plan


def test_one_request_at_a_time_per_ecu() -> None:
    a, b, c = plan(0x0101), plan(0x0102), plan(0x0101, tx=0x7E2)
    p, state = poller(a, b, c), VehicleState()
    p.heard(0.0)
    assert p.due(0.0, state) == [a, c]  # b waits for a's answer: one at a time per ECU
    assert p.due(0.1, state) == []
    p.on_payload(0x7EC, ok(a), 0.2)
    assert p.due(0.3, state) == [b]


def test_an_ecu_that_times_out_is_backed_off_exponentially_and_capped() -> None:
    a = plan(0x0101, periods=(1, 1, 1))
    p, state = poller(a, timeouts_before_backoff=3, backoff_max_s=100.0), VehicleState()
    sends: list[float] = []
    t = 0.0
    while t < 600:
        p.heard(t)
        if p.due(t, state):
            sends.append(t)
        t = round(t + 0.5, 1)
    gaps = sorted({round(b - a, 1) for a, b in zip(sends, sends[1:], strict=False)})
    assert gaps[0] == 1.0 and 30.0 <= gaps[1] <= 31.5 and 60.0 <= gaps[2] <= 61.5 and gaps[-1] <= 101.5
    assert p.counts["ecu_backoff"] >= 5


def test_nrc_out_of_range_stops_asking_pending_waits_and_conditions_back_off() -> None:
    a, b, c = plan(0x0101, periods=(1, 1, 1)), plan(0x0101, tx=0x7E2, periods=(1, 1, 1)), \
        plan(0x0101, tx=0x7E3, periods=(1, 1, 1))
    p, state = poller(a, b, c), VehicleState()
    p.heard(0.0)
    assert p.due(0.0, state) == [a, b, c]
    assert p.on_payload(0x7EC, b"\x7f\x22\x31", 0.1) == (a, "negative")
    assert p.on_payload(0x7EA, b"\x7f\x22\x78", 0.1) == (b, "pending")
    assert p.on_payload(0x7EB, b"\x7f\x22\x22", 0.1) == (c, "negative")
    p.heard(4.0)
    assert p.due(4.0, state) == []  # b still waits (responsePending: up to 5 s), c backs off 30 s
    assert p.on_payload(0x7EA, ok(b), 4.5) == (b, "positive")
    assert "0101" not in [x.label for x in p.due(5.0, state) if x.tx_id == 0x7E4]
    assert p.disabled == {a.key: "NRC 0x31 request out of range"}
    p.heard(31.0)
    assert c in p.due(31.0, state)
    assert p.counts["nrc_0x31"] == p.counts["nrc_0x78"] == p.counts["nrc_0x22"] == 1


def test_unsolicited_and_late_responses_are_counted_not_used() -> None:
    a = plan(0x0101)
    p, state = poller(a), VehicleState()
    assert p.on_payload(0x7EC, ok(a), 0.0) == (None, "unsolicited")  # never asked
    assert p.on_payload(0x7EC, b"\x62\x99\x99\x00", 0.0) == (None, "unsolicited")
    p.heard(1.0)
    p.due(1.0, state)
    assert p.on_payload(0x7ED, ok(a), 1.1) == (None, "unsolicited")  # another ECU's id: not its answer
    assert a.tx_id in p.outstanding  # still waiting for the real one
    p.expire(2.5)  # timed out
    assert p.on_payload(0x7EC, ok(a), 2.6) == (a, "late")  # answered after all: real, current values
    assert p.counts["late"] == 1 and p.counts["unsolicited"] == 3 and p.counts["timeout"] == 1


def test_conditions_not_correct_backs_off_once_then_the_period_returns_after_an_answer() -> None:
    """An occasional 0x22 costs one 30 s pause, never a growing one: the 12 V read of a car
    that said 'not now' twice in an hour is back at its period after each answer."""
    a = plan(0x0101, periods=(15, 15, 15))
    p, state = poller(a), VehicleState()
    t, sent = 0.0, []
    while t < 400:
        p.heard(t)
        if p.due(t, state):
            sent.append(t)
            nrc = len(sent) in (3, 9)  # twice 'conditions not correct', with answers between
            p.on_payload(0x7EC, b"\x7f\x22\x22" if nrc else ok(a), t + 0.1)
        t += 1.0
    gaps = [round(b - a_, 1) for a_, b in zip(sent, sent[1:], strict=False)]
    # 30 s after each NRC (at t + 0.1), the second not 60 s; then back on its grid (61 -> 75, not 76)
    assert sorted(set(gaps)) == [14.0, 15.0, 31.0]
    assert gaps.count(31.0) == 2 and p.counts["nrc_0x22"] == 2


def test_a_request_a_live_ecu_never_answers_is_dropped_and_does_not_back_the_ecu_off() -> None:
    """SAE J1979 ECUs answer an unsupported service with silence: three silences from an ECU
    that answers its other requests stop that request; its other requests never pause."""
    a, dtc = plan(0x0101, periods=(5, 5, 5)), plan(0x0202, periods=(5, 5, 5))
    p, state = poller(a, dtc, timeouts_before_backoff=3), VehicleState()
    t, answered = 0.0, []
    while t < 120:
        p.heard(t)
        for x in p.due(t, state):
            if x is a:
                assert p.on_payload(0x7EC, ok(a), t + 0.05)[1] == "positive"
                answered.append(t)
        t = round(t + 0.5, 1)
    assert p.disabled == {dtc.key: "never answered (3 requests) while the ECU answered others"}
    assert p.counts["timeout"] == 3 and p.counts["ecu_backoff"] == 0
    assert [round(b - x, 1) for x, b in zip(answered, answered[1:], strict=False)] == [5.0] * (len(answered) - 1)
    assert len(answered) >= 23  # every 5 s, the whole time


def test_an_ecu_never_heard_from_is_backed_off_not_its_requests_dropped() -> None:
    a = plan(0x0101, periods=(1, 1, 1))
    p, state = poller(a, timeouts_before_backoff=3), VehicleState()
    t = 0.0
    while t < 20:
        p.heard(t)
        p.due(t, state)
        t = round(t + 0.5, 1)
    assert p.disabled == {} and p.counts["ecu_backoff"] == 1


def test_a_late_answer_shows_the_ecu_is_there() -> None:
    a = plan(0x0101, periods=(1, 1, 1))
    p, state = poller(a, timeouts_before_backoff=3), VehicleState()
    t = 0.0
    while t < 60:  # every answer comes 2.5 s after its request, after the 2 s timeout
        p.heard(t)
        if p.due(t, state):
            p.expire(t + 2.0)
            assert p.on_payload(0x7EC, ok(a), t + 2.5) == (a, "late")
        t += 3.0
    assert p.counts["late"] == 20 and p.counts["ecu_backoff"] == 0 and p.disabled == {}


@pytest.mark.parametrize("share", [0.01, 0.002])
def test_polling_stays_under_its_share_of_the_bus(share: float) -> None:
    plans = [plan(0x0101 + i, tx=0x7E0 + i, periods=(1, 1, 1)) for i in range(6)]
    p, state = poller(*plans, bus_share=share), VehicleState()
    bits = 0.0
    t = 0.0
    while t < 600:
        p.heard(t)
        for x in p.due(t, state):
            payload = x.echo + bytes(59)  # a 62-byte answer: 9 frames + the flow control
            p.on_payload(min(x.rx_ids), payload, t + 0.01)
            bits += (1 + 10) * 135
        t = round(t + 0.1, 1)
    assert bits / 600 <= share * 500_000 * 1.05
    assert p.counts["deferred_bus_share"] > 0


def test_a_configured_awake_signal_counts_only_when_true_and_recent() -> None:
    a = plan(0x0101, periods=(1, 1, 1))
    p, state = poller(a, awake_signal=vss.IS_CHARGING), VehicleState()
    p.awake_signal(False, 100.0)  # the car says it is not charging: no evidence
    p.awake_signal(None, 100.0)  # not available / not from this frame: no evidence
    assert p.due(100.0, state) == []
    p.awake_signal(True, 100.0)  # charging, from a frame of the car's own
    assert p.due(100.1, state) == [a]
    p.on_payload(0x7EC, ok(a), 100.2)  # our own answer: keeps nothing awake
    assert p.due(103.0, state) == [a]  # the evidence is 3.0 s old: still within quiet_after_s
    p.on_payload(0x7EC, ok(a), 103.1)
    assert p.due(104.5, state) == []  # 3.2 s since the last evidence: asleep, nothing is sent
    assert p.deadline(104.5, state) == float("inf")
    assert p.counts["awake_signal"] == 1 and p.counts["sent"] == 2


def test_awake_ids_must_not_be_polling_traffic() -> None:
    with pytest.raises(ValueError, match="awake_ids: 0x7EC is polling traffic"):
        DiagnosticsConfig(awake_ids=[0x510, 0x7EC])
    with pytest.raises(ValueError, match="awake_ids: 0x18DAF144 is polling traffic"):
        DiagnosticsConfig(awake_ids=[0x18DAF144], request=[{  # type: ignore[list-item]
            "tx_id": 0x18DA44F1, "rx_id": 0x18DAF144, "service": 0x22, "identifier": 0x0101}])
    assert DiagnosticsConfig(awake_ids=[0x510]).awake_ids == [0x510]


def test_remembered_supported_pids_skip_the_bitmaps() -> None:
    p = Poller([], DiagnosticsConfig(dtc_period_s=0), 500_000)
    state = VehicleState()
    p.remember({})  # nothing known: discovery still runs
    p.heard(0.0)
    assert [x.request for x in p.due(0.0, state)] == [b"\x01\x00"]
    q = Poller([], DiagnosticsConfig(dtc_period_s=0), 500_000)
    q.remember({0x7E8: {0x0D}})
    assert q.discovered() == {0x7E8: {0x0D}}
    q.heard(0.0)
    assert [(x.tx_id, x.request) for x in q.due(0.0, state)] == [(0x7E0, b"\x01\x0d")]  # no bitmap at all


def remembered_poller(supported: dict[int, set[int]]) -> tuple[Poller, VehicleState]:
    p = Poller([], DiagnosticsConfig(dtc_period_s=0, periods={"driving": 1, "charging": 1, "parked": 1}), 500_000)
    p.remember(supported)
    return p, VehicleState()


def run_until_bitmap(p: Poller, state: VehicleState, answer: dict[bytes, bytes | None], t: float) -> list[bytes]:
    """Poll every 0.1 s with the car talking; answer each request from `answer` (None: silence);
    stop at the first bitmap request. The requests sent, in order."""
    sent: list[bytes] = []
    for _ in range(400):
        p.heard(t)
        for x in p.due(t, state):
            sent.append(x.request)
            if x.kind == "supported":
                return sent
            reply = answer.get(x.request)
            if reply is not None:
                p.on_payload(min(x.rx_ids), reply, t + 0.02)
        t += 0.1
    return sent


def test_a_remembered_ecu_that_never_answers_is_forgotten_and_the_bitmaps_asked_again() -> None:
    p, state = remembered_poller({0x7E9: {0x0D}})  # another car's ECU: nobody answers at 0x7E9
    sent = run_until_bitmap(p, state, {}, 0.0)
    assert sent == [b"\x01\x0d"] * 3 + [b"\x01\x00"]  # three timeouts, then discovery again
    assert p.memory_wrong == "remembered ECU 0x7E1 never answered (3 timeouts)"
    assert p.counts["supported_pids_forgotten"] == 1 and p.counts["ecu_backoff"] == 0
    assert "7E1.010D" not in p.plans and p.discovery is not None and not p.discovery.done


def test_a_remembered_pid_refused_or_ignored_by_an_answering_ecu_forgets_the_memory() -> None:
    refused, state = remembered_poller({0x7E8: {0x0D, 0x42}})
    sent = run_until_bitmap(refused, state, {b"\x01\x0d": b"\x41\x0d\x3c", b"\x01\x42": b"\x7f\x01\x31"}, 0.0)
    assert sent == [b"\x01\x0d", b"\x01\x42", b"\x01\x00"]
    assert refused.memory_wrong == "OBD-II PID 42 at 0x7E0 refused with NRC 0x31"
    ignored, state = remembered_poller({0x7E8: {0x0D, 0x42}})  # J1979: silence = not supported
    sent = run_until_bitmap(ignored, state, {b"\x01\x0d": b"\x41\x0d\x3c"}, 0.0)
    assert sent[-1] == b"\x01\x00" and sent.count(b"\x01\x42") == 3
    assert ignored.memory_wrong == "OBD-II PID 42 at 0x7E0 never answered (3 requests)"


def test_a_remembered_memory_the_car_confirms_is_kept() -> None:
    p, state = remembered_poller({0x7E8: {0x0D}})
    sent = run_until_bitmap(p, state, {b"\x01\x0d": b"\x41\x0d\x3c"}, 0.0)
    assert set(sent) == {b"\x01\x0d"} and len(sent) > 30  # every second for 40 s, never a bitmap
    assert p.memory_wrong is None and p.remembered


def test_the_requests_of_a_round_go_out_back_to_back_whatever_the_first_rounds_latency() -> None:
    """One grid per ECU and period: a slow first answer (0.4 s) must not make the second request
    wait 0.4 s in every later round (it waited for its own grid, anchored at its first send)."""
    a, b = plan(0x0101, periods=(1, 1, 1)), plan(0x0102, periods=(1, 1, 1))
    p, state = poller(a, b), VehicleState()
    t, sent = 100.0, []
    latency = {1: 0.4}  # the first round's first answer is slow, every other takes 20 ms
    while t < 105.0:
        p.heard(t)
        for x in p.due(t, state):
            sent.append((round(t, 3), x.label))
            n = len(sent)
            p.on_payload(0x7EC, ok(x), t + latency.get(n, 0.02))
            t = round(t + latency.get(n, 0.02), 3)  # the runtime asks what is due at each answer
            p.heard(t)
            for y in p.due(t, state):
                sent.append((t, y.label))
                p.on_payload(0x7EC, ok(y), t + 0.02)
        t = round(t + 0.01, 3)
    assert sent[:4] == [(100.0, "0101"), (100.4, "0102"), (101.0, "0101"), (101.02, "0102")]
    assert all(t2 - t1 == pytest.approx(0.02) for (t1, x1), (t2, _) in zip(sent, sent[1:], strict=False)
               if x1 == "0101" and t1 > 100.5)
