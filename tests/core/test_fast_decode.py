"""The hot path's own decoding agrees with cantools, and start-up insists on the fast bitstruct."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from frames import EV_CONFIG

from agent.core.decode import MessagePlan
from agent.core.errors import ConfigError
from agent.profile.config import load_config
from agent.profile.dbc import load_dbc
from agent.profile.vehicle import _solo, bit_field, compilable, load_vehicle

ROOT = Path(__file__).resolve().parents[2]
REALDATA = ROOT.parent / "shared" / "realdata"
DBCS = sorted((ROOT / "dbc").glob("*.dbc")) + sorted(REALDATA.glob("*/*.dbc"))


@pytest.mark.parametrize("dbc", DBCS, ids=lambda p: p.name)
def test_shift_and_mask_extraction_equals_cantools_raw_decode_on_random_payloads(dbc: Path) -> None:
    db = load_dbc(dbc)
    rng = random.Random(dbc.name)
    checked = 0
    for message in db.messages:
        if not compilable(message):
            continue
        fields = {s.name: bit_field(s, message.length) for s in message.signals}
        for _ in range(20):
            data = rng.randbytes(message.length)
            le, be = int.from_bytes(data, "little"), int.from_bytes(data, "big")
            for s in message.signals:
                mux = message.get_signal_by_name(s.multiplexer_signal) if s.multiplexer_ids else None
                if mux is not None and fields[mux.name].raw(le, be) not in s.multiplexer_ids:
                    continue  # another page: the decoder skips this signal
                # each signal alone, as the agent decodes it: a message with overlapping signals
                # does not decode whole in cantools
                expected = _solo(message, [s.name]).decode(data, decode_choices=False, scaling=False)
                assert fields[s.name].raw(le, be) == expected[s.name], f"{message.name}.{s.name} {data.hex()}"
                checked += 1
    assert checked > 0


def test_reference_vehicle_decodes_every_mapped_message_without_cantools() -> None:
    vehicle = load_vehicle(load_config(EV_CONFIG))
    plans: list[MessagePlan] = list(vehicle.plans.values())
    assert plans and all(p.compiled for p in plans)


def test_missing_c_bitstruct_stops_start_up_with_the_fix_in_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitstruct.c", None)  # import bitstruct.c now fails
    monkeypatch.delenv("CARFRIEND_ALLOW_SLOW_DECODE", raising=False)
    with pytest.raises(ConfigError) as exc:
        load_vehicle(load_config(EV_CONFIG))
    assert "bitstruct.c" in str(exc.value) and "CARFRIEND_ALLOW_SLOW_DECODE=1" in str(exc.value)


def test_allow_slow_decode_starts_without_c_bitstruct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitstruct.c", None)
    monkeypatch.setenv("CARFRIEND_ALLOW_SLOW_DECODE", "1")
    assert load_vehicle(load_config(EV_CONFIG)).plans


def test_multiplexer_value_of_no_page_is_counted_as_a_decode_error_like_cantools() -> None:
    vehicle = load_vehicle(load_config(EV_CONFIG))
    decoder = vehicle.new_decoder()
    odometer = vehicle.find_message("Odometer_Service")
    assert odometer is not None and vehicle.plans[odometer.frame_id].compiled
    decoder.decode(0.0, odometer.frame_id, bytes([7, 1, 2, 3, 4, 5, 6, 7]))  # ODO_Mux 7: no such page
    assert decoder.drops.decode_error == 1 and decoder.decoded == 0
