"""Deliver one notification: Web Push with pywebpush (RFC 8030 request, RFC 8291 aes128gcm
payload, RFC 8292 VAPID), other services with Apprise (does network IO).

The libraries' exceptions become an Outcome here, in one place: delivered, retry later, gone
(the push service forgot the subscription: 404/410) or failed for good. A failure's detail is
for the owner's status page and the log, so it never holds the channel URL or part of it.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

log = logging.getLogger(__name__)


class _AppriseTap(logging.Filter):
    """Apprise logs what it sends to (addresses, whole URLs): no handler may ever see it, the
    relay's own or one a test or a host added. A filter on its logger drops every record,
    after keeping the warnings of the delivery running in this thread (redacted later)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        lines = getattr(self.local, "lines", None)
        if lines is not None and record.levelno >= logging.WARNING and len(lines) < 20:
            lines.append(record.getMessage()[:500])
        return False


_TAP = _AppriseTap()
_APPRISE_LOG = logging.getLogger("apprise")
_APPRISE_LOG.addFilter(_TAP)
_APPRISE_LOG.setLevel(logging.WARNING)  # its debug lines are not even formatted

RETRY_STATUS = {408, 425, 429}
GONE_STATUS = {404, 410}
PUSH_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Outcome:
    ok: bool = False
    retry: bool = False
    gone: bool = False
    detail: str = ""


def web_push(endpoint: str, p256dh: str, auth: str, data: bytes, vapid: Vapid02, subject: str,
             timeout_s: float, urgent: bool = False) -> Outcome:
    info = {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}
    try:
        webpush(info, data=data, vapid_private_key=vapid, vapid_claims={"sub": subject},  # type: ignore[arg-type]
                timeout=timeout_s, ttl=PUSH_TTL_S,
                headers={"Urgency": "high" if urgent else "normal"})
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in GONE_STATUS:
            return Outcome(gone=True, detail=f"push service: {status} (subscription expired)")
        retry = status is None or status in RETRY_STATUS or status >= 500
        return Outcome(retry=retry, detail=f"push service answered {status}")
    except requests.Timeout:
        return Outcome(retry=True, detail=f"push service: no answer within {timeout_s:g} s")
    except requests.RequestException as exc:
        return Outcome(retry=True, detail=f"push service unreachable ({type(exc).__name__})")
    except (ValueError, TypeError) as exc:  # keys the browser sent that do not decode
        return Outcome(gone=True, detail=f"subscription keys unusable ({type(exc).__name__})")
    return Outcome(ok=True)


def apprise_notify(url: str, title: str, body: str, severity: str, timeout_s: float) -> Outcome:
    import apprise

    ap = apprise.Apprise()
    if not ap.add(url):
        return Outcome(detail="Apprise no longer accepts this channel URL")
    kind = {"warning": apprise.NotifyType.WARNING,
            "critical": apprise.NotifyType.FAILURE}.get(severity, apprise.NotifyType.INFO)
    ok, _TAP.local.lines = False, []
    try:
        ok = bool(ap.notify(title=title, body=body, notify_type=kind))
    except Exception as exc:  # a plugin bug: counted like a failed delivery
        log.warning("Apprise raised %s", type(exc).__name__)
    finally:
        lines, _TAP.local.lines = _TAP.local.lines, None
    if ok:
        return Outcome(ok=True)
    return Outcome(retry=True, detail=redact(_last_line(lines), url) or "the service did not accept it")


def _last_line(lines: list[str]) -> str:
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1].splitlines()[0][:200] if lines else ""


def redact(text: str, url: str) -> str:
    """text with every piece of the URL that could be a secret replaced: its credentials,
    path segments and query values (the service's host name stays)."""
    pieces = set(re.split(r"[/:@?&=#,+]+", url.split("://", 1)[-1]))
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3 and not (piece in host and "." in host):  # the host is shown anyway
            text = text.replace(piece, "***")
    return text[:300]
