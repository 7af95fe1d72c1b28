"""A private, throwaway PostgreSQL server for the tests and the demo.

It runs from the PostgreSQL binaries on the machine (initdb, pg_ctl), listens only on a
Unix socket in its own folder, trusts local connections, and is removed when stopped.
PostgreSQL refuses to run as root, so under root it runs as the `postgres` user (created
if missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path


def find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(f"PostgreSQL's {name} not found: install the postgresql package")


class TempPostgres:
    def __init__(self, base: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="photo-ingest-pg-", dir=base))
        self.data = self.dir / "data"
        self.socket_dir = self.dir
        self._user: str | None = None

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> TempPostgres:
        if os.geteuid() == 0:
            self._user = "postgres"
            try:
                pw = pwd.getpwnam(self._user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self._user],
                               check=True)
                pw = pwd.getpwnam(self._user)
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(find_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again, after pause())."""
        opts = (f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-w", "-t", "60",
                  "-l", str(self.dir / "server.log"), "start")

    def pause(self) -> None:
        """Stop the server as an administrator would (fast shutdown: every connection is
        cut, committed data kept), so a test can see its clients lose the catalog."""
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                      "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
