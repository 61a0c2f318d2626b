"""Pages and form posts of the relay's web app (does IO through the database and the downlink)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from relay import charts, commands, db, privacy, queries
from relay.auth import csrf_ok, verify_password
from relay.models import Command, Message, User, Vehicle, utcnow
from relay.permissions import Access
from relay.web import AppContext, current_user, end_session, render, require_user, start_session

log = logging.getLogger(__name__)
TIMELINE_LIMIT = 100


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def home(request: Request) -> Response:
    user = require_user(request)
    with _ctx(request).sessions() as s:
        vehicles = queries.my_vehicles(s, user.id)
    return render(request, "home.html", {"user": user, "vehicles": vehicles})


def login_form(request: Request) -> Response:
    return render(request, "login.html", {"next": _safe_next(request.query_params.get("next")),
                                          "error": None})


async def login(request: Request) -> Response:
    form = await _form(request)
    username = str(form.get("username", ""))[:64].strip()
    password = str(form.get("password", ""))[:1024]
    nxt = _safe_next(form.get("next"))
    ctx = _ctx(request)
    address = request.client.host if request.client else "-"
    refused, delay_s = await run_in_threadpool(ctx.limiter.check, username, address, utcnow())
    if refused:
        log.warning("login rate limit hit for %r from %s", username[:64], address)
        return render(request, "login.html", {"next": nxt, "error":
                      "Too many failed attempts. Please wait a few minutes."}, status=429)
    if delay_s:  # the account is being guessed at from elsewhere: slower answers, no lock
        await asyncio.sleep(delay_s)
    user = await run_in_threadpool(_check_password, ctx, username, password)
    if user is None:
        await run_in_threadpool(ctx.limiter.failed, username, address, utcnow())
        return render(request, "login.html", {"next": nxt,
                      "error": "Wrong username or password."}, status=401)

    def begin() -> None:
        ctx.limiter.succeeded(username, address)
        with ctx.sessions() as s:
            start_session(s, request, user, ctx.config.web.session_max_age_s)

    await run_in_threadpool(begin)
    return RedirectResponse(nxt, status_code=303)


def _check_password(ctx: AppContext, username: str, password: str) -> User | None:
    with ctx.sessions() as s:
        user = queries.user_by_name(s, username)
    ok = verify_password(user.password_hash if user else None, password)
    return user if ok else None


async def logout(request: Request) -> Response:
    """Ends the session on the server too: a copy of the cookie no longer works."""
    await _form(request)

    def end() -> None:
        with _ctx(request).sessions() as s:
            end_session(s, request)

    await run_in_threadpool(end)
    return RedirectResponse("/login", status_code=303)


def vehicle_page(request: Request) -> Response:
    user = require_user(request)
    vid = request.path_params["vid"]
    with _ctx(request).sessions() as s:
        vehicle, acc = _vehicle_for(s, user, vid)
        if not acc.can_view_page:
            raise HTTPException(404, "No such vehicle.")
        view = timeline_view(s, vehicle, acc)
        view["appointments"] = (queries.appointments_for_vehicle(s, vid)
                                if acc.can_see_appointments else [])
        now = utcnow()
        view["charts"] = (charts.build(queries.chart_samples(s, vid, now - timedelta(days=7)), now)
                          if acc.can_see_state else None)
    error = request.session.pop("flash", None)
    return render(request, "vehicle.html", {"user": user, "error": error, **view})


def timeline_view(s: Any, vehicle: Vehicle, acc: Access, after_seq: int = 0) -> dict[str, Any]:
    """Messages and (for owners) commands, merged by time: the chat with the car."""
    msgs = queries.timeline_messages(s, vehicle.id, acc, after_seq, TIMELINE_LIMIT)
    cmds: list[Command] = []
    if acc.can_see_commands:
        since = msgs[0].ts if msgs else utcnow() - timedelta(days=1)
        cmds = queries.recent_commands(s, vehicle.id, since)
    items: list[tuple[Any, str, Any]] = [(m.ts, "message", m) for m in msgs]
    items += [(c.issued_at, "command", c) for c in cmds]
    items.sort(key=lambda t: t[0])
    return {"vehicle": vehicle, "access": acc, "items": items,
            "answered": {c.message_id for c in cmds if c.message_id},
            "cursor": max((m.vseq for m in msgs), default=after_seq),
            "eta": queries.latest_eta(s, vehicle.id) if acc.can_see_state else None}


async def reply(request: Request) -> Response:
    form = await _form(request)
    message_id, answer = str(form.get("message_id", ""))[:64], str(form.get("answer", ""))[:32]

    def build(s: Any, vid: str) -> tuple[str, dict[str, Any], str | None]:
        msg = s.scalars(select(Message).where(Message.vehicle_id == vid,
                                              Message.msg_id == message_id)).first()
        return "reply", commands.reply_args(msg, answer), message_id

    return await _send(request, build)


async def command(request: Request) -> Response:
    form = await _form(request)
    name = str(form.get("name", ""))[:32]
    fields = {k: str(v)[:32] for k, v in form.items()}
    limits = _ctx(request).config.commands

    def build(_s: Any, _vid: str) -> tuple[str, dict[str, Any], str | None]:
        return name, commands.command_args(name, fields, limits), None

    return await _send(request, build)


async def _send(request: Request, build: Any) -> Response:
    """Common path of every command post: login, CSRF, owner role, build, sign, publish."""
    ctx, vid = _ctx(request), request.path_params["vid"]
    user = await run_in_threadpool(require_user, request)

    def work() -> Command:
        with ctx.sessions() as s:
            _vehicle, acc = _vehicle_for(s, user, vid)
            if not acc.can_command:
                raise HTTPException(404 if not acc.any else 403, "You cannot command this car.")
            name, args, message_id = build(s, vid)
            cmd = commands.send(s, ctx.downlink, vid, name, args, user.id, message_id)
            try:
                ctx.changed(s, [vid])
            except Exception:  # the live pages catch up on their next poll
                log.exception("waking the live pages of %s failed", vid)
            return cmd

    try:
        cmd = await run_in_threadpool(work)
    except commands.CommandRefused as exc:
        return _answer(request, vid, error=str(exc), status=400)
    html = request.app.state.templates.get_template("_command.html").render(item=cmd)
    return _answer(request, vid, result={"id": cmd.id, "status": cmd.status, "html": html})


def _answer(request: Request, vid: str, error: str | None = None,
            result: dict[str, Any] | None = None, status: int = 200) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        body = {"ok": False, "error": error} if error else {"ok": True, **(result or {})}
        return JSONResponse(body, status_code=status)
    if error:
        request.session["flash"] = error
    return RedirectResponse(f"/v/{vid}", status_code=303)


def fleet_page(request: Request) -> Response:
    user = require_user(request)
    ctx = _ctx(request)
    with ctx.sessions() as s:
        view = queries.fleet(s, user.id, utcnow(), page_number(request))
        fleet_wide = queries.is_fleet_wide_operator(s, user.id)
    if not view.total:
        raise HTTPException(403, "The fleet page is for fleet operators.")
    ingest = ctx.ingest
    # The relay's counters cover every car: only for operators of the whole fleet. They are
    # this instance's own (each instance counts what it processed), and say so.
    counters = {"stored": ingest.stored, **dict(ingest.dropped)} if ingest and fleet_wide else {}
    return render(request, "fleet.html", {"user": user, "fleet": view, "counters": counters,
                                          "instance": ctx.config.mqtt.client_id})


def page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return int(text) if text.isdigit() and len(text) < 7 else 1


def _owner_vehicle(s: Any, user: User, vid: str) -> Vehicle:
    """The vehicle when the user is its owner; 404 without any role, 403 for other roles."""
    vehicle, acc = _vehicle_for(s, user, vid)
    if "owner" not in acc.roles:
        raise HTTPException(403, "Only the car's owner can do that.")
    return vehicle


def export(request: Request) -> Response:
    """Everything the relay keeps about the car, for its owner: ?format=json (default) or csv
    (a ZIP of one CSV per table)."""
    user = require_user(request)
    vid = request.path_params["vid"]
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise HTTPException(400, "format must be json or csv.")
    with _ctx(request).sessions() as s:
        vehicle = _owner_vehicle(s, user, vid)
        data = privacy.export_vehicle(s, vehicle.id)
    log.info("%s exported the data of %s as %s", user.username, vehicle.id, fmt)
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        body, media, ext = privacy.to_csv_zip(data), "application/zip", "zip"
    else:
        body, media, ext = privacy.to_json(data), "application/json", "json"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="carfriend-{vehicle.id}-{stamp}.{ext}"',
        "Cache-Control": "no-store"})


async def purge(request: Request) -> Response:
    """Delete the car's history, for its owner, who confirms by typing the car's id."""
    form = await _form(request)
    ctx, vid = _ctx(request), request.path_params["vid"]
    user = await run_in_threadpool(require_user, request)

    def work() -> None:
        with ctx.sessions() as s:
            vehicle_id = _owner_vehicle(s, user, vid).id
        if str(form.get("confirm", "")).strip() != vehicle_id:
            raise HTTPException(400, f"To delete the history, type {vehicle_id} to confirm.")
        with ctx.sessions() as s:  # a transaction that starts by locking the vehicle
            privacy.purge_vehicle(s, vehicle_id, by=user.username)
            s.commit()
            ctx.changed(s, [vehicle_id])

    await run_in_threadpool(work)
    request.session["flash"] = "The car's history was deleted."
    return RedirectResponse(f"/v/{vid}", status_code=303)


def dealer_page(request: Request) -> Response:
    user = require_user(request)
    with _ctx(request).sessions() as s:
        appts = queries.appointments_for_dealer(s, user.id)
    return render(request, "dealer.html", {"user": user, "appointments": appts})


def public_feed(request: Request) -> Response:
    vid = request.path_params["vid"]
    with _ctx(request).sessions() as s:
        vehicle = s.get(Vehicle, vid[:64])
        if vehicle is None or not vehicle.public_feed:
            raise HTTPException(404, "No such feed.")
        msgs = queries.public_messages(s, vid)
    return render(request, "public.html", {"user": current_user(request), "vehicle": vehicle,
                                           "messages": msgs})


def healthz(request: Request) -> Response:
    """200 "ok", or 503 with the reason: the database unavailable (to the ingest, or to a
    query made now), broker disconnected, ingest worker stopped or lagging."""
    ctx = _ctx(request)
    problem = ctx.ingest.health() if ctx.ingest is not None else None
    if problem is None:
        try:
            with ctx.sessions() as s:
                s.execute(select(1))
        except SQLAlchemyError as exc:
            if not db.unavailable(exc):
                raise
            log.warning("/healthz: database unavailable (%s)", db.describe(exc))
            problem = "database unavailable"
    return PlainTextResponse(problem or "ok", status_code=503 if problem else 200,
                             headers={"Cache-Control": "no-store"})


def _vehicle_for(s: Any, user: User, vid: str) -> tuple[Vehicle, Access]:
    """The vehicle and the user's access; 404 when it does not exist or they have no role on it."""
    vehicle = s.get(Vehicle, vid[:64])
    acc = queries.access(s, user.id, vid[:64]) if vehicle is not None else Access(frozenset())
    if vehicle is None or not acc.any:
        raise HTTPException(404, "No such vehicle.")
    return vehicle, acc


async def _form(request: Request) -> FormData:
    """The posted form, after checking its CSRF token against the session's."""
    try:
        form = await request.form(max_files=0, max_fields=20)
    except HTTPException:
        raise  # BodyTooLarge: 413
    except Exception:  # python-multipart raises several types for garbage bodies
        raise HTTPException(400, "Malformed form.") from None
    if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
        raise HTTPException(403, "The form expired. Please reload the page and try again.")
    if any(isinstance(v, str) and "\x00" in v for v in form.values()):
        raise HTTPException(400, "Malformed form.")  # no database can hold a NUL in text
    return form


def _safe_next(value: object) -> str:
    """Only a local path: never an open redirect to another site."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value and len(value) < 200 and value.isprintable() and " " not in value:
        return value
    return "/"
