"""The vehicle profile's diagnostics: requests and signal set resolved into plans, every problem collected (reads files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cantools.database.can import Database

from agent.core import vss
from agent.core.decode import ndigits
from agent.core.diag_j1979 import STANDARD_PATHS
from agent.core.diag_plan import BitSpec, DiagPlan, DiagProfile, DiagValue
from agent.core.diag_profile import (
    FUNCTIONAL_ID,
    IDENTIFIER_BYTES,
    OBD_RESPONSE_IDS,
    DiagnosticsConfig,
    DiagRequest,
)
from agent.core.settings import AgentConfig, SignalMap
from agent.profile.diag_dbc import dbc_values, find_message
from agent.profile.signalset import SIGNALSET_SOURCE, SignalSetBuilder, parse_signalset

MIN_STALE_S = 30.0


def diag_mappings(config: AgentConfig) -> dict[str, SignalMap]:
    """[signals] entries that name a signal-set signal, or a signal of a DBC message that
    describes a diagnostic response (dbc_message), rather than a broadcast DBC signal."""
    diag = config.diagnostics
    responses = {r.dbc_message for r in diag.request if r.dbc_message} if diag is not None and diag.enabled else set()
    return {p: m for p, m in config.mappings().items() if m.message == SIGNALSET_SOURCE or m.message in responses}


def load_diagnostics(config: AgentConfig, databases: Sequence[tuple[str, Database]] = ()
                     ) -> tuple[DiagProfile | None, list[str]]:
    """(the profile, []) or (None, every problem); (None, []) when diagnostics are off.

    `databases`: the config's loaded DBCs with their file names, for requests naming a dbc_message."""
    diag = config.diagnostics
    where = str(config.source or "config")
    overrides = {p: m for p, m in diag_mappings(config).items() if m.message == SIGNALSET_SOURCE}
    if diag is None or not diag.enabled:
        if overrides:
            return None, [f'{where}: [signals] "{p}": "{m.source}" needs [diagnostics] signalset'
                          for p, m in overrides.items()]
        return None, []
    problems: list[str] = []
    notes: list[str] = []
    plans = [_request_plan(r, diag, where) for r in diag.request]
    for r, plan in zip(diag.request, plans, strict=True):
        if r.dbc_message is not None:
            plan.values = _dbc_values(r.dbc_message, plan, config, databases, where, problems)
    if diag.signalset is not None:
        plans += _signalset_plans(diag.signalset, diag, overrides, problems, notes, config.vehicle.model_year)
    elif overrides:
        problems += [f'{where}: [signals] "{p}": "{m.source}" needs [diagnostics] signalset' for p, m in overrides.items()]
    problems += _awake_problems(config, plans, where)
    seen: dict[str, str] = {}
    for plan in plans:
        if plan.key in seen:
            problems.append(f"{where}: [diagnostics] request {plan.label}: the same request as {seen[plan.key]}")
        seen[plan.key] = plan.label
    stale: dict[str, float] = {}
    for plan in plans:
        for v in plan.values:
            if v.path is not None:
                stale[v.path] = max(stale.get(v.path, 0.0), _stale_after(plan))
    if diag.standard_pids:
        for path in STANDARD_PATHS | {vss.DTC_LIST}:
            stale.setdefault(path, max(MIN_STALE_S, 3 * max(diag.periods.model_dump().values())))
    if problems:
        return None, problems
    return DiagProfile(diag, plans, stale, notes), []


def _dbc_values(name: str, plan: DiagPlan, config: AgentConfig, databases: Sequence[tuple[str, Database]],
                where: str, problems: list[str]) -> list[DiagValue]:
    for file, db in databases:
        message = find_message([db], name)
        if message is not None:
            return dbc_values(plan, message, config.mappings(), where, file, problems)
    files = ", ".join(f for f, _ in databases) or "none given in [can] dbc"
    problems.append(f'{where}: [[diagnostics.request]] {plan.label}: dbc_message "{name}" is not in '
                    f"the config's DBCs ({files})")
    return []


def _awake_problems(config: AgentConfig, plans: list[DiagPlan], where: str) -> list[str]:
    """The awake signal must come from the car's own broadcast frames, never from a polled answer."""
    diag = config.diagnostics
    path = diag.awake_signal if diag is not None else None
    if path is None:
        return []
    mapping = config.mappings().get(path)
    if mapping is None or mapping.message == SIGNALSET_SOURCE:
        return [f'{where}: [diagnostics] awake_signal "{path}": not mapped from a DBC signal in [signals] '
                "(the evidence must be a frame the car sends of its own)"]
    polled = [p.label for p in plans for v in p.values if v.path == path]
    if polled:
        return [f'{where}: [diagnostics] awake_signal "{path}": also polled by request {polled[0]}; '
                "an answer to our own request must never show the car awake"]
    return []


def _stale_after(plan: DiagPlan) -> float:
    return max(MIN_STALE_S, 3 * max(plan.periods.values(), default=0.0))


def _request_plan(r: DiagRequest, diag: DiagnosticsConfig, where: str) -> DiagPlan:
    ident = b"" if r.identifier is None else r.identifier.to_bytes(IDENTIFIER_BYTES[r.service], "big")
    functional = r.tx_id == FUNCTIONAL_ID
    rx_ids = frozenset(OBD_RESPONSE_IDS) if r.rx_id is None else frozenset({r.rx_id})
    p = r.periods or diag.periods
    kind = {0x03: "dtc_stored", 0x07: "dtc_pending", 0x0A: "dtc_permanent", 0x19: "uds_dtc"}.get(r.service, "data")
    plan = DiagPlan(key=f"{r.tx_id:X}.{r.service:02X}{ident.hex().upper()}", label=r.label, tx_id=r.tx_id,
                    rx_ids=rx_ids, extended=r.is_extended, request=bytes([r.service]) + ident,
                    periods={"driving": p.driving, "charging": p.charging, "parked": p.parked},
                    timeout_s=r.timeout_s, kind=kind, functional=functional,  # type: ignore[arg-type]
                    source=f"{where}: [[diagnostics.request]] {r.label}")
    for i, s in enumerate(r.signal):
        boolean = s.true_values is not None or s.path in vss.BOOLEAN_PATHS
        lo, hi = vss.PLAUSIBLE.get(s.path, (None, None))
        plan.values.append(DiagValue(
            key=f"{r.label}.{i}", path=s.path,
            spec=BitSpec(s.bit, s.length, s.signed, s.byte_order == "little_endian" and s.length > 8),
            kind="bool" if boolean else "number", scale=s.scale, offset=s.offset,
            na_raw=frozenset(s.not_available), true_raw=frozenset(s.true_values or [1]),
            lo=s.min if s.min is not None else lo, hi=s.max if s.max is not None else hi,
            ndigits=ndigits(s.scale)))
    return plan


def _signalset_plans(path: Path, diag: DiagnosticsConfig, overrides: dict[str, SignalMap],
                     problems: list[str], notes: list[str], model_year: int | None) -> list[DiagPlan]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot read signal set: {exc.strerror or exc}")
        return []
    sset, errors = parse_signalset(text, str(path))
    if sset is None:
        problems.extend(errors)
        return []
    builder = SignalSetBuilder(sset, str(path), diag, overrides, model_year)
    plans = builder.plans()
    problems.extend(builder.problems)
    notes.extend(builder.notes)
    return plans
