"""Test helpers: a throw-away PostgreSQL cluster (initdb + pg_ctl in a temp dir, a free loopback
port), one fresh database per test. No system service: the cluster lives as long as the tests."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from mqtt_helpers import free_port


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(dirs[-1]).parent if dirs else None


class PostgresCluster:
    """A real PostgreSQL on 127.0.0.1:<port>, data in a temp dir. As root it runs as the
    `postgres` system user (PostgreSQL refuses to run as root), which owns the temp dir."""

    def __init__(self, durable: bool = False) -> None:
        # durable: fsync, synchronous_commit and full_page_writes on, as a production server
        # runs (benchmarks); the tests' default turns them off (a crash loses only this cluster).
        self.durable = durable
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (the README's test command installs "
                               "Debian's postgresql)")
        self.bindir = bindir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="carfriend-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs the `postgres` system user (Debian's "
                                   "postgresql package creates it)") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [*self._run_as, str(self.bindir / args[0]), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout)[-2000:]}")

    def start(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        # Test settings: no fsync unless durable (a crash loses the throw-away cluster, nothing
        # else), enough connections for a few relays with their pools, sockets only in our dir.
        return self.resume()

    def resume(self) -> PostgresCluster:
        """Start the server on the existing data directory (after start(), or a stop())."""
        unsafe = ("" if self.durable else
                  "-c fsync=off -c synchronous_commit=off -c full_page_writes=off ")
        opts = (f"-c listen_addresses={self.host} -c port={self.port} "
                f"-c unix_socket_directories={self.dir} {unsafe}"
                "-c max_connections=200 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                  "-t", "60", "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, template: str | None = None) -> str:
        """A new database (empty, or a copy of template); returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (pg_ctl -m smart|fast|immediate); resume() starts it again."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30",
                          "stop", timeout=60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

