"""The test VM: a stock Debian kernel with SocketCAN under qemu; runs guest jobs (IO).

Every test here is marked `vm` and deselected by default; run them with `python -m pytest -m vm`.
The guest sees this host's / read-only (with a throw-away overlay on top), so the checkout, the
venv and Mosquitto are the same inside; only the job folder comes back out.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SETUP_TIMEOUT_S = 900


def setup() -> None:
    """tests/vm/setup.sh: apt packages, the kernel and the initramfs (idempotent, ~0 s when done)."""
    subprocess.run(["sh", str(HERE / "setup.sh")], check=True, timeout=SETUP_TIMEOUT_S,
                   capture_output=True)


@dataclass
class GuestRun:
    rc: int
    job: Path
    console: str

    @property
    def boot_s(self) -> float | None:
        """systemd mode: the guest's uptime when the job started (kernel + systemd boot)."""
        text = self.file("boot_s").strip()
        return float(text) if text else None

    def started_units(self) -> set[str]:
        """systemd mode: every unit systemd started (or began to) in the guest, from the journal."""
        return set(self.file("units-started.txt").split())

    def file(self, name: str) -> str:
        path = self.job / name
        return path.read_text(errors="replace") if path.exists() else ""

    def explain(self) -> str:
        """Everything a failing assertion should show: the console tail and the job files."""
        parts = [f"guest exit status {self.rc}", "--- console (tail)", self.console[-3000:]]
        for path in sorted(self.job.glob("*")):
            if path.is_file() and path.suffix in (".txt", ".log", ".rc", ".err"):
                parts += [f"--- {path.name}", path.read_text(errors="replace")[-3000:]]
        return "\n".join(parts)


class VirtualMachine:
    """Runs a shell command in a fresh VM with a kept job folder."""

    def run(self, command: str, job: Path, *, systemd: bool = False, timeout_s: float = 900,
            env: dict[str, str] | None = None, units: tuple[str, ...] = ()) -> GuestRun:
        """`units`: host-enabled units the job itself starts (the others are masked in the guest)."""
        job.mkdir(parents=True, exist_ok=True)
        guest_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        host_env = {**os.environ, "VCANVM_JOB": str(job), "VCANVM_TIMEOUT": str(int(timeout_s)),
                    "VCANVM_UNITS": " ".join(units)}
        if systemd:
            host_env["VCANVM_SYSTEMD"] = "1"
        result = subprocess.run(
            [str(HERE / "run.sh"), f"{guest_env} {command}".strip()], cwd=REPO, env=host_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s + 60)
        console = result.stdout.decode(errors="replace")
        (job / "console.txt").write_text(console)
        return GuestRun(result.returncode, job, console)
