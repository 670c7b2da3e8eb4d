"""The database of files to migrate: a ``files`` table, its claims and steps.

Each row is one file: where it is (source bucket and key), what it should
be (size, sha256), where it goes (the destination key, chosen once and
stored before the copy), and how far it got (``status``: ``READY``,
``S3_COPIED``, ``API_UPLOADED``, then ``VERIFIED`` or ``FAILED`` with
``last_error``). A migrator *claims* the unfinished rows it works on: its
``owner`` id and a lease, renewed by every step. Claims are what let several
migrators share one table (PostgreSQL, on many machines): a row under
another's live lease is not claimed, and a migrator that dies leaves its
rows to be claimed again once their leases run out. Every step is written
only while the row is still this migrator's (:class:`LeaseLost` otherwise),
so a file taken over is not also finished by the migrator that lost it.

:class:`FileTable` is the interface; :class:`SQLiteFileTable` (stdlib, the
embedded default) and ``PostgresFileTable`` (the ``postgres`` extra) share
its SQL, which differs only in placeholders and in how rows are locked while
claimed. Times are the database's clock, so migrators on machines whose
clocks differ agree on when a lease ran out.

A table pickles as its configuration (where it is, the owner, the lease),
never its connection: a stage sent to a worker process or a Dask cluster
carries its table, and the copy there opens its own connection when first
used (:meth:`FileTable.for_worker`, in the stage's ``on_start``). The owner
travels with it, so a cluster worker's steps are fenced by this migrator's
claims: a file another migrator took over is :class:`LeaseLost` there too.

>>> table = SQLiteFileTable(":memory:")
>>> table.create()
>>> table.add([FileRecord(1, "a.pdf", 3, "ab", "src", "a.pdf")])
>>> [row.name for row in table.claim(10)]
['a.pdf']
>>> table.assign_dest_key(1, "2026/01/01/00/00/00/x")
'2026/01/01/00/00/00/x'
>>> table.advance(1, VERIFIED)
>>> table.counts()[VERIFIED]
1
>>> table.close()
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from .._validate import check_seconds
from ._errors import LeaseLost, MigrationConfigError

__all__ = [
    "API_UPLOADED",
    "FAILED",
    "READY",
    "S3_COPIED",
    "STATUSES",
    "UNFINISHED",
    "VERIFIED",
    "FileRecord",
    "FileTable",
    "SQLiteFileTable",
    "open_file_table",
]

READY = "READY"
S3_COPIED = "S3_COPIED"
API_UPLOADED = "API_UPLOADED"
VERIFIED = "VERIFIED"
FAILED = "FAILED"
STATUSES = (READY, S3_COPIED, API_UPLOADED, VERIFIED, FAILED)
UNFINISHED = (READY, S3_COPIED, API_UPLOADED)
"""The statuses a migrator still has work for."""

DEFAULT_LEASE_SECONDS = 60.0


@dataclass
class FileRecord:
    """One file to migrate, as its row says, enriched by each stage it passes.

    Attributes:
        id: the row's id.
        name: the file's name.
        size: its size in bytes.
        checksum: the sha256 (hex) of its bytes.
        source_bucket: the bucket it is copied from.
        source_key: its key there.
        dest_key: its key in the destination bucket, once chosen.
        status: how far it got (see :data:`STATUSES`).
        attempts: how many times a migrator claimed it.
        last_error: why it failed, for a ``FAILED`` row.
        dest_bucket: the destination bucket, set by the copy stage.
        history: the stages that handled it in this run, in order.
        leased_at: when this migrator last set the row's lease, from before
            the statement, on the database's clock (:meth:`FileTable.clock`,
            epoch seconds): the lease lasts at least ``lease_seconds`` from
            then. 0.0: not known. The database's clock, not this process's
            ``time.monotonic()``: the record travels between stages that may
            run in other processes or on other machines (a Dask cluster),
            whose monotonic clocks have other origins, while the database's
            clock is the one the lease itself is measured on.
    """

    id: int
    name: str
    size: int = 0
    checksum: str = ""
    source_bucket: str = ""
    source_key: str = ""
    dest_key: str | None = None
    status: str = READY
    attempts: int = 0
    last_error: str | None = None
    dest_bucket: str | None = None
    history: list[str] = field(default_factory=list)
    leased_at: float = field(default=0.0, compare=False, repr=False)


_COLUMNS = (
    "id, name, size, checksum, source_bucket, source_key, dest_key, status, attempts, last_error"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    checksum TEXT NOT NULL,
    source_bucket TEXT NOT NULL,
    source_key TEXT NOT NULL,
    dest_key TEXT,
    status TEXT NOT NULL DEFAULT 'READY',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
"""


# The unfinished rows, as SQL: literals, not parameters, so that the planner
# can match a claim's WHERE to the partial index over these rows (a plan
# made for parameters could not).
_UNFINISHED_SQL = "status IN ({})".format(", ".join(f"'{status}'" for status in UNFINISHED))


def _record(row: Sequence[Any]) -> FileRecord:
    return FileRecord(*row)


def default_owner() -> str:
    """A migrator id unique across machines: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class FileTable(ABC):
    """The ``files`` table, as one migrator (``owner``) sees and changes it.

    One object is used by one thread at a time: :meth:`for_worker` gives
    each worker its own, on its own connection, with the same owner.

    Args:
        owner: this migrator's id in the claims (default: host, pid, random).
        lease_seconds: how long a claim lasts without a step renewing it.
    """

    placeholder = "?"
    now = "?"  # an SQL expression for the database's clock, in epoch seconds

    def __init__(
        self, *, owner: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        lease = check_seconds("lease_seconds", lease_seconds)
        if not lease:
            raise ValueError(f"'lease_seconds' must be more than 0, got {lease_seconds!r}")
        self.owner = owner or default_owner()
        self.lease_seconds = lease

    # -- what a dialect provides ----------------------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """Where the table is (``"SQLite /path/files.db"``), for logs and errors."""

    @abstractmethod
    def for_worker(self) -> FileTable:
        """A table object on its own connection, with the same owner and lease."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on its own (autocommit); return its rows, if any."""

    @abstractmethod
    def _execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement per row, in one transaction."""

    @abstractmethod
    def _rowcount(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement on its own; return how many rows it changed."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; the object is not used afterwards."""

    def _lock_claimed(self) -> str:
        # Appended to the claim's inner SELECT (PostgreSQL: FOR UPDATE SKIP
        # LOCKED); SQLite's one writer at a time makes the statement atomic.
        return ""

    def _sql(self, sql: str) -> str:
        # Every statement passes through here, so a dialect can rewrite them
        # all (PostgreSQL doubles a literal %, which psycopg would misread).
        return sql.replace("?", self.placeholder).replace("{now}", self.now)

    def _now_params(self, count: int) -> tuple[Any, ...]:
        return ()

    def clock(self) -> float:
        """The database's clock now, in epoch seconds, as this process tells it.

        What :attr:`FileRecord.leased_at` is measured on, so that a stage in
        another process or on another machine can tell how old a lease is
        without asking the database. The default is this machine's clock,
        which is an embedded database's own; a server's dialect measures
        its offset (:class:`PostgresFileTable`).
        """
        return time.time()

    # -- the migration's operations -------------------------------------------------

    def create(self) -> None:
        """Create the table and its indexes, if they are not there."""
        self._execute(self._sql(_SCHEMA))
        self._execute(
            self._sql("CREATE INDEX IF NOT EXISTS files_status ON files (status, lease_until)")
        )
        # What a claim walks, by id: only the unfinished rows. Without it a
        # claim scans the primary key past every finished row first, and a
        # table of 100,000 finished rows claims a few times a second.
        self._execute(
            self._sql(
                f"CREATE INDEX IF NOT EXISTS files_unfinished ON files (id) WHERE {_UNFINISHED_SQL}"
            )
        )

    def add(self, records: Iterable[FileRecord]) -> None:
        """Insert rows for ``records`` (status ``READY``); ids already there are left alone."""
        sql = self._sql(
            "INSERT INTO files (id, name, size, checksum, source_bucket, source_key, dest_key,"
            " status, attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, NULL, 'READY', 0, {now}, {now})"
            " ON CONFLICT (id) DO NOTHING"
        )
        self._execute_many(
            sql,
            ((r.id, r.name, r.size, r.checksum, r.source_bucket, r.source_key) for r in records),
        )

    def claim(self, limit: int) -> list[FileRecord]:
        """Claim up to ``limit`` unfinished rows that no other live migrator holds, by id.

        Rows this migrator already holds are not claimed again, even with
        their lease run out: they are in its pipeline, on their way. Each
        claim counts one attempt.
        """
        # The rows are picked once, in a materialized CTE, and locked as they
        # are picked. In PostgreSQL, `WHERE id IN (SELECT ... LIMIT n FOR
        # UPDATE SKIP LOCKED)` may be planned as a nested loop that runs the
        # subquery again for each outer row, claiming more than n rows; a
        # MATERIALIZED CTE runs once. Under READ COMMITTED, FOR UPDATE locks
        # the newest version of each row and checks the WHERE again on it, so
        # a row another migrator claimed since this statement's snapshot is
        # dropped, one it is claiming now is skipped (SKIP LOCKED), and a
        # lease seen to have run out is judged again as the row now is. The
        # locks last until the UPDATE commits: nothing changes a picked row
        # in between. SQLite runs the whole statement under its one write lock.
        sql = self._sql(
            f"WITH claimable AS MATERIALIZED (SELECT id FROM files WHERE {_UNFINISHED_SQL}"
            f" AND (owner IS NULL OR (owner <> ? AND lease_until < {{now}}))"
            f" ORDER BY id LIMIT ?{self._lock_claimed()})"
            f" UPDATE files SET owner = ?, lease_until = {{now}} + ?, attempts = attempts + 1"
            f" WHERE id IN (SELECT id FROM claimable)"
            f" RETURNING {_COLUMNS}"
        )
        leased_at = self.clock()
        rows = self._execute(sql, (self.owner, limit, self.owner, self.lease_seconds))
        records = sorted((_record(row) for row in rows), key=lambda r: r.id)
        for record in records:
            record.leased_at = leased_at
        return records

    def held_by_others(self) -> tuple[int, float]:
        """Unfinished rows other migrators hold, and the seconds until the first lease ends.

        ``(0, 0.0)`` when there are none. A lease already run out counts as
        0 seconds: :meth:`claim` takes that row now. The seconds are the
        database's, as the leases are.
        """
        sql = self._sql(
            f"SELECT COUNT(*), MIN(lease_until) - {{now}} FROM files WHERE {_UNFINISHED_SQL}"
            " AND owner IS NOT NULL AND owner <> ?"
        )
        ((count, first_ends),) = self._execute(sql, (self.owner,))
        return int(count), max(0.0, float(first_ends or 0.0))

    def renew(self, file_id: int) -> None:
        """Extend this migrator's lease on a row; :class:`LeaseLost` if it is not ours."""
        sql = self._sql("UPDATE files SET lease_until = {now} + ? WHERE id = ? AND owner = ?")
        if not self._rowcount(sql, (self.lease_seconds, file_id, self.owner)):
            raise LeaseLost(f"file {file_id} is no longer claimed by {self.owner}")

    def assign_dest_key(self, file_id: int, key: str) -> str:
        """Store ``key`` as the row's destination key unless it has one; return the stored one.

        The key is chosen once: a rerun, or a migrator that took the file
        over, copies to the key the first one chose.
        """
        sql = self._sql(
            "UPDATE files SET dest_key = COALESCE(dest_key, ?), lease_until = {now} + ?,"
            " updated_at = {now} WHERE id = ? AND owner = ? RETURNING dest_key"
        )
        rows = self._execute(sql, (key, self.lease_seconds, file_id, self.owner))
        if not rows:
            raise LeaseLost(f"file {file_id} is no longer claimed by {self.owner}")
        return str(rows[0][0])

    def advance(self, file_id: int, status: str, *, error: str | None = None) -> None:
        """Record that a row reached ``status`` (with ``error`` for ``FAILED``).

        A final status (``VERIFIED``, ``FAILED``) also ends the claim.
        :class:`LeaseLost` if the row is no longer this migrator's.
        """
        if status not in STATUSES:
            raise ValueError(f"'status' must be one of {', '.join(STATUSES)}, got {status!r}")
        final = status in (VERIFIED, FAILED)
        lease = "NULL" if final else "{now} + ?"
        owner = "NULL" if final else "owner"
        sql = self._sql(
            f"UPDATE files SET status = ?, last_error = ?, updated_at = {{now}},"
            f" lease_until = {lease}, owner = {owner} WHERE id = ? AND owner = ?"
        )
        params: tuple[Any, ...] = (status, error)
        params += () if final else (self.lease_seconds,)
        if not self._rowcount(sql, (*params, file_id, self.owner)):
            raise LeaseLost(f"file {file_id} is no longer claimed by {self.owner}")

    def release(self) -> int:
        """Give up this migrator's claims on unfinished rows (a run's end); return how many."""
        sql = self._sql("UPDATE files SET owner = NULL, lease_until = NULL WHERE owner = ?")
        return self._rowcount(sql, (self.owner,))

    def reset_failed(self) -> int:
        """Make every ``FAILED`` row ``READY`` again (its destination key kept); return how many."""
        sql = self._sql(
            "UPDATE files SET status = 'READY', updated_at = {now} WHERE status = 'FAILED'"
        )
        return self._rowcount(sql, ())

    def counts(self) -> dict[str, int]:
        """How many rows have each status (every status, zeros included)."""
        found = dict(self._execute(self._sql("SELECT status, COUNT(*) FROM files GROUP BY status")))
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def records(self, status: str | None = None) -> list[FileRecord]:
        """The rows (with ``status``, or all), by id."""
        where, params = ("", ()) if status is None else (" WHERE status = ?", (status,))
        sql = self._sql(f"SELECT {_COLUMNS} FROM files{where} ORDER BY id")
        return [_record(row) for row in self._execute(sql, params)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SQLiteFileTable(FileTable):
    """The ``files`` table in an SQLite file (stdlib): the migration's embedded database.

    WAL mode, one connection per worker, a busy timeout: the workers of one
    migrator (and several migrators on one machine) write it at once, SQLite
    serializing the writes. Claims are single statements, so two migrators
    never claim the same row.

    The workers of one migrator (this object and its :meth:`for_worker`
    copies) also take turns on a lock of theirs for each statement. SQLite
    makes a writer that finds the database locked sleep and look again, for
    1, 2, 5, 10 ms and longer; a lock hands the turn over at once. Measured
    on the migration's API stage, it cut the slowest lease renewal from 35
    to 16 ms but not the mean (about 1 ms, mostly waiting for the GIL).
    Other processes still meet SQLite's own locking and the busy timeout.

    Several processes on one machine (several migrators, or a Dask
    cluster's worker processes running the uploaders) may share the file:
    the turn lock is one process's (a pickled table gets a new one, shared
    by its :meth:`for_worker` copies there), and across processes SQLite's
    own file locks keep the writes one at a time, a writer that finds the
    file locked sleeping and trying again for up to ``busy_timeout``
    seconds. Every claim and step is one statement, so this is as correct
    as one process, if less fair: a writer may wait longer for its turn.
    Not several machines: the file is one machine's, and SQLite's locks do
    not hold over a network filesystem. Workers elsewhere need PostgreSQL.

    An in-memory table (``":memory:"``) is one connection's: it does not
    pickle (``TypeError``).
    """

    now = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        busy_timeout: float = 30.0,
        _turns: threading.Lock | None = None,
    ) -> None:
        super().__init__(owner=owner, lease_seconds=lease_seconds)
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        # Shared with the for_worker() copies: one statement at a time among them.
        self._turns = threading.Lock() if _turns is None else _turns
        self._closed = False
        self._connection: sqlite3.Connection | None = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            if self.path != ":memory:":
                connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            message = f"cannot open the SQLite database {self.path!r}: {exc} (check --db)"
            raise MigrationConfigError(message) from None
        return connection

    def _open(self) -> sqlite3.Connection:
        # The connection; an unpickled table opens it on first use. Called
        # with the turn lock held.
        if self._connection is None:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            self._connection = self._connect()
        return self._connection

    def __getstate__(self) -> dict[str, Any]:
        """The configuration only: the file, the owner, the lease, the busy timeout."""
        if self.path == ":memory:":
            raise TypeError(
                "an in-memory SQLite table is one connection's and cannot leave its process:"
                " use a file (--db PATH) to send its stages to other processes"
            )
        return {
            "path": self.path,
            "owner": self.owner,
            "lease_seconds": self.lease_seconds,
            "busy_timeout": self.busy_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._turns = threading.Lock()  # this process's: a lock does not cross processes
        self._closed = False
        self._connection = None  # opened on first use

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def for_worker(self) -> SQLiteFileTable:
        if self.path == ":memory:":
            return self  # one in-memory database: share its connection
        return SQLiteFileTable(
            self.path,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            busy_timeout=self.busy_timeout,
            _turns=self._turns,
        )

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._turns:
            return self._open().execute(sql, params).fetchall()

    def _execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._turns:
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(sql, rows)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _rowcount(self, sql: str, params: Sequence[Any]) -> int:
        with self._turns:
            return self._open().execute(sql, params).rowcount

    def close(self) -> None:
        with self._turns:
            connection, self._connection = self._connection, None
            self._closed = True
        if connection is not None:
            connection.close()


def open_file_table(
    where: str, *, owner: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> FileTable:
    """Open the table ``where`` names: ``postgresql://...`` or an SQLite file path.

    >>> with open_file_table(":memory:") as table:
    ...     table.describe()
    'SQLite :memory:'
    """
    if where.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresFileTable  # noqa: PLC0415 (the postgres extra, on demand)

        return PostgresFileTable(where, owner=owner, lease_seconds=lease_seconds)
    path = where.removeprefix("sqlite:///") if where.startswith("sqlite:///") else where
    return SQLiteFileTable(path, owner=owner, lease_seconds=lease_seconds)
