"""A real PostgreSQL server for the tests: one per session, on 127.0.0.1.

The fixtures (a pytest plugin, registered in ``conftest.py``):

- ``postgres_server`` (session): the :class:`PostgresServer`, started on
  first use in a temporary data directory and stopped at the session's end
  (``pg_ctl stop -m fast``, then the directory removed).
- ``postgres_url`` (session): ``postgresql://postgres@127.0.0.1:PORT/DB``,
  a database created for the session.
- ``pg_table_url`` (function): a fresh, empty database of its own for one
  test, dropped after it, so tests never see each other's rows.

They skip, saying why, when PostgreSQL's programs or psycopg are missing,
and fail instead with ``$PIPELINE_TEST_REQUIRE_SERVERS`` set (``.ci/run``
sets it, and installs both); a server that is installed but does not start fails the
tests instead, with its log. PostgreSQL refuses to run as root: as root the
server runs as the ``postgres`` user, in a directory that user owns;
otherwise as the current user.

The server is built for tests, not for keeping data: ``fsync`` off, no
synchronous commit, trust authentication on 127.0.0.1 but for one role,
:data:`PASSWORD_USER`, which logs in with :data:`PASSWORD`.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, skip_without_server

__all__ = [
    "PASSWORD",
    "PASSWORD_USER",
    "PostgresServer",
    "find_postgres_bin",
    "pg_table_url",
    "postgres_server",
    "postgres_url",
]

SUPERUSER = "postgres"
# A role that must log in with a password (every other role is trusted), so
# that tests can see a wrong password refused.
PASSWORD_USER = "pipeline_password"
PASSWORD = "right-password"
START_SECONDS = 30  # pg_ctl -w -t: how long a start (or a stop) may take
_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def find_postgres_bin() -> Path | None:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres``: PATH's first, else the newest."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path))

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)][
        ::-1
    ]
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in _PROGRAMS):
            return directory
    return None


class PostgresServer:
    """One PostgreSQL server in a temporary directory: :meth:`start`, then :meth:`stop`.

    Args:
        bin_dir: where ``initdb``, ``pg_ctl`` and ``postgres`` are.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        # As root, run everything as the postgres user (its own groups only);
        # a developer's own account runs the server directly.
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.root.chmod(0o700)

    def url(self, dbname: str = "postgres") -> str:
        """The URL of database ``dbname`` on this server, as its superuser."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Without the caller's PG* variables (a PGDATA or PGPORT of the
        # developer's would redirect the programs), from a directory the
        # server's user can enter.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        user = self._user
        return subprocess.run(
            [str(self.bin_dir / argv[0]), *argv[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_SECONDS * 2,
            check=check,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )

    def start(self) -> None:
        """Create the cluster and start the server; return once it accepts connections.

        ``pg_ctl start -w`` returns when the server says it is ready (it
        polls the server's pid file: no fixed sleep). The port is probed
        free first; if another process takes it before the server binds
        it, the start is tried again on another port.
        """
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        hba = self.data / "pg_hba.conf"  # first match wins: the password line goes first
        hba.write_text(f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")
        for _ in range(3):
            self.port = free_port()
            options = [
                f"-p {self.port}",
                f"-c listen_addresses={self.host}",
                f"-k {shlex.quote(str(self.root))}",
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c max_connections=200",
            ]
            started = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", str(START_SECONDS), "-o", " ".join(options), "start",
                check=False,
            )  # fmt: skip
            if started.returncode == 0:
                _admin(self.url(), f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "could not bind" not in log and "already in use" not in log:
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}{started.stderr}\n{log}")

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                stopped = self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
                    "-t", str(START_SECONDS), "stop", check=False,
                )  # fmt: skip
                if stopped.returncode != 0:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=START_SECONDS) as connection:
        connection.execute(statement)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, started on first use; skips if there is none to run."""
    try:
        import psycopg  # noqa: F401 (only whether it imports, with its libpq)
    except ImportError as exc:
        skip_without_server(f"psycopg cannot be imported ({exc}): pip install -e '.[postgres]'")
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        skip_without_server(
            "PostgreSQL is not installed: no initdb/pg_ctl/postgres in PATH or"
            " /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            skip_without_server(
                f"running as root, and there is no {SUPERUSER!r} user to run PostgreSQL"
            )
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database on the session's server, for the whole session: its URL."""
    _admin(postgres_server.url(), "CREATE DATABASE pipeline_tests")
    return postgres_server.url("pipeline_tests")


@pytest.fixture
def pg_table_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for one test: its URL; dropped after the test.

    ``WITH (FORCE)`` ends any session the test left open (a killed
    subprocess's, say), so the drop cannot fail on a straggler.
    """
    name = f"test_{uuid.uuid4().hex}"
    _admin(postgres_server.url(), f"CREATE DATABASE {name}")
    try:
        yield postgres_server.url(name)
    finally:
        _admin(postgres_server.url(), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
