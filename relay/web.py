"""The relay's web app: Starlette, server-rendered Jinja2 pages, signed cookie sessions (does IO)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.auth import LoginLimiter, new_csrf_token
from relay.commands import Downlink
from relay.config import RelayConfig
from relay.hub import Hub
from relay.models import User
from relay.render import number, printable

if TYPE_CHECKING:
    from relay.mqtt import MqttIngest

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_BODY_BYTES = 16 * 1024
ANSWER_LABELS = {"ok": "OK", "yes": "Yes", "no": "No", "later": "Later", "now": "Now"}

# Scripts and styles only from our own origin: nothing inline, nothing injected runs.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


@dataclass
class AppContext:
    config: RelayConfig
    sessions: sessionmaker[Session]
    hub: Hub
    downlink: Downlink
    limiter: LoginLimiter
    ingest: MqttIngest | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    live_poll_s: float = 5.0


class LoginRequired(Exception):
    """An anonymous visitor asked for a page: send them to the login form."""


class SecurityMiddleware:
    """Security headers on every response; request bodies larger than MAX_BODY_BYTES refused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await PlainTextResponse("Request too large", 413)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, finalize=printable)
    env.filters["iso"] = iso
    env.filters["number"] = number
    env.filters["answer_label"] = lambda a: ANSWER_LABELS.get(str(a).lower(), str(a).capitalize())
    return Jinja2Templates(env=env)


def iso(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") + "Z" if ts else ""


def current_user(request: Request) -> User | None:
    """The logged-in user, or None; a session older than the user's last password change is void."""
    uid, version = request.session.get("uid"), request.session.get("sv")
    if not isinstance(uid, int):
        return None
    ctx: AppContext = request.app.state.ctx
    with ctx.sessions() as s:
        user = s.get(User, uid)
    if user is None or user.session_version != version:
        request.session.clear()
        return None
    return user


def require_user(request: Request) -> User:
    user = current_user(request)
    if user is None:
        if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
            raise LoginRequired()
        raise HTTPException(401, "Please log in.")
    return user


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = new_csrf_token()
    return token


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    user = context.get("user")
    base = {"request": request, "user": user, "csrf": csrf_token(request)}
    return request.app.state.templates.TemplateResponse(request, name, {**base, **context},
                                                        status_code=status)


async def on_http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) and code < 500 else "Something went wrong."
    if "application/json" in request.headers.get("accept", ""):
        from starlette.responses import JSONResponse
        return JSONResponse({"ok": False, "error": detail}, status_code=code)
    return render(request, "error.html", {"code": code, "detail": detail}, status=code)


async def on_server_error(request: Request, exc: Exception) -> Response:
    log.exception("error serving %s %s", request.method, request.url.path)
    return await on_http_error(request, HTTPException(500))


async def on_login_required(request: Request, _exc: Exception) -> Response:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def create_app(ctx: AppContext, secret: str) -> Starlette:
    from relay import live, views

    routes = [
        Route("/", views.home),
        Route("/login", views.login_form, methods=["GET"]),
        Route("/login", views.login, methods=["POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/v/{vid}", views.vehicle_page),
        Route("/v/{vid}/events", live.vehicle_events),
        Route("/v/{vid}/reply", views.reply, methods=["POST"]),
        Route("/v/{vid}/command", views.command, methods=["POST"]),
        Route("/fleet", views.fleet_page),
        Route("/fleet/events", live.fleet_events),
        Route("/dealer", views.dealer_page),
        Route("/public/{vid}", views.public_feed),
        Route("/healthz", views.healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityMiddleware),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie="carfriend_session",
                   max_age=ctx.config.web.session_max_age_s, same_site="lax",
                   https_only=ctx.config.web.secure_cookies),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        HTTPException: on_http_error, LoginRequired: on_login_required, 500: on_server_error,
        Exception: on_server_error})
    app.state.ctx = ctx
    app.state.templates = make_templates()
    return app
