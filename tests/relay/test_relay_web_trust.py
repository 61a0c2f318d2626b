"""The web side of the trust boundary: sessions end on the server, live streams re-check access,
bodies are capped however they are sent, a stranger cannot lock a user out, cookies are Secure
off loopback, the session secret is never silently replaced, counters stay with fleet operators."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from relay_testkit import (
    PASSWORD,
    SseReader,
    base_url,
    count_rows,
    csrf_of,
    login,
    on_backends,
    persona_message,
    relay_config,
    wait_until,
)
from relay_testkit import add_message as store_message
from sqlalchemy import select

from agent.core.errors import ConfigError
from relay.admin import grant, revoke, set_password
from relay.auth import LoginLimiter, load_or_create_secret
from relay.config import WebConfig
from relay.models import LoginFailure, utcnow
from relay.server import Relay
from relay.web import secure_cookies


def stream_ended(reader: SseReader) -> bool:
    return not reader._thread.is_alive()


def add_message(relay: Relay, text: str) -> None:
    msg = persona_message("car-a", "battery.low", text=text)
    store_message(relay, vehicle_id="car-a", msg_id=msg["id"], ts=utcnow(), kind="battery.low",
                  severity="warning", visibility="private", text=text, data={})


# -- finding 6: live streams -------------------------------------------------------------

@pytest.mark.parametrize("change", ["revoke", "passwd", "logout"])
def test_an_open_live_stream_ends_when_access_ends(relay: Relay, change: str) -> None:
    alice = login(relay, "alice")
    live = SseReader(alice, "/v/car-a/events")
    add_message(relay, "BEFORE")
    wait_until(lambda: any("BEFORE" in d for d in live.of("item")), 10, "the first message live")
    if change == "revoke":
        with relay.ctx.sessions() as s:
            revoke(s, "alice", "owner", "car-a")
    elif change == "passwd":
        with relay.ctx.sessions() as s:
            set_password(s, "alice", "a-brand-new-password")
    else:
        token = csrf_of(alice.get("/").text)
        assert alice.post("/logout", data={"csrf": token}).status_code == 303
    add_message(relay, "AFTER")
    wait_until(lambda: stream_ended(live), 10, "the stream to end")
    assert not any("AFTER" in d for d in live.of("item"))


def test_the_fleet_stream_ends_when_the_operator_role_is_revoked(relay: Relay) -> None:
    live = SseReader(login(relay, "olga"), "/fleet/events")
    wait_until(lambda: live.of("fleet"), 10, "the fleet table live")
    with relay.ctx.sessions() as s:
        revoke(s, "olga", "operator", None)
    relay.ctx.hub.notify(["car-a"])
    wait_until(lambda: stream_ended(live), 10, "the fleet stream to end")


def test_a_stream_follows_a_role_change_without_leaking(relay: Relay) -> None:
    """Owner becomes family: private messages stop appearing on the open stream."""
    with relay.ctx.sessions() as s:
        grant(s, "alice", "family", "car-a")
    live = SseReader(login(relay, "alice"), "/v/car-a/events")
    add_message(relay, "PRIVATE-ONE")
    wait_until(lambda: any("PRIVATE-ONE" in d for d in live.of("item")), 10, "owner sees it")
    with relay.ctx.sessions() as s:
        revoke(s, "alice", "owner", "car-a")
    add_message(relay, "PRIVATE-TWO")
    time.sleep(2.5)
    assert not any("PRIVATE-TWO" in d for d in live.of("item"))
    live.close()


# -- finding 8: sessions, bodies, login limits, cookies, secret, counters ------------------

def test_a_cookie_captured_before_logout_no_longer_works(relay: Relay) -> None:
    alice = login(relay, "alice")
    captured = dict(alice.cookies)
    token = csrf_of(alice.get("/").text)
    assert alice.post("/logout", data={"csrf": token}).status_code == 303
    thief = httpx.Client(base_url=base_url(relay), cookies=captured, timeout=10)
    r = thief.get("/v/car-a")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert thief.get("/v/car-a/events", headers={"accept": "text/event-stream"}).status_code == 401


def test_logging_out_on_one_device_keeps_the_other_logged_in(relay: Relay) -> None:
    phone, laptop = login(relay, "alice"), login(relay, "alice")
    token = csrf_of(phone.get("/").text)
    phone.post("/logout", data={"csrf": token})
    assert laptop.get("/v/car-a").status_code == 200


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"a" * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("path", ["/login", "/v/car-a/command"])
def test_a_chunked_body_over_the_limit_is_refused(relay: Relay, path: str) -> None:
    client = httpx.Client(base_url=base_url(relay), timeout=10)
    r = client.post(path, content=chunks(200_000),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_a_chunked_body_under_the_limit_still_works(relay: Relay) -> None:
    client = httpx.Client(base_url=base_url(relay), timeout=10)
    token = csrf_of(client.get("/login").text)
    body = f"csrf={token}&username=alice&password={PASSWORD}".encode()
    r = client.post("/login", content=iter([body[:10], body[10:]]),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 303


def client_from(relay: Relay, address: str) -> httpx.Client:
    return httpx.Client(base_url=base_url(relay), timeout=10,
                        transport=httpx.HTTPTransport(local_address=address))


def try_login(client: httpx.Client, username: str, password: str) -> int:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf": token, "username": username,
                                       "password": password}).status_code


def test_a_stranger_guessing_cannot_lock_the_user_out(relay: Relay) -> None:
    stranger = client_from(relay, "127.0.0.2")
    codes = [try_login(stranger, "alice", f"guess-{i}") for i in range(7)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    assert try_login(client_from(relay, "127.0.0.3"), "alice", PASSWORD) == 303


def test_guesses_from_many_addresses_are_slowed_down(relay: Relay) -> None:
    for n in range(4, 10):
        assert try_login(client_from(relay, f"127.0.0.{n}"), "alice", "wrong-password") == 401
    started = time.monotonic()
    assert try_login(client_from(relay, "127.0.0.20"), "alice", "wrong-password") == 401
    assert time.monotonic() - started >= 0.4  # the account's backoff, not a lock
    assert try_login(client_from(relay, "127.0.0.21"), "alice", PASSWORD) == 303


def test_the_limiter_keeps_a_blocked_pair_under_a_spray_of_names_and_forgets_old_failures(
        relay: Relay) -> None:
    limiter = LoginLimiter(relay.ctx.sessions, attempts=5, window_s=300)
    t0 = utcnow()
    for _ in range(5):
        limiter.failed("alice", "10.0.0.1", now=t0)
    assert limiter.check("alice", "10.0.0.1", now=t0 + timedelta(seconds=1))[0]
    for i in range(300):
        limiter.failed(f"spray-{i}", f"10.1.{i // 250}.{i % 250}", now=t0 + timedelta(seconds=2))
    assert limiter.check("alice", "10.0.0.1", now=t0 + timedelta(seconds=3))[0]
    assert not limiter.check("alice", "10.0.0.2", now=t0 + timedelta(seconds=3))[0]  # slowed only
    # Past the window the block ends, and the next failure deletes what expired: bounded.
    later = t0 + timedelta(seconds=400)
    assert not limiter.check("alice", "10.0.0.1", now=later)[0]
    limiter.failed("bob", "10.0.0.9", now=later)
    assert count_rows(relay, LoginFailure) == 3
    # No names or addresses in the table, only digests.
    with relay.ctx.sessions() as s:
        keys = set(s.scalars(select(LoginFailure.key)))
    assert all(len(k) == 64 and "bob" not in k for k in keys)


@on_backends("postgresql")
def test_the_login_limit_and_sessions_hold_across_two_relay_instances(
        relay: Relay, tmp_path: Path, mosquitto) -> None:
    other = Relay(relay_config(tmp_path / "b", mosquitto, relay.config.database.url))
    other.start()
    try:
        a, b = client_from(relay, "127.0.0.2"), client_from(other, "127.0.0.2")
        assert [try_login(a, "alice", f"guess-{i}") for i in range(5)] == [401] * 5
        assert try_login(b, "alice", "guess-5") == 429  # B counts A's failures
        # A cookie from A is a session on B: one secret, one sessions table.
        alice_a = login(relay, "alice")
        alice_b = httpx.Client(base_url=base_url(other), cookies=alice_a.cookies, timeout=10)
        page = alice_b.get("/v/car-a", follow_redirects=False)
        assert page.status_code == 200 and "Pre-boy" in page.text
    finally:
        other.stop()


def test_cookies_are_secure_unless_the_relay_listens_on_loopback() -> None:
    assert secure_cookies(WebConfig(host="127.0.0.1")) is False
    assert secure_cookies(WebConfig(host="::1")) is False
    assert secure_cookies(WebConfig(host="localhost")) is False
    assert secure_cookies(WebConfig(host="0.0.0.0")) is True
    assert secure_cookies(WebConfig(host="relay.example.com")) is True
    assert secure_cookies(WebConfig(host="0.0.0.0", secure_cookies=False)) is False


def test_a_relay_listening_beyond_loopback_sets_secure_cookies(tmp_path: Path, mosquitto) -> None:
    relay = Relay(relay_config(tmp_path, mosquitto, web={"host": "0.0.0.0"}))
    relay.start()
    try:
        r = httpx.get(f"http://127.0.0.1:{relay.config.web.port}/login")
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie
    finally:
        relay.stop()


def test_a_short_session_secret_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=r"secret.key: .*shorter than 32"):
        load_or_create_secret(path)
    assert path.read_text() == "short\n"


def test_a_session_secret_with_a_loose_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("x" * 64 + "\n")
    os.chmod(path, 0o644)
    assert load_or_create_secret(path) == "x" * 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_new_session_secret_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.key"
    secret = load_or_create_secret(path)
    assert len(secret) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_only_fleet_wide_operators_see_the_relays_ingest_counters(relay: Relay) -> None:
    from relay.admin import add_user

    with relay.ctx.sessions() as s:
        add_user(s, "oscar", PASSWORD)
        grant(s, "oscar", "operator", "car-b")
    relay.ingest.dropped["invalid"] += 3
    one_car = login(relay, "oscar").get("/fleet")
    assert one_car.status_code == 200 and "Other car" in one_car.text
    assert "This relay instance" not in one_car.text and "invalid 3" not in one_car.text
    assert "invalid 3" in login(relay, "olga").get("/fleet").text
