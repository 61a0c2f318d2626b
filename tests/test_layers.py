"""The agent's sub-packages keep their layers (core <- profile <- io <- commands <- cli) and no cycles."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from layers import LAYERS, cycles, violations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_agent_keeps_its_layers() -> None:
    assert violations(ROOT) == []


def test_agent_has_no_import_cycles() -> None:
    assert cycles(ROOT) == []


def test_every_layer_is_a_package_with_a_docstring_saying_what_it_holds() -> None:
    for layer in LAYERS:
        init = ROOT / "agent" / layer / "__init__.py"
        assert init.is_file(), layer
        assert init.read_text().startswith('"""'), layer


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "agent", tmp_path / "agent", ignore=shutil.ignore_patterns("__pycache__", "catalogs"))
    return tmp_path


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_a_core_module_importing_an_adapter_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(root / "agent/core/rules.py", "\n\ndef _bad() -> None:\n    from agent.io.uplink import PahoUplink\n")
    found = violations(root)
    assert len(found) == 1
    assert "agent/core/rules.py" in found[0] and "agent.io.uplink" in found[0]


def test_a_core_module_doing_io_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(root / "agent/core/state.py", "\nimport can\nimport sqlite3\n")
    found = violations(root)
    assert [f.split("(")[-1] for f in found] == ["core may not import can)", "core may not import sqlite3)"]


def test_the_core_importing_the_simulator_or_the_cli_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(root / "agent/core/pipeline.py", "\nfrom agent.cli import main\nimport simulators\n")
    assert len(violations(root)) == 2


def test_an_adapter_importing_the_command_line_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(root / "agent/io/outbox.py", "\nfrom agent.cli.daemon import Agent\n")
    assert any("agent/io/outbox.py" in v for v in violations(root))


def test_a_module_at_the_top_level_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "agent/helpers.py").write_text('"""Misc."""\n')
    assert violations(root) == ["agent/helpers.py: a module at the top level (put it in one of "
                                "core, profile, io, commands, cli)"]


def test_a_cycle_is_caught_even_through_a_lazy_import(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(root / "agent/core/state.py", "\n\ndef _late() -> None:\n    from agent.core import rules\n")
    loops = cycles(root)
    assert loops and all(loop[0] == loop[-1] for loop in loops)
    assert any({"agent.core.state", "agent.core.rules"} <= set(loop) for loop in loops)
