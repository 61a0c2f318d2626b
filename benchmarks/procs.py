"""`carfriend run` as a process: time from exec to READY=1 and peak RSS (starts processes)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.traffic import ROOT

CARFRIEND = ROOT / ".venv" / "bin" / "carfriend"


def _config_copy(source: Path, workdir: Path, dbc: Path | None) -> Path:
    """The config on a virtual bus, with its state dir in workdir; DBC paths kept absolute."""
    text = source.read_text()
    text = re.sub(r'(?m)^interface = .*$', 'interface = "virtual"', text)
    text = re.sub(r'(?m)^channel = .*$', f'channel = "bench-{os.getpid()}"', text)
    text = re.sub(r'(?m)^bitrate = .*$', "", text)
    dbc_path = dbc or (source.parent / re.search(r'(?m)^dbc = \["([^"]+)"\]', text).group(1)).resolve()  # type: ignore[union-attr]
    text = re.sub(r'(?m)^dbc = .*$', f'dbc = ["{dbc_path}"]', text)
    text += f'\n[storage]\nstate_dir = "{workdir}"\n'
    path = workdir / "agent.toml"
    path.write_text(text)
    return path


def run_agent(config: Path, dbc: Path | None = None, settle_s: float = 1.0) -> tuple[float, float]:
    """(seconds from exec to READY=1, peak RSS in MB after settle_s of running)."""
    with tempfile.TemporaryDirectory(prefix="carfriend-bench-run-") as tmp:
        workdir = Path(tmp)
        cfg = _config_copy(config, workdir, dbc)
        sock_path = str(workdir / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        sock.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path)
        env.pop("WATCHDOG_USEC", None)
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(CARFRIEND), "run", "--config", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ready_s = _wait_ready(sock, t0, proc)
            time.sleep(settle_s)
            rss_mb = _peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()
        return ready_s, rss_mb


def _wait_ready(sock: socket.socket, t0: float, proc: subprocess.Popen[bytes]) -> float:
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            raise RuntimeError("carfriend run sent no READY=1 within 30 s") from None
        if b"READY=1" in data.split(b"\n"):
            return time.perf_counter() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"carfriend run exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")
