"""The files table's contract, against real databases: SQLite and PostgreSQL.

One suite runs against both tables (``[sqlite]``: a file in ``tmp_path``;
``[postgres]``: a fresh database on the session's server, see
``tests/pgserver.py``): the schema, adding rows, claims and their leases,
each step's check that the row is still ours, release, reset, counts. Then
the promise the claims exist for: claimers racing over one table (threads;
for PostgreSQL also processes, one of them killed) claim every row exactly
once, counted from the claimers' own logs, not from the table. Last, what
only PostgreSQL has: row locks that claims skip, and connection failures
that name ``--db``.

Leases run out on the database's clock, so the tests that need a lease to
run out poll that clock (:func:`wait_for_lease_expiry`) instead of
sleeping for the lease.
"""

from __future__ import annotations

import itertools
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import pytest

import pipeline
from pipeline.migration import (
    API_UPLOADED,
    FAILED,
    READY,
    S3_COPIED,
    STATUSES,
    VERIFIED,
    FileRecord,
    FileTable,
    LeaseLost,
    MigrationConfigError,
    SQLiteFileTable,
)
from pipeline.migration._postgres import PostgresFileTable
from tests.helpers import WAIT
from tests.pgserver import PASSWORD, PASSWORD_USER, PostgresServer

LONG_LEASE = 60.0
SHORT_LEASE = 0.2  # a lease that the tests wait out, polling the database's clock
ROWS = 2000  # the rows the claimers race over
BATCH = 5


class MakeTable(Protocol):
    def __call__(
        self, owner: str = "a", *, lease_seconds: float = LONG_LEASE, create: bool = True
    ) -> FileTable: ...


@pytest.fixture(params=["sqlite", "postgres"])
def make_table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeTable]:
    """Open table objects on one database (each test's own), closed after the test."""
    opened: list[FileTable] = []
    if request.param == "sqlite":
        path = tmp_path / "files.db"

        def connect(owner: str, lease_seconds: float) -> FileTable:
            return SQLiteFileTable(path, owner=owner, lease_seconds=lease_seconds)
    else:
        url: str = request.getfixturevalue("pg_table_url")

        def connect(owner: str, lease_seconds: float) -> FileTable:
            return PostgresFileTable(url, owner=owner, lease_seconds=lease_seconds)

    def make(
        owner: str = "a", *, lease_seconds: float = LONG_LEASE, create: bool = True
    ) -> FileTable:
        table = connect(owner, lease_seconds)
        opened.append(table)
        if create:
            table.create()
        return table

    yield make
    for table in opened:
        table.close()


def files(ids: Iterable[int]) -> list[FileRecord]:
    return [
        FileRecord(i, f"file-{i}.pdf", 10 * i, f"{i:064x}", "src", f"in/file-{i}.pdf") for i in ids
    ]


def ids_of(records: list[FileRecord]) -> list[int]:
    return [record.id for record in records]


def by_id(table: FileTable) -> dict[int, FileRecord]:
    return {record.id: record for record in table.records()}


def claim_state(table: FileTable, file_id: int) -> tuple[Any, Any]:
    """The row's ``owner`` and ``lease_until``: the claim, which records() leaves out."""
    sql = table._sql("SELECT owner, lease_until FROM files WHERE id = ?")
    owner, lease_until = table._execute(sql, (file_id,))[0]
    return owner, lease_until


def wait_for_lease_expiry(table: FileTable, ids: list[int]) -> None:
    """Poll the database's clock until no lease on ``ids`` is live."""
    marks = ", ".join("?" for _ in ids)
    sql = table._sql(f"SELECT COUNT(*) FROM files WHERE id IN ({marks}) AND lease_until >= {{now}}")
    deadline = time.monotonic() + WAIT
    while table._execute(sql, ids)[0][0]:
        assert time.monotonic() < deadline, f"the leases on {ids} did not run out"
        time.sleep(0.01)


# -- the schema and adding rows -----------------------------------------------------------


def test_create_is_idempotent(make_table: MakeTable) -> None:
    table = make_table()
    table.add(files(range(1, 4)))
    table.create()
    make_table("b").create()
    assert table.counts()[READY] == 3
    assert ids_of(table.records()) == [1, 2, 3]


def test_add_ignores_ids_already_there(make_table: MakeTable) -> None:
    table = make_table()
    table.add(files([1, 2]))
    renamed = FileRecord(2, "other.pdf", 1, "00", "src", "other.pdf")
    table.add([renamed, *files([3, 4, 4])])
    rows = by_id(table)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2].name == "file-2.pdf"
    assert rows[3] == FileRecord(3, "file-3.pdf", 30, f"{3:064x}", "src", "in/file-3.pdf")


def test_add_is_one_transaction(make_table: MakeTable) -> None:
    table = make_table()
    broken = FileRecord(3, None, 0, "", "src", "x")  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)null"):  # each driver raises its own
        table.add([*files([1, 2]), broken])
    assert table.records() == []


def test_counts_include_every_status(make_table: MakeTable) -> None:
    table = make_table()
    assert table.counts() == dict.fromkeys(STATUSES, 0)
    assert list(table.counts()) == list(STATUSES)
    table.add(files([1, 2]))
    table.claim(1)
    table.advance(1, VERIFIED)
    assert table.counts() == {**dict.fromkeys(STATUSES, 0), READY: 1, VERIFIED: 1}


# -- claims -----------------------------------------------------------------------------


def test_claim_takes_unfinished_rows_by_id_and_counts_attempts(make_table: MakeTable) -> None:
    table = make_table()
    ids = list(range(1, 11))
    random.Random(7).shuffle(ids)
    table.add(files(ids))
    first = table.claim(3)
    assert ids_of(first) == [1, 2, 3]
    assert {(r.attempts, r.status, r.dest_key) for r in first} == {(1, READY, None)}
    assert ids_of(table.claim(100)) == list(range(4, 11))
    assert table.claim(100) == []
    assert table.release() == 10
    again = make_table("b").claim(2)
    assert [(r.id, r.attempts) for r in again] == [(1, 2), (2, 2)]


def test_claim_skips_finished_rows_and_keeps_the_step(make_table: MakeTable) -> None:
    table = make_table()
    table.add(files(range(1, 7)))
    table.claim(6)
    table.advance(1, VERIFIED)
    table.advance(2, FAILED, error="boom")
    table.advance(3, S3_COPIED)
    table.advance(4, API_UPLOADED)
    table.release()
    claimed = make_table("b").claim(10)
    assert [(r.id, r.status) for r in claimed] == [
        (3, S3_COPIED),
        (4, API_UPLOADED),
        (5, READY),
        (6, READY),
    ]


def test_rows_under_another_live_lease_are_not_claimed(make_table: MakeTable) -> None:
    a, b = make_table("a"), make_table("b")
    a.add(files(range(1, 7)))
    assert ids_of(a.claim(4)) == [1, 2, 3, 4]
    assert ids_of(b.claim(10)) == [5, 6]
    assert b.claim(10) == []
    assert a.claim(10) == []
    assert claim_state(a, 1)[0] == "a"
    assert claim_state(a, 5)[0] == "b"


def test_held_by_others_counts_others_unfinished_claims_and_their_first_lease_end(
    make_table: MakeTable,
) -> None:
    a, b = make_table("a", lease_seconds=LONG_LEASE), make_table("b")
    a.add(files(range(1, 5)))
    assert b.held_by_others() == (0, 0.0)
    assert ids_of(a.claim(3)) == [1, 2, 3]
    count, first_ends = b.held_by_others()
    assert count == 3
    assert LONG_LEASE - 60 < first_ends <= LONG_LEASE
    assert a.held_by_others() == (0, 0.0)  # its own claims are not others'
    a.advance(1, VERIFIED)  # finished rows do not count, nor do their claims
    assert b.held_by_others()[0] == 2
    a.release()
    assert b.held_by_others() == (0, 0.0)


def test_own_rows_are_not_claimed_again_even_with_the_lease_run_out(
    make_table: MakeTable,
) -> None:
    a = make_table("a", lease_seconds=SHORT_LEASE)
    a.add(files([1, 2]))
    assert ids_of(a.claim(10)) == [1, 2]
    wait_for_lease_expiry(a, [1, 2])
    assert a.claim(10) == []
    assert ids_of(make_table("b").claim(10)) == [1, 2]


def test_rows_with_a_lease_run_out_are_taken_over(make_table: MakeTable) -> None:
    a, b = make_table("a", lease_seconds=SHORT_LEASE), make_table("b")
    a.add(files(range(1, 5)))
    a.claim(3)
    assert a.assign_dest_key(1, "key-of-a") == "key-of-a"
    a.advance(2, S3_COPIED)
    wait_for_lease_expiry(a, [1, 2, 3])
    taken = b.claim(10)
    assert [(r.id, r.attempts, r.status, r.dest_key) for r in taken] == [
        (1, 2, READY, "key-of-a"),
        (2, 2, S3_COPIED, None),
        (3, 2, READY, None),
        (4, 1, READY, None),
    ]
    assert {claim_state(b, i)[0] for i in (1, 2, 3, 4)} == {"b"}


def test_the_migrator_that_lost_a_row_can_change_nothing(make_table: MakeTable) -> None:
    a, b = make_table("a", lease_seconds=SHORT_LEASE), make_table("b")
    a.add(files([1, 2, 3]))
    a.claim(3)
    a.assign_dest_key(1, "key-of-a")
    wait_for_lease_expiry(a, [1, 2, 3])
    assert ids_of(b.claim(3)) == [1, 2, 3]
    before = by_id(b)

    with pytest.raises(LeaseLost, match="file 1 is no longer claimed by a"):
        a.renew(1)
    with pytest.raises(LeaseLost):
        a.assign_dest_key(2, "key-of-a")
    with pytest.raises(LeaseLost):
        a.advance(3, VERIFIED)
    with pytest.raises(LeaseLost):
        a.advance(1, FAILED, error="a failed it")
    with pytest.raises(LeaseLost):
        a.advance(2, S3_COPIED)
    assert a.release() == 0

    assert by_id(b) == before
    assert {claim_state(b, i)[0] for i in (1, 2, 3)} == {"b"}
    b.renew(3)
    assert b.assign_dest_key(1, "key-of-b") == "key-of-a"  # the first key, kept
    b.advance(3, VERIFIED)
    assert by_id(b)[3].status == VERIFIED


def test_assign_dest_key_keeps_the_first_key(make_table: MakeTable) -> None:
    table = make_table()
    table.add(files([1, 2]))
    table.claim(2)
    assert table.assign_dest_key(1, "2026/01/first") == "2026/01/first"
    assert table.assign_dest_key(1, "2026/01/second") == "2026/01/first"
    assert table.assign_dest_key(2, "2026/01/other") == "2026/01/other"
    rows = by_id(table)
    assert (rows[1].dest_key, rows[2].dest_key) == ("2026/01/first", "2026/01/other")


def test_every_step_renews_the_lease(make_table: MakeTable) -> None:
    # Two objects of one owner: the short lease sets the lease to run out
    # soon, then a step by the long one must push it a minute away (SQLite's
    # clock counts milliseconds, so a renewal by the same lease may not show).
    short, long = make_table("a", lease_seconds=1.0), make_table("a", lease_seconds=LONG_LEASE)
    short.add(files([1]))
    short.claim(1)
    steps: list[Callable[[], object]] = [
        lambda: long.renew(1),
        lambda: long.assign_dest_key(1, "k"),
        lambda: long.advance(1, S3_COPIED),
    ]
    for step in steps:
        short.renew(1)
        _, before = claim_state(short, 1)
        step()
        owner, after = claim_state(short, 1)
        assert owner == "a"
        assert after > before + LONG_LEASE / 2


def test_a_final_status_ends_the_claim(make_table: MakeTable) -> None:
    a, b = make_table("a"), make_table("b")
    a.add(files([1, 2, 3]))
    a.claim(3)
    a.advance(1, VERIFIED)
    a.advance(2, FAILED, error="checksum mismatch")
    a.advance(3, API_UPLOADED)
    assert claim_state(a, 1) == (None, None)
    assert claim_state(a, 2) == (None, None)
    assert claim_state(a, 3)[0] == "a"  # a step on the way keeps the claim
    with pytest.raises(LeaseLost):
        a.renew(1)
    with pytest.raises(LeaseLost):
        a.advance(2, READY)
    rows = by_id(a)
    assert (rows[1].status, rows[1].last_error) == (VERIFIED, None)
    assert (rows[2].status, rows[2].last_error) == (FAILED, "checksum mismatch")
    assert b.claim(10) == []


def test_advance_refuses_an_unknown_status(make_table: MakeTable) -> None:
    table = make_table()
    table.add(files([1]))
    table.claim(1)
    with pytest.raises(ValueError, match="'status' must be one of"):
        table.advance(1, "DONE")
    assert by_id(table)[1].status == READY


def test_release_frees_only_this_migrators_unfinished_rows(make_table: MakeTable) -> None:
    a, b, c = make_table("a"), make_table("b"), make_table("c")
    a.add(files(range(1, 7)))
    a.claim(4)
    a.advance(1, VERIFIED)
    a.advance(2, S3_COPIED)
    assert ids_of(b.claim(1)) == [5]
    assert a.release() == 3
    assert a.release() == 0
    b.renew(5)
    assert [(r.id, r.status) for r in c.claim(10)] == [
        (2, S3_COPIED),
        (3, READY),
        (4, READY),
        (6, READY),
    ]
    assert by_id(c)[1].status == VERIFIED


def test_reset_failed_makes_failed_rows_ready_with_their_keys(make_table: MakeTable) -> None:
    a = make_table("a")
    a.add(files(range(1, 4)))
    a.claim(3)
    a.assign_dest_key(1, "key-1")
    a.advance(1, FAILED, error="api down")
    a.advance(2, FAILED, error="checksum")
    a.advance(3, VERIFIED)
    assert a.reset_failed() == 2
    assert a.reset_failed() == 0
    assert a.counts() == {**dict.fromkeys(STATUSES, 0), READY: 2, VERIFIED: 1}
    again = make_table("b").claim(10)
    assert [(r.id, r.status, r.dest_key, r.attempts) for r in again] == [
        (1, READY, "key-1", 2),
        (2, READY, None, 2),
    ]


def test_for_worker_is_another_connection_with_the_same_owner(make_table: MakeTable) -> None:
    table = make_table("a", lease_seconds=12.5)
    table.add(files([1, 2]))
    table.claim(1)
    with table.for_worker() as worker:
        assert worker is not table
        assert (worker.owner, worker.lease_seconds) == ("a", 12.5)
        assert worker.describe() == table.describe()
        worker.renew(1)  # the claim is the owner's, whichever connection made it
        assert ids_of(worker.claim(5)) == [2]
    assert table.counts()[READY] == 2  # the table outlives its worker's connection


def test_sql_may_hold_a_percent_sign(make_table: MakeTable) -> None:
    table = make_table()
    sql = table._sql("SELECT '100%', ? + 1")
    assert table._execute(sql, (1,)) == [("100%", 2)]


def test_describe_says_where(make_table: MakeTable, tmp_path: Path) -> None:
    table = make_table()
    if isinstance(table, SQLiteFileTable):
        assert table.describe() == f"SQLite {tmp_path / 'files.db'}"
    else:
        assert isinstance(table, PostgresFileTable)
        assert table._connection is not None  # None only in an unpickled table, until used
        info = table._connection.info
        assert table.describe() == f"PostgreSQL 127.0.0.1:{info.port}/{info.dbname}"


# -- claimers racing ----------------------------------------------------------------------


def race_threads(make_table: MakeTable, claimers: int) -> dict[str, list[int]]:
    """Claimers in threads, each its own owner and worker table, until no row is left.

    They claim in rounds, all at once (a barrier starts each round), so that
    every claim races the others'; left to run free on SQLite, one thread
    holds on to the write lock while the others sleep in SQLite's busy
    backoff, and claims everything alone. Returns what each owner claimed,
    as it logged it; every row it claimed it marks VERIFIED, which raises
    LeaseLost if the row is not its own.
    """
    make_table("setup").add(files(range(1, ROWS + 1)))
    bases = [make_table(f"owner-{n}") for n in range(claimers)]
    rounds = threading.Barrier(claimers, timeout=WAIT)
    got = [False] * claimers  # written before a round's second wait, read after it

    def claimer(n: int) -> list[int]:
        claimed: list[int] = []
        try:
            with bases[n].for_worker() as table:
                while True:
                    rounds.wait()
                    batch = table.claim(BATCH)
                    for record in batch:
                        claimed.append(record.id)
                        table.advance(record.id, VERIFIED)
                    got[n] = bool(batch)
                    rounds.wait()
                    if not any(got):
                        return claimed
                    # A claim that never runs dry fails instead of hanging.
                    assert len(claimed) <= ROWS, f"{table.owner} claimed more rows than there are"
        except BaseException:
            rounds.abort()  # the others stop at their next wait
            raise

    with ThreadPoolExecutor(claimers, thread_name_prefix="claimer") as pool:
        futures = [pool.submit(claimer, n) for n in range(claimers)]
    errors = [error for future in futures if (error := future.exception()) is not None]
    first = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)] + errors
    if first:
        raise first[0]
    return {base.owner: future.result() for base, future in zip(bases, futures, strict=True)}


def assert_claimed_once(claims: dict[str, list[int]]) -> None:
    for owner, ids in claims.items():
        assert len(ids) == len(set(ids)), f"{owner} claimed a row twice"
    for (one, ids), (other, others) in itertools.combinations(claims.items(), 2):
        both = set(ids) & set(others)
        assert not both, f"{one} and {other} both claimed {sorted(both)[:10]}"
    assert set().union(*claims.values()) == set(range(1, ROWS + 1))
    busy = [owner for owner, ids in claims.items() if ids]
    assert len(busy) >= 2, f"only {busy} claimed anything: no race happened"


def test_threads_claim_every_row_exactly_once(make_table: MakeTable) -> None:
    table = make_table("check")
    claimers = 3 if isinstance(table, SQLiteFileTable) else 4
    claims = race_threads(make_table, claimers)
    assert_claimed_once(claims)
    assert table.counts()[VERIFIED] == ROWS
    assert {r.attempts for r in table.records()} == {1}


# -- PostgreSQL: claimer processes ----------------------------------------------------------

# A claimer process: argv is URL, owner, lease, and how many rows of its first
# batch to finish before it stops to be killed (-1: finish everything). It
# logs "claimed ID STATUS ATTEMPTS" and "verified ID" lines, each written as it
# happens (line-buffered), so a kill loses none; stdout says "ready", then
# "holding" if it stopped, and the parent's lines on stdin say when to go.
_CLAIMER = r"""
import sys, time
from pipeline.migration import S3_COPIED, UNFINISHED, VERIFIED
from pipeline.migration._postgres import PostgresFileTable

url, owner, lease, hold, log_path = sys.argv[1:]
hold = int(hold)
table = PostgresFileTable(url, owner=owner, lease_seconds=float(lease))
log = open(log_path, "w", buffering=1)
print("ready", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + 30
while True:
    batch = table.claim(BATCH)
    if not batch:
        # Rows may be left under others' leases: done when none is unfinished.
        if not any(table.counts()[status] for status in UNFINISHED):
            break
        assert time.monotonic() < deadline, "rows were left unclaimed"
        time.sleep(0.01)
        continue
    for record in batch:
        log.write(f"claimed {record.id} {record.status} {record.attempts}\n")
    if hold >= 0:
        for record in batch[:hold]:
            table.advance(record.id, VERIFIED)
            log.write(f"verified {record.id}\n")
        table.advance(batch[hold].id, S3_COPIED)
        print("holding", flush=True)
        sys.stdin.readline()  # until killed
        sys.exit(3)
    for record in batch:
        table.advance(record.id, VERIFIED)
        log.write(f"verified {record.id}\n")
print("done", flush=True)
""".replace("BATCH", str(BATCH))


class Claimer:
    """One claimer process; :meth:`expect` reads its stdout with a deadline."""

    def __init__(self, url: str, owner: str, lease: float, hold: int, logs: Path) -> None:
        self.owner = owner
        self.log = logs / f"{owner}.log"
        self._stderr = (logs / f"{owner}.err").open("wb")
        env = dict(os.environ)
        source = str(Path(pipeline.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, url, owner, str(lease), str(hold), str(self.log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
        )
        self._pending = b""

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + WAIT
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(remaining, 0))
            assert ready, f"{self.owner} did not say {line!r} in time"
            chunk = os.read(self.process.stdout.fileno(), 4096)
            assert chunk, f"{self.owner} ended before saying {line!r}: {self.errors()}"
            self._pending += chunk
        got, self._pending = self._pending.split(b"\n", 1)
        assert got.decode() == line, self.errors()

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    def errors(self) -> str:
        return (self.log.parent / f"{self.owner}.err").read_text()

    def finish(self) -> None:
        self.expect("done")
        assert self.process.wait(WAIT) == 0, self.errors()

    def lines(self, kind: str) -> list[list[str]]:
        return [
            line.split()[1:] for line in self.log.read_text().splitlines() if line.startswith(kind)
        ]

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()


@pytest.fixture
def claimers() -> Iterator[Callable[..., Claimer]]:
    """Start claimer processes; every one is ended (killed if need be) after the test."""
    started: list[Claimer] = []

    def start(*args: Any) -> Claimer:
        claimer = Claimer(*args)
        started.append(claimer)
        return claimer

    yield start
    for claimer in started:
        claimer.end()


def seeded_table(url: str) -> PostgresFileTable:
    table = PostgresFileTable(url, owner="check")
    table.create()
    table.add(files(range(1, ROWS + 1)))
    return table


def test_processes_claim_every_row_exactly_once(
    pg_table_url: str, claimers: Callable[..., Claimer], tmp_path: Path
) -> None:
    with seeded_table(pg_table_url) as table:
        procs = [claimers(pg_table_url, f"proc-{n}", LONG_LEASE, -1, tmp_path) for n in range(3)]
        for proc in procs:
            proc.expect("ready")
        for proc in procs:
            proc.go()
        for proc in procs:
            proc.finish()
        claims = {proc.owner: [int(line[0]) for line in proc.lines("claimed")] for proc in procs}
        assert_claimed_once(claims)
        verified = Counter(int(line[0]) for proc in procs for line in proc.lines("verified"))
        assert verified == Counter(range(1, ROWS + 1))
        assert table.counts()[VERIFIED] == ROWS


def test_a_killed_claimers_rows_are_taken_over_and_verified_once(
    pg_table_url: str, claimers: Callable[..., Claimer], tmp_path: Path
) -> None:
    with seeded_table(pg_table_url) as table:
        # The victim claims the first batch, verifies two rows, copies a
        # third, leaves two untouched, and waits to be killed.
        victim = claimers(pg_table_url, "victim", SHORT_LEASE, 2, tmp_path)
        survivors = [
            claimers(pg_table_url, f"survivor-{n}", LONG_LEASE, -1, tmp_path) for n in range(2)
        ]
        for proc in (victim, *survivors):
            proc.expect("ready")
        victim.go()
        victim.expect("holding")
        for proc in survivors:
            proc.go()
        victim.process.send_signal(signal.SIGKILL)
        assert victim.process.wait(WAIT) == -signal.SIGKILL
        for proc in survivors:
            proc.finish()

        held = [int(line[0]) for line in victim.lines("claimed")]
        assert held == list(range(1, BATCH + 1))
        assert [int(line[0]) for line in victim.lines("verified")] == [1, 2]
        # Every row VERIFIED exactly once, as the claimers' own logs count it.
        verified = Counter(
            int(line[0]) for proc in (victim, *survivors) for line in proc.lines("verified")
        )
        assert verified == Counter(range(1, ROWS + 1))
        # The survivors took over the three rows the victim left, as it left them.
        taken = {
            int(line[0]): (line[1], int(line[2]))
            for proc in survivors
            for line in proc.lines("claimed")
            if int(line[0]) in held
        }
        assert taken == {3: (S3_COPIED, 2), 4: (READY, 2), 5: (READY, 2)}
        claims = {
            proc.owner: [int(line[0]) for line in proc.lines("claimed")] for proc in survivors
        }
        assert_claimed_once({**claims, "victim": [1, 2]})
        assert table.counts() == {**dict.fromkeys(STATUSES, 0), VERIFIED: ROWS}


# -- PostgreSQL: row locks ------------------------------------------------------------------


@pytest.fixture
def pg_table(pg_table_url: str) -> Iterator[PostgresFileTable]:
    with PostgresFileTable(pg_table_url, owner="a") as table:
        table.create()
        table.add(files(range(1, 21)))
        # A claim that had to wait for a row lock fails instead of hanging.
        table._execute("SET lock_timeout = '5s'")
        yield table


def test_claim_skips_rows_another_transaction_has_locked(pg_table: PostgresFileTable) -> None:
    import psycopg

    with psycopg.connect(pg_table.url) as other:  # not autocommit: a transaction stays open
        other.execute("UPDATE files SET owner = 'other', lease_until = 1e12 WHERE id IN (1, 3)")
        assert ids_of(pg_table.claim(3)) == [2, 4, 5]  # skipped, not waited for
        other.rollback()
    with PostgresFileTable(pg_table.url, owner="b") as b:
        assert ids_of(b.claim(3)) == [1, 3, 6]  # free again once the other rolled back


def test_a_row_skipped_while_locked_is_not_claimed_once_the_claim_commits(
    pg_table: PostgresFileTable,
) -> None:
    import psycopg

    with psycopg.connect(pg_table.url) as other:
        other.execute("UPDATE files SET owner = 'other', lease_until = 1e12 WHERE id = 1")
        assert ids_of(pg_table.claim(1)) == [2]
        other.commit()
    assert ids_of(pg_table.claim(1)) == [3]  # row 1 is other's now, under a live lease


def test_claim_takes_no_more_than_its_limit_whatever_the_plan(pg_table: PostgresFileTable) -> None:
    # A nested loop that scans the subquery again for every row of the table
    # (what the planner may choose on its own for `id IN (SELECT ... LIMIT)`).
    for setting in ("hashagg", "hashjoin", "mergejoin", "material", "sort"):
        pg_table._execute(f"SET enable_{setting} = off")
    assert ids_of(pg_table.claim(5)) == [1, 2, 3, 4, 5]
    assert ids_of(pg_table.claim(5)) == [6, 7, 8, 9, 10]


# -- PostgreSQL: connection failures ---------------------------------------------------------


def expect_config_error(url: str, *, within: float = 2.0, **options: Any) -> str:
    started = time.monotonic()
    with pytest.raises(MigrationConfigError) as caught:
        PostgresFileTable(url, **options)
    took = time.monotonic() - started
    assert took < within, f"took {took:.1f} s"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    message = str(caught.value)
    assert "--db" in message
    return message


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_closed_port_names_db(closed_port: int) -> None:
    pytest.importorskip("psycopg")
    message = expect_config_error(f"postgresql://postgres:s3cret@127.0.0.1:{closed_port}/files")
    assert f"PostgreSQL 127.0.0.1:{closed_port}/files" in message
    assert "refused" in message
    assert "s3cret" not in message


def test_a_bad_url_names_db_without_its_password() -> None:
    pytest.importorskip("psycopg")
    message = expect_config_error("postgresql://me:s3cret@[::1/files")
    assert "s3cret" not in message
    assert "me:***@" in message
    message = expect_config_error("postgresql://me@127.0.0.1:notaport/files")
    assert "notaport" in message


def test_a_missing_database_names_db(postgres_server: PostgresServer) -> None:
    message = expect_config_error(postgres_server.url("no_such_database"))
    assert 'database "no_such_database" does not exist' in message


def test_an_unknown_role_names_db(postgres_server: PostgresServer) -> None:
    url = postgres_server.url().replace("postgres@", "nobody_here@")
    assert 'role "nobody_here" does not exist' in expect_config_error(url)


def test_a_wrong_password_names_db_without_the_password(postgres_server: PostgresServer) -> None:
    good = postgres_server.url().replace("postgres@", f"{PASSWORD_USER}:{PASSWORD}@")
    with PostgresFileTable(good) as table:
        assert PASSWORD not in table.describe()
        assert table.describe() == f"PostgreSQL 127.0.0.1:{postgres_server.port}/postgres"
    bad = good.replace(PASSWORD, "wrong-horse-battery")
    message = expect_config_error(bad)
    assert "password authentication failed" in message
    assert "wrong-horse-battery" not in message


def test_a_server_that_never_answers_times_out() -> None:
    pytest.importorskip("psycopg")
    # A socket that listens and never accepts: the kernel completes the
    # handshake, and libpq waits for an answer that never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        message = expect_config_error(
            f"postgresql://postgres@127.0.0.1:{port}/files", within=4.0, connect_timeout=1.0
        )
    assert "timeout" in message


def test_without_psycopg_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    message = expect_config_error("postgresql://me:s3cret@127.0.0.1/files")
    assert "threaded-pipeline[postgres]" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_connect_timeout_is_checked(timeout: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        PostgresFileTable("postgresql://127.0.0.1:1/x", connect_timeout=timeout)


def test_an_sqlite_path_that_cannot_be_opened_names_db(tmp_path: Path) -> None:
    with pytest.raises(MigrationConfigError, match="check --db") as caught:
        SQLiteFileTable(tmp_path / "missing" / "files.db")
    assert caught.value.__cause__ is None


def test_a_missing_server_skips_the_test_or_fails_it_where_servers_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers import REQUIRE_SERVERS, skip_without_server

    monkeypatch.delenv(REQUIRE_SERVERS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        skip_without_server("no server here")
    monkeypatch.setenv(REQUIRE_SERVERS, "1")
    with pytest.raises(pytest.fail.Exception, match=r"no server here.*required"):
        skip_without_server("no server here")


def _drop_other_connections(url: str) -> int:
    """Have the server end every other session on the test's database; return how many."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        query = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (ended,) = admin.execute(query).fetchone() or (0,)
    return int(ended)


def test_a_postgresql_table_reconnects_when_the_server_drops_its_connection(
    pg_table_url: str,
) -> None:
    table = PostgresFileTable(pg_table_url, owner="a")
    table.create()
    table.add(files(range(1, 4)))
    assert _drop_other_connections(pg_table_url) == 1
    assert ids_of(table.claim(2)) == [1, 2]  # on a new connection: the old one is gone
    table.advance(1, S3_COPIED)
    assert _drop_other_connections(pg_table_url) == 1
    assert table.counts()[S3_COPIED] == 1
    table.close()


def test_a_migration_on_postgresql_survives_the_server_dropping_every_connection_midway(
    tmp_path: Path, pg_table_url: str
) -> None:
    from pipeline.migration import LocalStore, Migration, seed_files
    from pipeline.stages import InMemoryAPI

    files_count = 40
    dropped: list[int] = []

    class DroppingAPI(InMemoryAPI):
        """An API whose 15th PUT first has the server drop the migration's connections."""

        def put(self, file_id: int, record: Any) -> dict[str, Any]:
            with self.lock:  # not InMemoryAPI's own `puts`, which super().put() counts
                self.calls = getattr(self, "calls", 0) + 1
                drop = self.calls == 15
            if drop:
                dropped.append(_drop_other_connections(pg_table_url))
            return super().put(file_id, record)

    table = PostgresFileTable(pg_table_url)
    store = LocalStore(tmp_path / "buckets")
    seed_files(table, store, "source-bucket-proj", count=files_count, size=512, seed=3)
    store.create_bucket("dest-bucket-proj")
    api = DroppingAPI()
    result = Migration(table, store, api).run(timeout=120)
    assert len(dropped) == 1
    assert dropped[0] >= 4  # the dispatcher's, the workers' and the verifier's
    assert result.verification.success == files_count, result.verification.summary()
    final = table.records()
    table.close()
    assert [r.status for r in final] == [VERIFIED] * files_count
    assert sorted(api.records) == [r.id for r in final]
