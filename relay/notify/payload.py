"""What a notification says: title, text, where a tap leads, answer actions with their token,
and the Web Push payload shortened to fit the push services' 4 KB limit (no IO).

An action token lets the service worker send the owner's answer without opening the page (it
has no CSRF token): signed with the relay's session secret, bound to the user, the vehicle and
the message, and only good for a few days. The answer itself is checked like a form post.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

# RFC 8291 aes128gcm: a 4096-byte record holds 4096 - 86 (header) - 16 (tag) - 1 (padding
# delimiter) = 3993 bytes of plaintext. Keep some room.
MAX_PUSH_PLAINTEXT = 3900
ACTION_SALT = "carfriend-notification-action"
ACTION_MAX_AGE_S = 7 * 24 * 3600
ANSWER_LABELS = {"ok": "OK", "yes": "Yes", "no": "No", "later": "Later", "now": "Now"}
MAX_ACTIONS = 2  # what Chrome shows (Notification.maxActions)


@dataclass(frozen=True)
class Content:
    """A notification of one message, for one user."""

    title: str
    body: str
    url: str  # relative: the conversation, at the message
    tag: str  # the message id: a repeat replaces, never stacks
    vehicle_id: str
    message_id: str
    severity: str
    answers: tuple[str, ...] = ()  # offered only to owners, for questions
    token: str = ""


def content(vehicle_id: str, vehicle_name: str, msg_id: str, seq: int, text: str, persona: str,
            severity: str, question: list[str] | None, can_answer: bool,
            token: str = "") -> Content:
    name = persona or vehicle_name or vehicle_id
    title = name if severity == "info" else f"{name} ({severity})"
    answers = tuple(str(a) for a in question or ())[:MAX_ACTIONS] if can_answer else ()
    return Content(title[:100], text, f"/v/{vehicle_id}#m-{seq}", msg_id, vehicle_id, msg_id,
                   severity, answers, token if answers else "")


def push_payload(c: Content, limit: int = MAX_PUSH_PLAINTEXT) -> bytes:
    """The JSON the service worker shows; the text shortened (never dropped) until it fits."""
    doc: dict[str, Any] = {"title": c.title, "body": c.body, "url": c.url, "tag": c.tag,
                           "vehicle_id": c.vehicle_id, "message_id": c.message_id,
                           "severity": c.severity}
    if c.answers:
        doc["actions"] = [{"action": a, "title": ANSWER_LABELS.get(a.lower(), a.capitalize())}
                          for a in c.answers]
        doc["token"] = c.token
    data = _dump(doc)
    if len(data) <= limit:
        return data
    lo, hi = 0, len(c.body)  # the longest prefix of the text that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_dump({**doc, "body": c.body[:mid] + "…"})) <= limit:
            lo = mid
        else:
            hi = mid - 1
    doc["body"] = c.body[:lo] + "…"
    data = _dump(doc)
    if len(data) > limit:  # the rest alone is too big (it never is for valid messages)
        doc = {k: doc[k] for k in ("title", "body", "url", "tag")}
        doc["title"] = doc["title"][:40]
        data = _dump(doc)
    return data


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def text_body(c: Content, base_url: str) -> str:
    """The text for other channels (e-mail, chat): the message, and where to answer it."""
    link = base_url.rstrip("/") + c.url if base_url else ""
    more = f"\n\nAnswer: {', '.join(c.answers)}" if c.answers else ""
    return c.body + more + (f"\n{link}" if link else "")


def action_token(secret: str, user_id: int, vehicle_id: str, msg_id: str) -> str:
    return URLSafeTimedSerializer(secret, salt=ACTION_SALT).dumps([user_id, vehicle_id, msg_id])


def read_action_token(secret: str, token: str, max_age_s: int = ACTION_MAX_AGE_S,
                      now: float | None = None) -> tuple[int, str, str] | None:
    """(user id, vehicle id, message id) of a valid, unexpired token; None otherwise."""
    if not isinstance(token, str) or len(token) > 500:
        return None
    serializer = URLSafeTimedSerializer(secret, salt=ACTION_SALT)
    try:
        if now is None:
            value = serializer.loads(token, max_age=max_age_s)
        else:  # tests: an injected clock
            value, signed_at = serializer.loads(token, return_timestamp=True)
            if now - signed_at.timestamp() > max_age_s:
                return None
    except BadSignature:
        return None
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], int)
            and all(isinstance(v, str) for v in value[1:])):
        return None
    return value[0], value[1], value[2]
