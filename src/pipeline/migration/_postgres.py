"""The ``files`` table in PostgreSQL (the ``postgres`` extra): migrators on many machines.

:class:`PostgresFileTable` runs the SQL of :class:`~._files.FileTable` on
psycopg 3, one autocommitted statement per operation. What it adds is what
makes one table safe to share across machines:

- The clock is the server's (``clock_timestamp()``, in epoch seconds as a
  double): every migrator measures leases against the same clock.
- A claim locks the rows it picks with ``FOR UPDATE SKIP LOCKED``: a row
  another claimer is taking is skipped, not waited for, and a row another
  claimer took since this one's snapshot is checked again, as it now is,
  before it is claimed (see :meth:`FileTable.claim`).

- Its :meth:`~PostgresFileTable.clock` is the server's too: the offset of
  the server's clock from this process's monotonic one, measured once, so
  that a file's ``leased_at`` means the same in every process and on every
  machine.

Pickled (a stage sent to a Dask cluster carries its table), a table is its
configuration: the URL as given (with its password, if it has one), the
owner, the lease and the connect timeout. The copy connects when first
used; :meth:`~PostgresFileTable.for_worker` there opens a worker's own
connection at once, as here.

A server that cannot be reached, a wrong password or a missing database is
a :class:`MigrationConfigError` naming ``--db``, raised within
``connect_timeout``; its message never shows the password.

>>> PostgresFileTable("postgresql://postgres:secret@127.0.0.1:1/files")
Traceback (most recent call last):
    ...
MigrationConfigError: cannot connect to PostgreSQL 127.0.0.1:1/files: ... (check --db)
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from .._validate import check_seconds
from ._errors import MigrationConfigError
from ._files import DEFAULT_LEASE_SECONDS, FileTable

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresFileTable"]

_T = TypeVar("_T")

# libpq's (and psycopg's) connect timeout is whole seconds, at least 2.
_MIN_CONNECT_SECONDS = 2


class PostgresFileTable(FileTable):
    """The ``files`` table in a PostgreSQL database, shared by migrators anywhere.

    One connection per object, in autocommit mode: every operation is one
    statement, and a claim holds its row locks only while it runs.
    :meth:`for_worker` opens another connection for another worker.

    Args:
        url: a libpq connection string, ``postgresql://user:password@host:port/dbname``.
        owner: this migrator's id in the claims (default: host, pid, random).
        lease_seconds: how long a claim lasts without a step renewing it.
        connect_timeout: how long to wait for the server, in seconds; libpq
            counts whole seconds (rounded up here, at least 2) and waits
            that long for each address a host name resolves to.

    Raises:
        MigrationConfigError: psycopg is not installed, or the database
            cannot be reached or logged into; the message names ``--db``.
    """

    placeholder = "%s"
    now = "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"

    def __init__(
        self,
        url: str,
        *,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(owner=owner, lease_seconds=lease_seconds)
        timeout = check_seconds("connect_timeout", connect_timeout)
        if not timeout:
            raise ValueError(f"'connect_timeout' must be more than 0, got {connect_timeout!r}")
        self.url = url
        self.connect_timeout = timeout
        self._where = _redact(url, url)
        try:
            import psycopg  # noqa: PLC0415 (the postgres extra, imported when used)
            from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415
        except ImportError as exc:
            message = (
                f"--db {self._where} needs psycopg and the system's libpq ({exc}):"
                " pip install 'threaded-pipeline[postgres]' (Debian: apt-get install libpq5)"
            )
            raise MigrationConfigError(message) from None
        try:
            self._where = _describe(conninfo_to_dict(url))
        except psycopg.Error as exc:
            message = f"--db is not a PostgreSQL URL: {_redact(_one_line(exc), url)}"
            raise MigrationConfigError(message) from None
        self._clock_offset: float | None = None  # the server's clock - time.monotonic()
        self._closed = False
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = self._connect()
        info = self._connection.info
        self._where = f"{info.host}:{info.port}/{info.dbname}"

    def __getstate__(self) -> dict[str, Any]:
        """The configuration only: the URL, the owner, the lease, the connect timeout."""
        return {
            "url": self.url,
            "owner": self.owner,
            "lease_seconds": self.lease_seconds,
            "connect_timeout": self.connect_timeout,
            "_where": self._where,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clock_offset = None  # this process's monotonic clock has another origin
        self._closed = False
        self._connection = None  # connected on first use

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg  # noqa: PLC0415 (imported by __init__ already)

        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(_MIN_CONNECT_SECONDS, math.ceil(self.connect_timeout)),
            )
        except psycopg.Error as exc:
            # from None: the message is the whole story; psycopg's traceback
            # (and libpq's, which may quote the URL) would only bury it.
            reason = _redact(_one_line(exc), self.url)
            message = f"cannot connect to PostgreSQL {self._where}: {reason} (check --db)"
            raise MigrationConfigError(message) from None

    def _again(self, work: Callable[[psycopg.Connection[tuple[Any, ...]]], _T]) -> _T:
        """Run ``work`` on the connection, on a new one if the server had dropped it.

        A server restarted, a failover, an idle connection cut by a proxy:
        the statement fails at once on the dead connection, and is sent
        once more on a fresh one. Every statement of the table can be: a
        renewal, a key kept by ``COALESCE``, a step fenced by owner. What a
        resend cannot see is an answer lost with the connection: a claim
        that committed then looks empty (its rows stay this migrator's
        until its run gives them back), a final step then looks lost.
        """
        import psycopg  # noqa: PLC0415

        connection = self._connection
        if connection is None:  # unpickled: not connected yet
            if self._closed:
                raise psycopg.OperationalError("the connection is closed")
            connection = self._connection = self._connect()
        try:
            return work(connection)
        except psycopg.OperationalError:
            if not connection.broken:
                raise  # the statement failed, not the connection
        connection.close()
        connection = self._connection = self._connect()
        return work(connection)

    def describe(self) -> str:
        """``"PostgreSQL host:port/dbname"``: where the table is, without the password."""
        return f"PostgreSQL {self._where}"

    def for_worker(self) -> PostgresFileTable:
        """A table object on a new connection, with the same owner and lease."""
        worker = PostgresFileTable(
            self.url,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            connect_timeout=self.connect_timeout,
        )
        worker._clock_offset = self._clock_offset  # one server, one process: the same offset
        return worker

    def clock(self) -> float:
        """The server's clock now, in epoch seconds: ``time.monotonic()`` plus its offset.

        The offset is measured by the first call (one ``SELECT``, taken at
        the middle of its round trip, so within half of it) and kept: the
        server's clock, not this machine's, is what the leases are
        measured on, and the monotonic clock does not jump when this
        machine's clock is set.
        """
        offset = self._clock_offset
        if offset is None:
            before = time.monotonic()
            ((server,),) = self._execute(self._sql("SELECT {now}"))
            after = time.monotonic()
            offset = self._clock_offset = float(server) - (before + after) / 2
        return time.monotonic() + offset

    def create(self) -> None:
        """Create the table and its indexes, if they are not there; safe from many at once.

        ``CREATE TABLE IF NOT EXISTS`` is not: two sessions creating one
        table at the same moment can both pass the check, and one fails on
        the catalog's unique index. An advisory lock (this session's) makes
        the migrators starting together create it one after another.
        """
        self._execute("SELECT pg_advisory_lock(%s)", (_CREATE_LOCK,))
        try:
            super().create()
        finally:
            self._execute("SELECT pg_advisory_unlock(%s)", (_CREATE_LOCK,))

    def _lock_claimed(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def _sql(self, sql: str) -> str:
        # psycopg reads %s as a placeholder and %% as a percent sign in every
        # statement run with parameters (which _execute always passes), so a
        # literal % in the shared SQL is doubled before the placeholders go in.
        return super()._sql(sql.replace("%", "%%"))

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def execute(connection: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            cursor = connection.execute(sql, tuple(params))
            return cursor.fetchall() if cursor.description is not None else []

        return self._again(execute)

    def _execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)  # sent again whole if the connection drops: one transaction

        def execute_many(connection: psycopg.Connection[tuple[Any, ...]]) -> None:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(sql, rows)

        self._again(execute_many)

    def _rowcount(self, sql: str, params: Sequence[Any]) -> int:
        return self._again(lambda connection: connection.execute(sql, tuple(params)).rowcount)

    def close(self) -> None:
        """Close the connection (again: nothing happens); the object is not used afterwards."""
        self._closed = True
        if self._connection is not None:
            self._connection.close()


# The advisory lock key of create(): any constant will do, one for this table.
_CREATE_LOCK = 0x7069_7065_6669_6C65  # "pipefile"


def _one_line(exc: BaseException) -> str:
    # libpq's messages run over several indented lines.
    return " ".join(str(exc).split())


def _describe(params: dict[str, Any]) -> str:
    # libpq's defaults, as far as the URL shows them (PG* variables aside).
    host = params.get("host") or params.get("hostaddr") or "(default host)"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "(default database)"
    return f"{host}:{port}/{dbname}"


_USERINFO = re.compile(r"^([a-z]+://[^:@/?]*):[^@/?]*@", re.IGNORECASE)
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)


def _redact(text: str, url: str) -> str:
    """``text`` without the password ``url`` holds: libpq quotes a URL it cannot parse.

    >>> _redact('bad URI: "postgresql://me:pw@h:x/db"', "postgresql://me:pw@h:x/db")
    'bad URI: "postgresql://me:***@h:x/db"'
    """
    secrets = {m.group(2).strip("'") for m in _PASSWORD_PARAM.finditer(url)}
    userinfo = _USERINFO.match(url)
    if userinfo:
        secrets.add(url[len(userinfo.group(1)) + 1 : userinfo.end() - 1])
    secrets |= {unquote(secret) for secret in secrets}
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        # Whole tokens only: a one-letter password must not garble the message.
        text = re.sub(rf"(?<![\w%]){re.escape(secret)}(?![\w%])", "***", text)
    return text
