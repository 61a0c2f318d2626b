"""The relay's web app: Starlette, server-rendered Jinja2 pages, signed cookie sessions (does IO)."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from sqlalchemy import delete
from sqlalchemy.exc import DBAPIError
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
from relay.config import RelayConfig, WebConfig
from relay.db import describe, unavailable
from relay.hub import Hub
from relay.livebus import LiveBus
from relay.models import User, WebSession, utcnow
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
    live: LiveBus | None = None
    metrics: Any = None  # relay.metrics.RelayMetrics
    notifier: Any = None  # relay.notify.worker.Notifier, when notifications are on
    vapid_key: str = ""  # the Web Push applicationServerKey pages subscribe with
    stopping: threading.Event = field(default_factory=threading.Event)
    live_poll_s: float = 5.0

    def changed(self, session: Session, vehicle_ids: list[str]) -> None:
        """Wake the live pages of these vehicles on every instance (after a web-side write)."""
        if self.live is not None:
            self.live.changed(session, vehicle_ids)
        else:
            self.hub.notify(vehicle_ids)


class LoginRequired(Exception):
    """An anonymous visitor asked for a page: send them to the login form."""


class BodyTooLarge(HTTPException):
    """A request body (declared or streamed, chunked included) over MAX_BODY_BYTES."""

    def __init__(self) -> None:
        super().__init__(413, "Request too large.")


class SecurityMiddleware:
    """Security headers on every response; a NUL in the path refused; request bodies
    over MAX_BODY_BYTES refused: by their Content-Length before reading, and while reading when
    they come chunked (never buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        # A NUL in the path (/v/%00): no page has one, and PostgreSQL text cannot hold one, so
        # it is refused here rather than deep in a query. (Query values are parsed as numbers or
        # checked paths; form values are checked in views._form.)
        if "\x00" in scope.get("path", ""):
            await PlainTextResponse("Bad request", 400)(scope, receive, send_with_headers)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await PlainTextResponse("Request too large", 413)(scope, receive, send_with_headers)
            return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise BodyTooLarge()
            return message

        await self.app(scope, capped_receive, send_with_headers)


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, finalize=printable)
    env.filters["iso"] = iso
    env.filters["number"] = number
    env.filters["answer_label"] = lambda a: ANSWER_LABELS.get(str(a).lower(), str(a).capitalize())
    return Jinja2Templates(env=env)


def iso(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") + "Z" if ts else ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(s: Session, request: Request, user: User, max_age_s: int) -> None:
    """Log the user in: a fresh cookie session whose token the database knows (by its hash)."""
    now = utcnow()
    s.execute(delete(WebSession).where(WebSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    s.add(WebSession(id=token_hash(token), user_id=user.id, created_at=now,
                     expires_at=now + timedelta(seconds=max_age_s)))
    s.commit()
    request.session.clear()  # nothing from before the login carries over
    request.session.update({"sid": token, "csrf": new_csrf_token()})


def end_session(s: Session, request: Request) -> None:
    token = request.session.get("sid")
    if isinstance(token, str):
        s.execute(delete(WebSession).where(WebSession.id == token_hash(token)))
        s.commit()
    request.session.clear()


def session_user(s: Session, token: object) -> User | None:
    """The user of a session token while the server still holds that session, else None."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    row = s.get(WebSession, token_hash(token))
    if row is None or row.expires_at <= utcnow():
        return None
    return s.get(User, row.user_id)


def current_user(request: Request) -> User | None:
    """The logged-in user, or None: the cookie's session must still exist on the server (logout
    and a password change delete it)."""
    ctx: AppContext = request.app.state.ctx
    token = request.session.get("sid")
    if token is None:
        return None
    with ctx.sessions() as s:
        user = session_user(s, token)
    if user is None:
        request.session.clear()
    return user


def secure_cookies(web: WebConfig) -> bool:
    """[web] secure_cookies, or when unset: Secure unless the relay listens on loopback only
    (behind a TLS proxy on the same host, or a developer's machine)."""
    if web.secure_cookies is not None:
        return web.secure_cookies
    if web.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(web.host).is_loopback
    except ValueError:  # a host name other than localhost
        return True


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
    base = {"request": request, "user": user, "csrf": csrf_token(request),
            "vapid_key": request.app.state.ctx.vapid_key}
    return request.app.state.templates.TemplateResponse(request, name, {**base, **context},
                                                        status_code=status)


async def on_http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) and code < 500 else "Something went wrong."
    if "application/json" in request.headers.get("accept", ""):
        from starlette.responses import JSONResponse
        return JSONResponse({"ok": False, "error": detail}, status_code=code)
    return render(request, "error.html", {"code": code, "detail": detail}, status=code)


async def on_database_error(request: Request, exc: Exception) -> Response:
    """The database is away (down, restarting, locked): a 503 page that says so, with one log
    line and no traceback. Any other database error is a bug: a 500 as usual."""
    if not unavailable(exc):
        return await on_server_error(request, exc)
    log.warning("%s %s: database unavailable (%s)", request.method, request.url.path,
                describe(exc))
    detail = "The database is unavailable at the moment. Please try again in a minute."
    if "application/json" in request.headers.get("accept", ""):
        from starlette.responses import JSONResponse
        response: Response = JSONResponse({"ok": False, "error": detail}, status_code=503)
    else:
        response = render(request, "error.html", {"code": 503, "detail": detail}, status=503)
    response.headers["Retry-After"] = "30"
    return response


async def on_server_error(request: Request, exc: Exception) -> Response:
    log.exception("error serving %s %s", request.method, request.url.path)
    return await on_http_error(request, HTTPException(500))


async def on_login_required(request: Request, _exc: Exception) -> Response:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def create_app(ctx: AppContext, secret: str) -> Starlette:
    from relay import live, views
    from relay.metrics import metrics_endpoint
    from relay.notify.routes import ROUTES as NOTIFY_ROUTES

    routes = [
        Route("/", views.home),
        Route("/login", views.login_form, methods=["GET"]),
        Route("/login", views.login, methods=["POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/v/{vid}", views.vehicle_page),
        Route("/v/{vid}/events", live.vehicle_events),
        Route("/v/{vid}/reply", views.reply, methods=["POST"]),
        Route("/v/{vid}/command", views.command, methods=["POST"]),
        Route("/v/{vid}/export", views.export),
        Route("/v/{vid}/purge", views.purge, methods=["POST"]),
        Route("/fleet", views.fleet_page),
        Route("/fleet/events", live.fleet_events),
        Route("/dealer", views.dealer_page),
        Route("/public/{vid}", views.public_feed),
        Route("/healthz", views.healthz),
        Route("/metrics", metrics_endpoint),
        *NOTIFY_ROUTES,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityMiddleware),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie="carfriend_session",
                   max_age=ctx.config.web.session_max_age_s, same_site="lax",
                   https_only=secure_cookies(ctx.config.web)),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        HTTPException: on_http_error, LoginRequired: on_login_required,
        DBAPIError: on_database_error, 500: on_server_error, Exception: on_server_error})
    app.state.ctx = ctx
    app.state.session_secret = secret  # signs notification action tokens too
    app.state.templates = make_templates()
    return app
