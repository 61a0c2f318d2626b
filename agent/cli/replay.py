"""`carfriend replay`: the pipeline over a recorded log, as fast as it goes (reads files, prints)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError
from agent.core.model import PersonaMessage
from agent.core.pipeline import Pipeline
from agent.io.diag_runtime import DiagRuntime
from agent.io.logs import LogReport
from agent.io.sources import Frame, read_log
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

log = logging.getLogger(__name__)


def replay(pipeline: Pipeline, path: Path, start_time: datetime | None = None,
           diag: DiagRuntime | None = None) -> LogReport:
    """Feed every frame of a log through the pipeline, then let the last deadlines pass.

    Malformed lines are skipped and counted (``malformed_line``); the report says what else
    the reader found (a relative clock, impossible timestamps). With diagnostics, the recorded
    responses are reassembled (ISO-TP) and decoded on the way.
    """
    report = LogReport(path)
    frames = read_log(path, start_time, report)
    last = [0.0]
    if diag is not None:
        frames = _diagnostics(frames, diag, last)
    last_ts = pipeline.process_frames(frames)
    pipeline.malformed_lines(report.malformed_lines)
    if last_ts is not None or last[0]:
        pipeline.tick(max(last_ts or 0.0, last[0]))
    return report


def _diagnostics(frames: Iterator[Frame], diag: DiagRuntime, last: list[float]) -> Iterator[Frame]:
    """Frames for the DBC decoder; diagnostic traffic goes to the ISO-TP ports on the way."""
    for ts, can_id, data in frames:
        last[0] = ts
        if can_id is not None and diag.on_frame(ts, can_id, data):
            continue
        yield ts, can_id, data


def summary(pipeline: Pipeline, path: Path, diag: DiagRuntime | None = None) -> str:
    c = pipeline.counters()
    dropped = ", ".join(f"{k} {v}" for k, v in c["dropped"].items() if v) or "none"
    text = (f"{path}: {c['frames']} frames read, {c['decoded']} decoded, {c['unchanged']} unchanged "
            f"(skipped), dropped: {dropped}; {c['messages']} messages")
    if diag is not None:
        counts = ", ".join(f"{k} {v}" for k, v in diag.counters().items()) or "none"
        text += f"; diagnostics: {diag.decoder.responses} responses decoded, {counts}"
    return text


def drop_stats(pipeline: Pipeline, top: int = 5) -> str:
    """`--stats`: per drop reason, the ids, messages or signals with the most drops."""
    lines = ["drops by reason, most first (where: count):"]
    for reason, sites in pipeline.decoder.drops.top(top).items():
        total = pipeline.decoder.drops.as_dict()[reason]
        lines.append(f"  {reason} {total}: " + ", ".join(f"{where} {n}" for where, n in sites))
    return "\n".join(lines) if len(lines) > 1 else "no drops"


def cmd_replay(args: argparse.Namespace) -> int:
    config = load_config(args.config, dbc_override=args.dbc)
    vehicle = load_vehicle(config)
    start = _parse_start(args.start_time)
    out = sys.stdout
    published: list[PersonaMessage] = []

    def sink(msg: PersonaMessage) -> None:
        out.write(msg.model_dump_json() + "\n")
        out.flush()
        published.append(msg)

    side: list[tuple[str, str, dict[str, Any]]] = []
    pipeline = Pipeline(vehicle, sink, side_sink=lambda leaf, i, doc: side.append((leaf, i, doc)),
                        trace_drops=args.stats)
    diag = DiagRuntime(vehicle.diagnostics, pipeline, None) if vehicle.diagnostics is not None else None
    report = replay(pipeline, args.log, start, diag)
    for warning in vehicle.warnings + report.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(summary(pipeline, args.log, diag), file=sys.stderr)
    if args.stats:
        print(drop_stats(pipeline), file=sys.stderr)
    if args.state:
        args.state.write_text(json.dumps(pipeline.state.snapshot(config.vehicle.id), indent=2) + "\n")
    if args.publish:
        return _publish(config, published, side, pipeline, args.timeout)
    return 0


def _parse_start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start-time: not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise ConfigError(f"--start-time: give a time zone (e.g. {text}Z): {text!r}")
    return when


def _publish(config: Any, messages: list[PersonaMessage], side: list[tuple[str, str, dict[str, Any]]],
             pipeline: Pipeline, timeout: float) -> int:
    """Through the same durable outbox as `run`: what is not acknowledged stays queued."""
    from agent.cli.daemon import enqueue, open_outbox

    outbox = open_outbox(config)
    try:
        for msg in messages:
            enqueue(outbox, config, msg)
        for leaf, doc_id, doc in side:
            outbox.put(doc_id, config.topic(leaf), json.dumps(doc).encode(), "info", pipeline.state.now)
        left = drain(config, outbox, timeout, state=pipeline.state.snapshot(config.vehicle.id))
    finally:
        outbox.close()
    if left:
        print(f"error: {left} message(s) not acknowledged within {timeout:g} s; they stay in the outbox "
              f"{outbox.path} for the next `carfriend run` or `carfriend outbox flush`", file=sys.stderr)
        return 2
    print(f"published {len(messages)} message(s) to {config.mqtt.host}:{config.mqtt.port}", file=sys.stderr)
    return 0


def drain(config: Any, outbox: Any, timeout: float, state: dict[str, Any] | None = None) -> int:
    """Connect (without touching the car's online/offline status) and deliver the outbox."""
    from agent.io.courier import Courier
    from agent.io.uplink import PahoUplink

    uplink = PahoUplink(config, presence=False, client_suffix="-tool")
    courier = Courier(outbox, uplink, vehicle_id=config.vehicle.id, fleet_topic=config.topic("fleet"))
    uplink.start()
    try:
        left = courier.drain(timeout)
        if state is not None and uplink.connected.is_set():
            uplink.publish_state(state).wait_for_publish(2.0)
    finally:
        uplink.stop(timeout=2.0)
    return left
