"""The agent's layering, checked from the source with `ast` (reads files).

    core      the pure core: imports only itself (and no IO library)
    profile   config and DBC files -> core objects: imports core
    io        adapters (buses, logs, MQTT, SQLite, systemd): imports core, profile
    commands  the command protocol and its runner: imports core, profile, io
    cli       the command line and the daemon that wires everything: imports anything

Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAYERS = ("core", "profile", "io", "commands", "cli")
ALLOWED = {layer: frozenset(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)}
# Outside the agent: what each layer may not import. The core does no IO at all.
CORE_FORBIDDEN = frozenset({"can", "paho", "sqlite3", "socket", "threading", "asyncio", "subprocess",
                            "serial", "time", "selectors", "simulators", "relay", "isotp", "udsoncan"})
OUTSIDE_FORBIDDEN = {layer: frozenset({"simulators", "relay"}) for layer in ("profile", "io", "commands")}
OUTSIDE_FORBIDDEN["core"] = CORE_FORBIDDEN
# The package's top level holds only its entry points.
TOP_LEVEL_FILES = frozenset({"__init__.py", "__main__.py", "py.typed"})


@dataclass(frozen=True)
class Import:
    module: str      # the importing module, e.g. agent.core.rules
    target: str      # the imported module, e.g. agent.core.state
    line: int

    def where(self, root: Path) -> str:
        return f"{self.module.replace('.', '/')}.py:{self.line}: imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from agent.core import vss` imports the module agent.core.vss
                sub = f"{base}.{alias.name}"
                yield Import(name, sub if _is_module(sub, root) else base, node.lineno)


def _is_module(dotted: str, root: Path) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def all_imports(root: Path, package: str = "agent") -> list[Import]:
    return [imp for path in sorted((root / package).rglob("*.py")) for imp in imports_of(path, root)]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "agent" and parts[1] in LAYERS else None


def violations(root: Path, package: str = "agent") -> list[str]:
    """Every import that breaks the layering, and every module at the package's top level."""
    found = [f"{package}/{p.name}: a module at the top level (put it in one of {', '.join(LAYERS)})"
             for p in sorted((root / package).iterdir()) if p.is_file() and p.name not in TOP_LEVEL_FILES]
    for imp in all_imports(root, package):
        layer = layer_of(imp.module)
        if layer is None:
            continue
        target_layer = layer_of(imp.target)
        top = imp.target.split(".")[0]
        if target_layer is not None and target_layer not in ALLOWED[layer]:
            found.append(f"{imp.where(root)} ({layer} may import only {', '.join(sorted(ALLOWED[layer]))})")
        elif top in OUTSIDE_FORBIDDEN.get(layer, ()):
            found.append(f"{imp.where(root)} ({layer} may not import {top})")
    return found


def cycles(root: Path, package: str = "agent") -> list[list[str]]:
    """Import cycles between the package's modules (each found once, as a path a -> ... -> a)."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports(root, package):
        if imp.target.startswith(package + ".") and imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append(loop)
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found
