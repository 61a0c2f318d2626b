"""Real protocol endpoints on this machine for the notification tests: a Web Push service that
decrypts what it receives with the subscription's keys (RFC 8291, http_ece) and checks the
VAPID JWT (RFC 8292); a JSON webhook (Apprise json://); an SMTP inbox (aiosmtpd)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import httpx
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from mqtt_helpers import Mosquitto, free_port
from relay_testkit import csrf_of, populate, relay_config


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class _Server:
    """A threaded HTTP server recording POSTs; ``respond(request_number)`` -> (status, delay_s)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.respond: Callable[[int], tuple[int, float]] = lambda n: (201, 0.0)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                n = len(outer.received)
                outer.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                               body, time.monotonic()))
                status, delay = outer.respond(n)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def to(self, path: str) -> list[Received]:
        return [r for r in list(self.received) if r.path == path]


@dataclass
class BrowserKeys:
    """What a browser makes when it subscribes: a P-256 key pair and a 16-byte auth secret."""

    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def p256dh(self) -> str:
        return b64url(self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


class PushService(_Server):
    """Acts as a browser vendor's push service (RFC 8030): each subscription is a path."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, BrowserKeys] = {}

    def subscription(self, name: str) -> dict[str, Any]:
        keys = self.keys.setdefault(name, BrowserKeys())
        return {"endpoint": f"http://127.0.0.1:{self.port}/push/{name}", "expirationTime": None,
                "keys": {"p256dh": keys.p256dh(), "auth": b64url(keys.auth)}}

    def decrypt(self, name: str, r: Received) -> dict[str, Any]:
        assert r.headers.get("content-encoding") == "aes128gcm", r.headers
        keys = self.keys[name]
        plain = http_ece.decrypt(r.body, private_key=keys.private, auth_secret=keys.auth,
                                 version="aes128gcm")
        return json.loads(plain)

    def messages(self, name: str) -> list[dict[str, Any]]:
        return [self.decrypt(name, r) for r in self.to(f"/push/{name}")]

    def check_vapid(self, r: Received, public_key_b64: str, subject: str) -> dict[str, Any]:
        """RFC 8292: `Authorization: vapid t=<JWT>, k=<key>`; the JWT is ES256 over the key, its
        audience is the push service's origin, it expires within 24 h. Returns the claims."""
        scheme, _, params = r.headers["authorization"].partition(" ")
        assert scheme == "vapid", r.headers["authorization"][:40]
        fields = dict(p.strip().split("=", 1) for p in params.split(","))
        assert fields["k"] == public_key_b64
        head, claims, sig = fields["t"].split(".")
        assert json.loads(unb64url(head)) == {"typ": "JWT", "alg": "ES256"}
        raw = unb64url(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if forged
        body = json.loads(unb64url(claims))
        assert body["aud"] == f"http://127.0.0.1:{self.port}" and body["sub"] == subject
        assert time.time() < body["exp"] <= time.time() + 24 * 3600
        return body


class Webhook(_Server):
    """A JSON webhook (what Apprise's json:// posts to)."""

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def payloads(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.to(f"/{path}")]


class SmtpInbox:
    """A local SMTP server (aiosmtpd) keeping what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[tuple[list[str], str, float]] = []
        inbox = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                inbox.mails.append((list(envelope.rcpt_tos),
                                    envelope.content.decode("utf-8", "replace"), time.monotonic()))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to: str) -> str:
        return (f"mailto://127.0.0.1:{self.port}?to={to}&from=relay@example.org&mode=insecure")

    def to(self, address: str) -> list[str]:
        return [text for rcpt, text, _at in list(self.mails) if address in rcpt]

    def close(self) -> None:
        self.controller.stop()


# -- fixtures (relay/conftest.py imports them) ----------------------------------------------

SUBJECT = "mailto:ops@example.org"


@pytest.fixture
def push() -> Iterator[PushService]:
    p = PushService()
    yield p
    p.close()


@pytest.fixture
def hook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.close()


@pytest.fixture
def smtp() -> Iterator[SmtpInbox]:
    s = SmtpInbox()
    yield s
    s.close()


def notify_config(tmp: Path, broker: Mosquitto, **notify: Any) -> Any:
    return relay_config(tmp, broker, notify={
        "allow_private_addresses": True, "vapid_subject": SUBJECT, "retry_s": 0.2,
        "timeout_s": 1.0, "public_url": "https://relay.example.org", **notify})


@pytest.fixture
def nrelay(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Any]:
    """The relay with notifications on (loopback endpoints allowed), populated."""
    from relay.server import Relay

    r = Relay(notify_config(tmp_path, mosquitto), live_poll_s=1.0)
    populate(r)
    r.start()
    assert r.ingest.connected.wait(30)
    yield r
    r.stop()


def subscribe(client: httpx.Client, subscription: dict[str, Any]) -> httpx.Response:
    token = csrf_of(client.get("/settings").text)
    return client.post("/push/subscribe", json=subscription, headers={"X-CSRF-Token": token})


def add_channel(client: httpx.Client, url: str) -> str:
    token = csrf_of(client.get("/settings").text)
    r = client.post("/settings/channels", data={"csrf": token, "url": url}, follow_redirects=True)
    assert r.status_code == 200
    return r.text
