"""Live pages: server-sent events for a vehicle's timeline and for the fleet page (does IO)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from relay import queries
from relay.db import unavailable
from relay.hub import ALL
from relay.models import Vehicle, utcnow
from relay.permissions import Access
from relay.views import _vehicle_for, page_number
from relay.web import AppContext, require_user, session_user

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Cursor:
    """What this stream has already sent."""

    message_seq: int
    commands: dict[str, str] = field(default_factory=dict)
    revision: int | None = None


def sse(event: str, data: str, event_id: str | None = None) -> str:
    lines = [f"event: {event}"] + ([f"id: {event_id}"] if event_id else [])
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


class StreamEnded(Exception):
    """The reader lost access (logged out, password changed, role revoked): end the stream."""


def _still_allowed(s: Any, token: object, user_id: int) -> None:
    """Every update re-checks the session on the server: a revoked reader gets nothing more."""
    user = session_user(s, token)
    if user is None or user.id != user_id:
        raise StreamEnded()


async def vehicle_events(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    user = await run_in_threadpool(require_user, request)
    token = request.session.get("sid")
    vid = request.path_params["vid"]

    def check() -> Access:
        with ctx.sessions() as s:
            _v, acc = _vehicle_for(s, user, vid)
        if not acc.can_view_page:
            raise HTTPException(404, "No such vehicle.")
        return acc

    await run_in_threadpool(check)
    cursor = Cursor(_int(request.headers.get("last-event-id") or request.query_params.get("after")))
    templates = request.app.state.templates

    def updates() -> list[str]:
        with ctx.sessions() as s:
            _still_allowed(s, token, user.id)
            acc = queries.access(s, user.id, vid)  # roles may have changed since the last update
            vehicle = s.get(Vehicle, vid)
            if vehicle is None or not acc.can_view_page:
                raise StreamEnded()
            return _vehicle_updates(s, vehicle, acc, cursor, templates)

    return StreamingResponse(_stream(ctx, vid, updates), media_type="text/event-stream",
                             headers=SSE_HEADERS)


def _vehicle_updates(s: Any, vehicle: Vehicle, acc: Access, cursor: Cursor,
                     templates: Any) -> list[str]:
    out = []
    item = templates.get_template("_message.html")
    for m in queries.timeline_messages(s, vehicle.id, acc, cursor.message_seq, 200):
        html = item.render(item=m, access=acc, vehicle=vehicle, answered=set(), csrf="")
        out.append(sse("item", html, str(m.vseq)))
        cursor.message_seq = m.vseq
    if acc.can_see_commands:
        cmd_tpl = templates.get_template("_command.html")
        for c in queries.recent_commands(s, vehicle.id, utcnow() - timedelta(days=1)):
            if cursor.commands.get(c.id) != c.status:
                cursor.commands[c.id] = c.status
                payload = {"id": c.id, "status": c.status, "message_id": c.message_id,
                           "html": cmd_tpl.render(item=c)}
                out.append(sse("command", json.dumps(payload)))
    if vehicle.revision != cursor.revision:
        cursor.revision = vehicle.revision
        eta = queries.latest_eta(s, vehicle.id) if acc.can_see_state else None
        html = templates.get_template("_state.html").render(vehicle=vehicle, access=acc, eta=eta)
        out.append(sse("state", html))
    return out


async def fleet_events(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    user = await run_in_threadpool(require_user, request)
    token = request.session.get("sid")
    templates = request.app.state.templates
    last: list[str] = [""]
    page = page_number(request)

    def updates() -> list[str]:
        with ctx.sessions() as s:
            _still_allowed(s, token, user.id)
            view = queries.fleet(s, user.id, utcnow(), page)
        if not view.total:  # no longer an operator of any car
            raise StreamEnded()
        html = templates.get_template("_fleet_table.html").render(fleet=view)
        if html == last[0]:
            return []
        last[0] = html
        return [sse("fleet", html)]

    return StreamingResponse(_stream(ctx, ALL, updates, min_interval_s=1.0),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _stream(ctx: AppContext, key: str, updates: Any,
                  min_interval_s: float = 0.0) -> AsyncIterator[str]:
    """Send updates whenever the ingest commits for this key, and every live_poll_s anyway
    (another relay instance may have stored something); a comment keeps proxies from timing out."""
    loop_event = ctx.hub.register(key)
    _loop, event = loop_event
    try:
        yield "retry: 2000\n\n"
        while not ctx.stopping.is_set():
            event.clear()
            try:
                chunks = await run_in_threadpool(updates)
            except StreamEnded:
                yield "event: end\ndata: \n\n"
                return
            except SQLAlchemyError as exc:
                if not unavailable(exc):
                    raise
                # The database is away: the stream stays open (its cursor unchanged) and
                # catches up on the first poll after the database is back.
                chunks = []
            for chunk in chunks:
                yield chunk
            if not chunks:
                yield ": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=ctx.live_poll_s)
            if min_interval_s:
                await asyncio.sleep(min_interval_s)
    finally:
        ctx.hub.unregister(key, loop_event)


def _int(text: str | None) -> int:
    try:
        return max(0, min(int(text or 0), 2**62))
    except ValueError:
        return 0
