"""A DBC describing a reassembled diagnostic response ("UDS DBC"): one 62-byte message multiplexed
on service+DID, decoded through the ISO-TP path into VSS, and check-config's errors (IO: files)."""

from __future__ import annotations

from pathlib import Path

import cantools
import pytest
from diag_helpers import polling

from agent.core import vss
from agent.core.errors import ConfigError
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

DBC = Path(__file__).resolve().parent / "data" / "uds_bms.dbc"
CURRENT = "Vehicle.Powertrain.TractionBattery.CurrentCurrent"
VOLTAGE = "Vehicle.Powertrain.TractionBattery.CurrentVoltage"
SOH = "Vehicle.Powertrain.TractionBattery.StateOfHealth"

CONFIG = f"""
[vehicle]
id = "uds-dbc-car"
[can]
interface = "virtual"
dbc = ["{DBC}"]
[signals]
"Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed" = "BMS_Response.SOC_Display"
"{CURRENT}" = "BMS_Response.PackCurrent"
"{VOLTAGE}" = "BMS_Response.PackVoltage"
"{SOH}" = "BMS_Response.SOH"
"Vehicle.LowVoltageBattery.CurrentVoltage" = "BMS_Response.AuxVoltage"
"Vehicle.Powertrain.TractionBattery.Charging.IsCharging" = {{ source = "BMS_Response.Charging", true_values = ["CHARGING"] }}
[diagnostics]
standard_pids = false
[[diagnostics.request]]
name = "bms_0101"
tx_id = 0x7E4
rx_id = 0x7EC
service = 0x22
identifier = 0x0101
dbc_message = "BMS_Response"
[[diagnostics.request]]
name = "bms_0105"
tx_id = 0x7E4
rx_id = 0x7EC
service = 0x22
identifier = 0x0105
dbc_message = "BMS_Response"
"""

# A recorded session (candump hex): the BMS's two 62-byte answers, a first frame and 8 consecutive each.
RECORDED = {
    0x0101: ["103E620101000000", "2100A000000080FF", "22380E4200000000", "2300000000000000", "2400000000000000",
             "257D000000000000", "2600000000000000", "2700000000000000", "2800000000000000"],
    0x0105: ["103E620105000000", "2100000000000000", "2200000000000000", "2300000000000000", "2403A2000000009B",
             "2500000000000000", "2600000000000000", "2700000000000000", "2800000000000000"],
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "uds.toml"
    path.write_text(text)
    return path


def test_a_recorded_multi_frame_answer_decodes_through_iso_tp_by_the_dbc_page_of_its_did(tmp_path: Path) -> None:
    diag, sent = polling(write(tmp_path, CONFIG))
    pipeline = diag.pipeline
    assert pipeline.vehicle.plans == {}  # the response message is not decoded as a broadcast frame
    t, mark = 1000.0, 0
    for did, frames in RECORDED.items():
        for _ in range(50):  # until the request for this DID goes out
            if any(bytes(m.data[1:4]) == b"\x22" + did.to_bytes(2, "big") for m in sent[mark:]):
                break
            t += 0.1
            diag.on_frame(t, 0x510, bytes(8))  # the car talks
            diag.poll(t)
        else:
            raise AssertionError(f"no request for DID 0x{did:04X}")
        mark = len(sent)
        for hexframe in frames:
            t += 0.002
            assert diag.on_frame(t, 0x7EC, bytes.fromhex(hexframe))
        assert (sent[mark].arbitration_id, sent[mark].data[0]) == (0x7E4, 0x30)  # our flow control
    values = pipeline.state.values
    assert values[vss.SOC] == 77.5  # from the 0x0105 page, not the 0x0101 page's SOC_BMS
    assert values[CURRENT] == -20.0 and values[VOLTAGE] == 365.0 and values[SOH] == 93.0
    assert values["Vehicle.LowVoltageBattery.CurrentVoltage"] == 12.5  # an Intel (little-endian) signal
    assert values[vss.IS_CHARGING] is True
    # The same payloads through cantools itself: the precompiled bit fields agree.
    message = cantools.database.load_file(DBC).get_message_by_name("BMS_Response")
    payload = b"".join(bytes.fromhex(f)[1:] for f in RECORDED[0x0101])[1:63]
    decoded = message.decode(payload, decode_choices=False)
    assert (decoded["PackCurrent"], decoded["PackVoltage"], decoded["AuxVoltage"]) == (-20.0, 365.0, 12.5)
    assert diag.counts["positive"] == 2 and not diag.counts["too_short"] and not diag.counts["wrong_echo"]


def test_a_truncated_answer_writes_nothing(tmp_path: Path) -> None:
    diag, sent = polling(write(tmp_path, CONFIG))
    pipeline = diag.pipeline
    diag.on_frame(1000.0, 0x510, bytes(8))
    diag.poll(1000.0)
    assert diag.on_frame(1000.01, 0x7EC, bytes.fromhex("07620101000000A0"))  # a single frame: 4 bytes of data
    assert vss.SOC not in pipeline.state.values and "Vehicle.Powertrain.TractionBattery.CurrentCurrent" \
        not in pipeline.state.values
    assert diag.counts["too_short"] >= 4


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: c.replace('dbc_message = "BMS_Response"\n[[', 'dbc_message = "BMS_Reply"\n[['),
     r'uds.toml: \[\[diagnostics.request\]\] bms_0101: dbc_message "BMS_Reply" is not in the config\'s DBCs \(.*uds_bms.dbc\)'),
    (lambda c: c.replace("identifier = 0x0105", "identifier = 0x0109"),
     r'uds.toml: \[\[diagnostics.request\]\] bms_0105: dbc_message "BMS_Response" \(.*uds_bms.dbc\): no page of its '
     r"multiplexer matches the echo 62 01 09"),
])
def test_check_config_names_file_request_and_message(tmp_path: Path, edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=expected):
        load_vehicle(load_config(write(tmp_path, edit(CONFIG)), environ={}))


def test_a_message_too_short_for_its_signals_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.dbc"
    short.write_text(DBC.read_text().replace("BMS_Response: 62 BMS", "BMS_Response: 32 BMS"))
    text = CONFIG.replace(str(DBC), str(short))
    with pytest.raises(ConfigError) as err:
        load_vehicle(load_config(write(tmp_path, text), environ={}))
    message = str(err.value)
    assert 'bms_0101: dbc_message "BMS_Response"' in message and "short.dbc" in message
    assert 'signal "AuxVoltage" ends at byte' in message and "too short" in message
    tiny = tmp_path / "tiny.dbc"
    tiny.write_text("VERSION \"\"\n\nNS_ :\n\nBS_:\n\nBU_: BMS\n\nBO_ 2028 BMS_Response: 3 BMS\n"
                    " SG_ ServiceDID : 7|24@0+ (1,0) [0|16777215] \"\" BMS\n")
    with pytest.raises(ConfigError, match=r"bms_0101: dbc_message \"BMS_Response\" \(.*tiny.dbc\): 3 bytes, too short"):
        load_vehicle(load_config(write(tmp_path, CONFIG.replace(str(DBC), str(tiny))), environ={}))
