"""The pure parts of notifications: payload shortening, action tokens, masking and redacting
channel URLs, and which channel URLs are refused (no relay, no network)."""

from __future__ import annotations

import json
import time

import pytest

from relay.config import NotifyConfig
from relay.notify import payload
from relay.notify.deliver import redact
from relay.notify.secrets import ChannelRefused, check_channel_url, mask

SECRET = "x" * 48


def note(text: str, answers: tuple[str, ...] = ("ok", "later")) -> payload.Content:
    return payload.content("car-a", "Kit", "m-1", 7, text, "Kit", "info", list(answers), True,
                           payload.action_token(SECRET, 1, "car-a", "m-1"))


@pytest.mark.parametrize("text", ["short", "é" * 4000, "充" * 4000, "a" * 4000, "\U0001f697" * 4000])
def test_a_push_payload_always_fits_and_keeps_as_much_text_as_fits(text: str) -> None:
    data = payload.push_payload(note(text))
    assert len(data) <= payload.MAX_PUSH_PLAINTEXT
    doc = json.loads(data)
    assert doc["token"] and [a["title"] for a in doc["actions"]] == ["OK", "Later"]
    if doc["body"] != text:
        assert doc["body"].endswith("…") and text.startswith(doc["body"][:-1])
        one_more = {**doc, "body": text[:len(doc["body"])] + "…"}
        assert len(json.dumps(one_more, ensure_ascii=False, separators=(",", ":")).encode()) \
            > payload.MAX_PUSH_PLAINTEXT  # not a character more would have fitted


def test_family_and_questions_without_answer_rights_carry_no_token() -> None:
    c = payload.content("car-a", "Kit", "m-1", 7, "hi", "", "warning", ["ok"], False, "tok")
    doc = json.loads(payload.push_payload(c))
    assert "token" not in doc and "actions" not in doc and doc["title"] == "Kit (warning)"


def test_an_action_token_is_bound_signed_and_expires() -> None:
    token = payload.action_token(SECRET, 3, "car-a", "m-9")
    assert payload.read_action_token(SECRET, token) == (3, "car-a", "m-9")
    assert payload.read_action_token("y" * 48, token) is None
    assert payload.read_action_token(SECRET, token[:-3] + "abc") is None
    later = time.time() + payload.ACTION_MAX_AGE_S + 10
    assert payload.read_action_token(SECRET, token, now=later) is None
    assert payload.read_action_token(SECRET, "x" * 600) is None


def test_a_masked_url_shows_the_service_not_the_secret() -> None:
    assert mask("json://hooks.example.org/api/webhook/abcdef0123456789?method=POST") == \
        "json://hooks.example.org/api/web…/abc…"
    assert mask("tgram://1...n/987654/?image=False") == "tgram://1...n/987…"


def test_redact_removes_every_part_of_the_url_but_the_host() -> None:
    url = "mailtos://alice:app-password-123@smtp.example.org:465?to=bob@example.org"
    text = "Failed to send to bob@example.org via smtp.example.org with alice:app-password-123"
    out = redact(text, url)
    assert "app-password-123" not in out and "bob@example.org" not in out and "alice" not in out
    assert "smtp.example.org" in out


@pytest.mark.parametrize(("url", "why"), [
    ("json://127.0.0.1/x", "private or local"),
    ("jsons://[::1]/x", "private or local"),
    ("json://169.254.169.254/latest/meta-data", "private or local"),
    ("windows://", "not offered here"),
    ("xyz://a", "not offered here"),
    ("tgram://", "does not understand"),
    ("json://a\x00b", "printable"),
    ("json://" + "a" * 2100, "printable"),
])
def test_refused_channel_urls(url: str, why: str) -> None:
    with pytest.raises(ChannelRefused, match=why):
        check_channel_url(url, NotifyConfig())


def test_a_hosted_service_url_is_accepted_and_masked() -> None:
    checked = check_channel_url("tgram://123456789:AAEsecretTOKENvalue/987654321", NotifyConfig())
    assert checked.scheme == "tgram" and "AAEsecretTOKENvalue" not in checked.label
