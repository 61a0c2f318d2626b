"""The notification secrets: the VAPID key (Web Push), the key that encrypts channel URLs, and
checking, masking and encrypting a user's Apprise URL (reads/writes the key files; DNS look-ups).

A channel URL holds credentials (a bot token, a mail password, a webhook id): it is stored only
encrypted (Fernet), shown only masked, and never logged.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02

from agent.core.errors import ConfigError
from agent.profile.config import credential
from relay.config import NotifyConfig

log = logging.getLogger(__name__)
# Schemes whose host is an address the user chooses (self-hosted services, webhooks): the
# address is checked, so a user cannot make the relay post into its own network.
HOSTED_BY_USER = frozenset({"json", "jsons", "form", "forms", "xml", "xmls", "hassio", "hassios",
                            "gotify", "gotifys", "signal", "signals", "mmost", "mmosts", "ntfy",
                            "ntfys", "matrix", "matrixs", "rocket", "rockets", "mailto", "mailtos"})
MAX_URL = 2000


class ChannelRefused(Exception):
    """A channel URL the relay will not store; the message is safe to show (it holds no secret)."""


# -- key files --------------------------------------------------------------------------------

def _read_or_create(path: Path, cred: str, make: bytes, what: str) -> bytes:
    """The systemd credential, else the file, created 0600 with ``make`` when missing; a file
    readable by others is made private."""
    source = credential(cred) or path
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(make)
        log.info("created %s %s", what, path)
        return make
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the {what}: {exc.strerror or exc}") from None
    if source == path and stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s: the %s was readable by others; now 0600", path, what)
    return data


def load_vapid(cfg: NotifyConfig) -> Vapid02:
    """The relay's VAPID key pair (P-256), generated on first start."""
    fresh = Vapid02()
    fresh.generate_keys()
    pem = fresh.private_pem()
    data = _read_or_create(cfg.vapid_key_file, "vapid-key", pem, "VAPID key")
    try:
        return Vapid02.from_pem(data)
    except Exception as exc:
        raise ConfigError(f"{cfg.vapid_key_file}: not a VAPID private key (PEM, P-256): "
                          f"{type(exc).__name__}") from None


def public_key_b64(vapid: Vapid02) -> str:
    """The applicationServerKey a browser subscribes with: the uncompressed point, base64url."""
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_channel_key(cfg: NotifyConfig) -> Fernet:
    data = _read_or_create(cfg.channel_key_file, "notify-channel-key", Fernet.generate_key(),
                           "channel encryption key")
    try:
        return Fernet(data.strip())
    except ValueError:
        raise ConfigError(f"{cfg.channel_key_file}: not a channel encryption key (32 bytes, "
                          "base64url); delete it to have one made (stored channels are then lost)") \
            from None


# -- channel URLs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckedChannel:
    scheme: str
    label: str  # masked, safe to show and log
    url: str


def check_channel_url(url: str, cfg: NotifyConfig) -> CheckedChannel:
    """A URL Apprise accepts, of an allowed scheme, not pointing into the relay's own network
    (unless allowed). Raises ChannelRefused with a message that holds no part of the secret."""
    import apprise

    url = url.strip()
    if not url or len(url) > MAX_URL or not url.isprintable():
        raise ChannelRefused(f"a channel URL is 1 to {MAX_URL} printable characters")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in cfg.apprise_schemes:
        shown = scheme[:16] if scheme.isalnum() else "?"
        raise ChannelRefused(f"the service {shown!r} is not offered here (one of: "
                             f"{', '.join(sorted(cfg.apprise_schemes))})")
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        raise ChannelRefused(f"Apprise does not understand this {scheme}:// URL; see its "
                             "documentation for the form")
    if scheme in HOSTED_BY_USER and not cfg.allow_private_addresses:
        _check_public(getattr(plugin, "host", None) or urlsplit(url).hostname, scheme)
    return CheckedChannel(scheme, mask(plugin.url(privacy=True)), url)


def _check_public(host: str | None, scheme: str) -> None:
    host = (host or "").strip("[]")
    if not host:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return  # not resolvable now: Apprise will fail to deliver (or it is not a host)
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved \
                or addr.is_multicast or addr.is_unspecified:
            raise ChannelRefused(f"this {scheme}:// URL points to a private or local address, "
                                 "which the relay does not post to")


def mask(private_url: str) -> str:
    """Apprise's privacy form of a URL (passwords and tokens starred) with the query left out
    and every path segment longer than 4 characters shortened (webhook ids live there)."""
    head, _, _query = private_url.partition("?")
    scheme, sep, rest = head.partition("://")
    parts = rest.split("/")
    shown = [parts[0]] + [p if len(p) <= 4 else p[:3] + "…" for p in parts[1:] if p]
    return (scheme + sep + "/".join(shown))[:200]


def encrypt(key: Fernet, url: str) -> str:
    return key.encrypt(url.encode()).decode()


def decrypt(key: Fernet, token: str) -> str | None:
    """The URL, or None when the key changed since it was stored."""
    try:
        return key.decrypt(token.encode()).decode()
    except InvalidToken:
        return None
