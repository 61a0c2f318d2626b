"""`carfriend check-config`: every problem of a config, its DBCs and its mapping, at once (reads files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.core.errors import ConfigError
from agent.profile.config import load_config, load_mapping_part
from agent.profile.vehicle import load_vehicle


def check_config(path: Path, dbc_override: list[Path] | None = None) -> tuple[list[str], list[str]]:
    """Every problem (and note) of a config, its DBCs and its mapping."""
    try:
        config = load_config(path, dbc_override=dbc_override)
    except ConfigError as exc:
        return exc.problems + _mapping_problems(path, dbc_override), []
    try:
        vehicle = load_vehicle(config)
    except ConfigError as exc:
        return exc.problems, []
    from agent.core.persona import Persona
    from agent.core.rules import build_rules  # the rules say which inputs they lack

    notes: list[str] = []
    problems: list[str] = []
    _rules, disabled = build_rules(config, vehicle.mapped_paths)
    notes.extend(f"{path}: {d}" for d in disabled)
    try:
        persona = Persona.from_config(config)
        problems.extend(f"{path}: {p}" for p in persona.missing_kinds())
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems, notes + vehicle.warnings


def _mapping_problems(path: Path, dbc_override: list[Path] | None) -> list[str]:
    """The mapping's problems when the rest of the config has errors: one run shows both."""
    try:
        partial = load_mapping_part(path, dbc_override=dbc_override)
        if partial is not None:
            load_vehicle(partial)
    except ConfigError as exc:
        return exc.problems
    return []


def cmd_check_config(args: argparse.Namespace) -> int:
    problems, notes = check_config(args.config, args.dbc)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"{args.config}: {len(problems)} problem(s)")
        return 1
    print(f"{args.config}: OK")
    return 0
