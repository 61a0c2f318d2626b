"""Web side of notifications: the installable app (manifest, service worker), the settings page
(channels, mutes, delivery status), push subscriptions, and answers sent from a notification's
action buttons (does IO through the database and the downlink).

Everything posted is checked once by a strict model or form check here; a channel URL is never
logged nor shown again in full.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from relay import commands, queries
from relay.auth import csrf_ok
from relay.config import NotifyConfig
from relay.models import Message, Notification, NotifyChannel, PushSubscription, User
from relay.notify import fanout, payload
from relay.notify.secrets import ChannelRefused, check_channel_url, encrypt
from relay.views import _form
from relay.web import HERE, AppContext, render, require_user

log = logging.getLogger(__name__)
MAX_SUBSCRIPTIONS = 10
MAX_CHANNELS = 10
B64URL = r"^[A-Za-z0-9_-]+={0,2}$"


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


# -- the installable app ----------------------------------------------------------------------

def manifest(_request: Request) -> Response:
    doc = {"name": "carfriend", "short_name": "carfriend", "start_url": "/", "scope": "/",
           "display": "standalone", "background_color": "#f4f5f7", "theme_color": "#1f6feb",
           "description": "Messages from your car",
           "icons": [{"src": f"/static/icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png",
                      "purpose": "any maskable"} for n in (192, 512)]}
    return JSONResponse(doc, media_type="application/manifest+json")


def service_worker(_request: Request) -> Response:
    # Served from the root so its scope is the whole app; never cached stale.
    return FileResponse(HERE / "static" / "sw.js", media_type="text/javascript",
                        headers={"Cache-Control": "no-cache"})


# -- push subscriptions -----------------------------------------------------------------------

class _Keys(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    # P-256 public key (65 bytes) and auth secret (16 bytes), base64url
    p256dh: Annotated[str, Field(min_length=80, max_length=100, pattern=B64URL)]
    auth: Annotated[str, Field(min_length=16, max_length=30, pattern=B64URL)]


class SubscriptionIn(BaseModel):
    """PushSubscription.toJSON() as the browser gives it (expirationTime etc. ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    endpoint: Annotated[str, Field(min_length=10, max_length=1000)]
    keys: _Keys


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    endpoint: Annotated[str, Field(min_length=10, max_length=1000)]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token: Annotated[str, Field(min_length=10, max_length=500)]
    answer: Annotated[str, Field(min_length=1, max_length=32)]


async def _json(request: Request, model: type[BaseModel], csrf: bool = True) -> Any:
    if csrf and not csrf_ok(request.session.get("csrf"), request.headers.get("x-csrf-token")):
        raise HTTPException(403, "The page expired. Please reload it and try again.")
    body = await request.body()  # capped at 16 KiB by the security middleware
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise HTTPException(400, f"{where}: {first['msg']}"[:200]) from None


def check_endpoint(endpoint: str, cfg: NotifyConfig) -> None:
    """A push service URL: https, and not into the relay's own network (unless allowed)."""
    parts = urlsplit(endpoint)
    if cfg.allow_private_addresses and parts.scheme in ("http", "https") and parts.hostname:
        return
    if parts.scheme != "https" or not parts.hostname:
        raise HTTPException(400, "endpoint: a push service's https URL is expected")
    try:
        addr = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: push services are public hosts (fcm.googleapis.com, ...)
    if not addr.is_global:
        raise HTTPException(400, "endpoint: not a public address")


async def subscribe(request: Request) -> Response:
    ctx = _ctx(request)
    user = await run_in_threadpool(require_user, request)
    sub: SubscriptionIn = await _json(request, SubscriptionIn)
    check_endpoint(sub.endpoint, ctx.config.notify)
    agent = request.headers.get("user-agent", "")
    label = _browser(agent)

    def store() -> None:
        with ctx.sessions() as s, s.begin():
            row = s.scalars(select(PushSubscription).where(
                PushSubscription.endpoint == sub.endpoint)).first()
            if row is None:
                count = s.scalar(select(func.count()).select_from(PushSubscription).where(
                    PushSubscription.user_id == user.id)) or 0
                if count >= MAX_SUBSCRIPTIONS:
                    raise HTTPException(400, f"at most {MAX_SUBSCRIPTIONS} devices; remove one "
                                             "in the notification settings")
                row = PushSubscription(endpoint=sub.endpoint)
                s.add(row)
            # The same browser, now logged in as this user: it is theirs.
            row.user_id, row.p256dh, row.auth, row.label = user.id, sub.keys.p256dh, \
                sub.keys.auth, label

    await run_in_threadpool(store)
    log.info("user %s subscribed a device to push notifications (%s)", user.id, label)
    return JSONResponse({"ok": True})


async def unsubscribe(request: Request) -> Response:
    ctx = _ctx(request)
    user = await run_in_threadpool(require_user, request)
    body: EndpointIn = await _json(request, EndpointIn)

    def remove() -> None:
        with ctx.sessions() as s, s.begin():
            s.execute(delete(PushSubscription).where(PushSubscription.endpoint == body.endpoint,
                                                     PushSubscription.user_id == user.id))

    await run_in_threadpool(remove)
    return JSONResponse({"ok": True})


def _browser(agent: str) -> str:
    names = [n for n in ("Edg", "Firefox", "Chrome", "Safari") if n in agent]
    systems = [n for n in ("Android", "iPhone", "iPad", "Windows", "Mac OS", "Linux") if n in agent]
    browser = {"Edg": "Edge"}.get(names[0], names[0]) if names else "A browser"
    return f"{browser} on {systems[0]}" if systems else browser


# -- answering from a notification ------------------------------------------------------------

async def action(request: Request) -> Response:
    """The service worker posts the owner's answer: the token (from the notification) stands
    for the CSRF token, and must be the logged-in user's."""
    ctx = _ctx(request)
    user = await run_in_threadpool(require_user, request)
    body: ActionIn = await _json(request, ActionIn, csrf=False)
    secret = request.app.state.session_secret
    claim = payload.read_action_token(secret, body.token)
    if claim is None or claim[0] != user.id:
        return JSONResponse({"ok": False, "error": "This notification has expired."}, 403)
    _uid, vid, msg_id = claim

    def work() -> Any:
        with ctx.sessions() as s:
            acc = queries.access(s, user.id, vid)
            if not acc.can_command:
                raise commands.CommandRefused("you cannot command this car")
            msg = s.scalars(select(Message).where(Message.vehicle_id == vid,
                                                  Message.msg_id == msg_id)).first()
            args = commands.reply_args(msg, body.answer)
            cmd = commands.send(s, ctx.downlink, vid, "reply", args, user.id, msg_id)
            try:
                ctx.changed(s, [vid])  # every instance's pages (PostgreSQL NOTIFY)
            except Exception:  # the live pages catch up on their next poll
                log.exception("waking the live pages of %s failed", vid)
            return cmd

    try:
        cmd = await run_in_threadpool(work)
    except commands.CommandRefused as exc:
        return JSONResponse({"ok": False, "error": str(exc)}, 400)
    return JSONResponse({"ok": True, "id": cmd.id, "status": cmd.status})


# -- the settings page ------------------------------------------------------------------------

def settings_page(request: Request) -> Response:
    user = require_user(request)
    with _ctx(request).sessions() as s:
        view = settings_view(s, user)
    view["error"] = request.session.pop("flash", None)
    view["notice"] = request.session.pop("notice", None)
    return render(request, "settings.html", {"user": user, **view})


def settings_view(s: Any, user: User) -> dict[str, Any]:
    vehicles = [(v, roles) for v, roles in queries.my_vehicles(s, user.id)
                if roles & {"owner", "family"}]
    recent = s.execute(select(Notification, Message.text).join(
        Message, Message.seq == Notification.message_seq).where(Notification.user_id == user.id)
        .order_by(Notification.id.desc()).limit(30)).all()
    return {"subscriptions": list(s.scalars(select(PushSubscription).where(
                PushSubscription.user_id == user.id).order_by(PushSubscription.id))),
            "channels": list(s.scalars(select(NotifyChannel).where(
                NotifyChannel.user_id == user.id).order_by(NotifyChannel.id))),
            "vehicles": vehicles, "muted": fanout.muted_vehicles(s, user.id),
            "recent": [(n, text[:80]) for n, text in recent]}


async def add_channel(request: Request) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    user = await run_in_threadpool(require_user, request)
    url = str(form.get("url", ""))[:2100]
    key = ctx.notifier.channel_key if ctx.notifier is not None else None
    if key is None:
        return _back(request, error="Notifications are turned off on this relay.")
    try:
        checked = await run_in_threadpool(check_channel_url, url, ctx.config.notify)
    except ChannelRefused as exc:
        return _back(request, error=f"Not added: {exc}.")

    def store() -> str | None:
        with ctx.sessions() as s, s.begin():
            count = s.scalar(select(func.count()).select_from(NotifyChannel).where(
                NotifyChannel.user_id == user.id)) or 0
            if count >= MAX_CHANNELS:
                return f"Not added: at most {MAX_CHANNELS} channels."
            s.add(NotifyChannel(user_id=user.id, scheme=checked.scheme, label=checked.label,
                                secret=encrypt(key, checked.url)))
        return None

    error = await run_in_threadpool(store)
    if error:
        return _back(request, error=error)
    log.info("user %s added a %s:// notification channel", user.id, checked.scheme)
    return _back(request, notice=f"Added {checked.label}.")


async def delete_channel(request: Request) -> Response:
    return await _delete_own(request, NotifyChannel, "Channel removed.")


async def delete_subscription(request: Request) -> Response:
    return await _delete_own(request, PushSubscription, "Device removed.")


async def _delete_own(request: Request, model: type[NotifyChannel] | type[PushSubscription],
                      notice: str) -> Response:
    """Delete one of the signed-in user's own channels or push subscriptions, by the form's id."""
    ctx = _ctx(request)
    form = await _form(request)
    user = await run_in_threadpool(require_user, request)
    ident = str(form.get("id", ""))[:12]

    def remove() -> None:
        if ident.isdigit():
            with ctx.sessions() as s, s.begin():
                s.execute(delete(model).where(model.id == int(ident), model.user_id == user.id))

    await run_in_threadpool(remove)
    return _back(request, notice=notice)


async def set_mute(request: Request) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    user = await run_in_threadpool(require_user, request)
    vid = str(form.get("vehicle", ""))[:64] or None
    muted = form.get("muted") == "1"

    def change() -> None:
        with ctx.sessions() as s, s.begin():
            if vid is not None and not (queries.access(s, user.id, vid).roles
                                        & {"owner", "family"}):
                raise HTTPException(404, "No such vehicle.")
            fanout.set_mute(s, user.id, vid, muted)

    await run_in_threadpool(change)
    return _back(request, notice=("Muted." if muted else "Notifications on."))


def _back(request: Request, error: str | None = None, notice: str | None = None) -> Response:
    if error:
        request.session["flash"] = error
    if notice:
        request.session["notice"] = notice
    return RedirectResponse("/settings", status_code=303)


ROUTES = [
    Route("/manifest.webmanifest", manifest),
    Route("/sw.js", service_worker),
    Route("/settings", settings_page),
    Route("/settings/channels", add_channel, methods=["POST"]),
    Route("/settings/channels/delete", delete_channel, methods=["POST"]),
    Route("/settings/devices/delete", delete_subscription, methods=["POST"]),
    Route("/settings/mute", set_mute, methods=["POST"]),
    Route("/push/subscribe", subscribe, methods=["POST"]),
    Route("/push/unsubscribe", unsubscribe, methods=["POST"]),
    Route("/push/action", action, methods=["POST"]),
]
