"""The reference signing of commands (issue 7): canonical JSON, binding to vehicle and command."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import ConfigError
from relay.signing import canonical_json, load_key, sign_command, signature, verify_command

KEY = b"0123456789abcdef0123456789abcdef"
AT = datetime(2026, 11, 22, 2, 15, 0)


def test_signature_is_hmac_sha256_over_the_canonical_json_of_the_five_fields() -> None:
    payload = sign_command(KEY, "car-a", "reply", {"message_id": "m1", "answer": "later"}, AT,
                           command_id="c1")
    signed = ('{"args":{"answer":"later","message_id":"m1"},"command":"reply","id":"c1",'
              '"issued_at":"2026-11-22T02:15:00.000Z","vehicle_id":"car-a"}')
    assert payload == {"id": "c1", "issued_at": "2026-11-22T02:15:00.000Z",
                       "args": {"message_id": "m1", "answer": "later"},
                       "sig": hmac.new(KEY, signed.encode(), hashlib.sha256).hexdigest()}


def test_canonical_json_keeps_unicode_unescaped() -> None:
    assert canonical_json({"b": "午前2時", "a": 1.5}) == '{"a":1.5,"b":"午前2時"}'.encode()


def test_a_signature_does_not_verify_for_another_vehicle_or_command() -> None:
    payload = sign_command(KEY, "car-a", "climate.start", {"target_c": 21.0}, AT)
    assert verify_command(KEY, "car-a", "climate.start", payload)
    assert not verify_command(KEY, "car-b", "climate.start", payload)
    assert not verify_command(KEY, "car-a", "charge.start", payload)
    assert not verify_command(b"another-key-of-16-bytes", "car-a", "climate.start", payload)
    assert not verify_command(KEY, "car-a", "climate.start", {**payload, "args": {"target_c": 30}})


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers(),
                                                      st.none()), max_size=4))
def test_verification_never_raises_on_garbage(payload: dict) -> None:
    assert verify_command(KEY, "car-a", "ping", payload) is False


def test_key_files_are_read_stripped_and_never_quoted_in_errors(tmp_path: Path) -> None:
    (tmp_path / "car-a.key").write_text("  " + KEY.decode() + "\n")
    assert load_key(tmp_path, "car-a") == KEY
    (tmp_path / "car-b.key").write_text("short\n")
    with pytest.raises(ConfigError) as err:
        load_key(tmp_path, "car-b")
    assert "short" not in str(err.value).replace("shorter", "")
    with pytest.raises(ConfigError):
        load_key(tmp_path, "../etc/passwd")
    assert signature(KEY, "v", "c", "i", "t", {}) == signature(KEY, "v", "c", "i", "t", {})
