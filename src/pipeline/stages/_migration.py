"""The file-migration stages: copy each file between buckets, register it, verify it.

A dispatcher claims the unfinished rows of the ``files`` table
(:func:`claim_files`), S3 uploaders copy each file to the destination bucket
under a key chosen once (fast), API uploaders register its metadata with the
REST API (slow), and a verifier checks both and keeps the report. Each stage
writes its step to the table before it passes the file on, so a rerun after
a crash, Ctrl-C or ``kill -9`` does only what is left: a step already done
is skipped, and a step done again (the crash came between the work and the
write) lands on the same destination key and the same API record.

A file that cannot be migrated (its source object missing, a checksum that
does not match, a key that would leave its bucket, an API that keeps
failing) raises in the stage. Run the stages with ``on_error="skip"`` and
pass the verifier's :attr:`Verifier.failures` observer: each such file
becomes a dead letter in the run's report and a ``FAILED`` row with the
reason, and the run goes on. A file another migrator took over (its lease
ran out: :class:`~pipeline.migration.LeaseLost`) is dropped quietly: it is
that migrator's now. :class:`~pipeline.migration.Migration` wires all of it.

The two uploaders may run on a Dask cluster (``executor=`` a
``distributed.Client``): they pickle with their table, stores and API
client as configuration, and each cluster worker process opens its own
connections in ``on_start``, lent one per thread to the tasks that share
that process's copy. The owner travels with the table, so the cluster's
steps are fenced by this migrator's claims, and a file's ``leased_at`` is
on the database's clock, which every process reads alike. The dispatcher
(a generator) and the verifier (it keeps the report) stay in the
migrator's process.

The module is past 400 lines because it holds the dispatcher, the three
stages and their report, which share the step-writing discipline above,
and the lending of per-thread clients (``_Handles``) they all use; the next
stage added, or the report growing, is the cue to give each stage a module
of its own, ``_Handles`` the first to move.

>>> import tempfile
>>> from pipeline import Pipeline
>>> from pipeline.migration import LocalStore, SQLiteFileTable, seed_files
>>> store, table = LocalStore(tempfile.mkdtemp()), SQLiteFileTable(":memory:")
>>> _ = seed_files(table, store, "src-bucket", count=3, size=64)
>>> api = InMemoryAPI()
>>> verifier = Verifier(store, api, table, expected=3)
>>> migration = (
...     Pipeline[FileRecord]()
...     .add(S3Uploader(store, table, dest_bucket="dest-bucket"), workers=3, on_error="skip")
...     .add(APIUploader(api, table), workers=2, on_error="skip")
...     .add(verifier, on_error="skip")
... )
>>> outputs = migration.run(claim_files(table), observers=[verifier.failures]).outputs
>>> sorted(f.status for f in outputs)
['VERIFIED', 'VERIFIED', 'VERIFIED']
>>> print(verifier.report().summary())
=== VERIFICATION REPORT ===
Expected: 3
Processed: 3
Success: 3
Failed: 0
>>> table.close()
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, Protocol, TypeVar

from .._exceptions import _short_str
from .._observe import Observer, WorkerInfo
from .._report import DeadLetter
from .._stage import PipelineStage
from ..migration._errors import ChecksumMismatch, LeaseLost, MigrationError, ObjectMissing
from ..migration._files import (
    API_UPLOADED,
    FAILED,
    S3_COPIED,
    VERIFIED,
    FileRecord,
    FileTable,
)
from ..migration._store import ObjectStore, check_key

__all__ = [
    "APIUploader",
    "Failure",
    "FileRecord",
    "InMemoryAPI",
    "MetadataAPI",
    "S3Uploader",
    "VerificationReport",
    "Verifier",
    "claim_files",
    "dest_key_now",
]

logger = logging.getLogger("pipeline.migration")

CLAIM_BATCH = 8
"""Rows the dispatcher claims at a time: few, so that migrators sharing a table share the work."""


class MetadataAPI(Protocol):
    """What the API stages need of a metadata API client (``MetadataClient`` is one)."""

    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        """Create or replace the record of ``file_id``; return it as stored."""

    def get(self, file_id: int) -> dict[str, Any] | None:
        """Return the record of ``file_id``, or ``None``."""

    def for_worker(self) -> MetadataAPI:
        """The client one worker uses (its own connection)."""

    def close(self) -> None:
        """Close the client's connection."""


class InMemoryAPI:
    """A metadata API in a dict, for examples and tests that need no HTTP server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the workers' puts and gets, one at a time
        self.records: dict[int, dict[str, Any]] = {}
        self.puts = 0

    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        with self.lock:
            self.puts += 1
            stored = self.records[file_id] = {**record, "id": file_id}
            return dict(stored)

    def get(self, file_id: int) -> dict[str, Any] | None:
        with self.lock:
            found = self.records.get(file_id)
            return None if found is None else dict(found)

    def for_worker(self) -> InMemoryAPI:
        return self

    def close(self) -> None:
        pass


def claim_files(
    table: FileTable,
    *,
    batch: int = CLAIM_BATCH,
    wait: bool = True,
    stop: threading.Event | None = None,
) -> Iterator[FileRecord]:
    """The dispatcher: claim the table's unfinished rows, ``batch`` at a time, and yield them.

    Claims are made as the pipeline asks for more, so its bounded queues
    bound how many rows one migrator holds that it has not started. When
    nothing is left to claim but other migrators still hold unfinished rows,
    it waits (``wait=True``) until they finish them or their leases run
    out, and then claims what a dead migrator left: the last migrator
    standing finishes the table. The generator uses its own connection,
    closed when it ends; setting ``stop`` ends it at its next claim or wait.
    """
    claims = table.for_worker()
    stop = stop or threading.Event()
    announced = 0
    try:
        while not stop.is_set():
            rows = claims.claim(batch)
            for record in rows:
                logger.info("Dispatcher: dispatching file %s", record.name)
                yield record
            if rows:
                continue
            held, first_lease_ends = claims.held_by_others() if wait else (0, 0.0)
            if not held:
                return
            if held != announced:
                logger.info(
                    "Dispatcher: waiting for %d files other migrators hold"
                    " (they finish them, or the first lease ends in %.1f s)",
                    held,
                    first_lease_ends,
                )
                announced = held
            stop.wait(min(max(first_lease_ends, _SHORTEST_WAIT), _LONGEST_WAIT))
    finally:
        _close_own(claims, table)


# How long the dispatcher waits between looks at rows other migrators hold:
# at least a moment (a lease just ended: another may be claiming it), at most
# half a second (they may finish the rows long before their leases end).
_SHORTEST_WAIT = 0.05
_LONGEST_WAIT = 0.5


def dest_key_now() -> str:
    """A new destination key: ``YYYY/MM/DD/HH/MM/SS/<uuid4>``, the time in UTC."""
    stamp = datetime.now(timezone.utc).strftime("%Y/%m/%d/%H/%M/%S")  # noqa: UP017 (3.11)
    return f"{stamp}/{uuid.uuid4()}"


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


def _close_own(own: _Closable | None, shared: _Closable | None) -> None:
    """Close a worker's own client (its ``for_worker()``), never the one the stage was given."""
    if own is not None and own is not shared:
        own.close()


class _Handles(Generic[_C]):
    """A stage copy's own clients of one kind (``for_worker()`` copies), lent one per thread.

    A table or an API client is for one thread at a time. A thread stage's
    copy is used by one thread, so it needs one; but on a Dask cluster the
    copy a worker process unpickled is used by all of that process's task
    threads at once (``on_start`` ran once there). :meth:`lend` gives a
    thread a client no other thread holds, a free one or else a new one,
    and takes it back after. Made in ``on_start``, which opens the first
    (so that a setup that does not work fails there); :meth:`close`, in
    ``on_stop``, closes every one made, never the shared one.
    """

    def __init__(self, shared: _C, make: Callable[[], _C]) -> None:
        self._shared = shared
        self._make = make
        self._lock = threading.Lock()  # guards _idle and _made
        first = make()
        self._idle = [first]  # made and not lent
        self._made = [first]

    @contextmanager
    def lend(self) -> Iterator[_C]:
        """A client for this thread alone, until the block ends."""
        with self._lock:
            own = self._idle.pop() if self._idle else None
        if own is None:
            own = self._make()  # a connection: made outside the lock
            with self._lock:
                self._made.append(own)
        try:
            yield own
        finally:
            with self._lock:
                self._idle.append(own)

    def close(self) -> None:
        """Close every client made (each lent one must be back)."""
        with self._lock:
            made, self._made, self._idle = self._made, [], []
        for own in made:
            _close_own(own, self._shared)


def _lent(handles: _Handles[_C] | None, shared: _C) -> AbstractContextManager[_C]:
    # A client for this thread: lent by the stage copy's handles once it
    # started, else (a stage used outside a run) the shared one.
    return nullcontext(shared) if handles is None else handles.lend()


class _TableStage(PipelineStage[FileRecord]):
    """A migration stage: per-worker table connections, and handing over a lost file.

    A stage pickles (to a worker process, to a Dask cluster) with its
    table as configuration; its connections are made in ``on_start``.
    """

    def __init__(self, table: FileTable, *, name: str) -> None:
        super().__init__(name=name)
        self.table = table
        self._tables: _Handles[FileTable] | None = None  # from on_start to on_stop

    def on_start(self) -> None:
        self._tables = _Handles(self.table, self.table.for_worker)

    def on_stop(self) -> None:
        tables, self._tables = self._tables, None
        if tables is not None:
            tables.close()

    def _table(self) -> AbstractContextManager[FileTable]:
        """The table connection of this thread, for one item."""
        return _lent(self._tables, self.table)

    def _handed_over(self, record: FileRecord, error: LeaseLost) -> Iterator[FileRecord]:
        logger.warning(
            "%s: file %s was taken over by another migrator (%s)", self.name, record.name, error
        )
        return iter(())


class S3Uploader(_TableStage):
    """Copy each file from its source bucket to ``dest_bucket``, under a key chosen once.

    The key (``YYYY/MM/DD/HH/MM/SS/<uuid>``) is written to the file's row
    before the copy, and a rerun copies to the key the row has. The copy is
    server-side when source and destination are one store (S3's
    ``CopyObject``), and its sha256 must be the row's. A row already past
    this step is passed on as it is.

    Args:
        store: where the source bucket is (one client per worker, made in ``on_start``).
        table: the files table, where each step is written.
        dest_bucket: the destination bucket.
        dest_store: where ``dest_bucket`` is, if not in ``store`` (the copy
            then reads and writes the bytes).
    """

    def __init__(
        self,
        store: ObjectStore,
        table: FileTable,
        *,
        dest_bucket: str = "dest-bucket-proj",
        dest_store: ObjectStore | None = None,
        name: str = "S3 Uploader",
    ) -> None:
        super().__init__(table, name=name)
        self.store = store
        self.dest_store = dest_store
        self.dest_bucket = dest_bucket
        self._sources: _Handles[ObjectStore] | None = None  # from on_start to on_stop
        self._dests: _Handles[ObjectStore] | None = None

    def on_start(self) -> None:
        super().on_start()
        try:
            self._sources = _Handles(self.store, self.store.for_worker)
            if self.dest_store is not None:
                self._dests = _Handles(self.dest_store, self.dest_store.for_worker)
        except BaseException:
            self.on_stop()  # not called for an on_start that raised: close what it opened
            raise

    def on_stop(self) -> None:
        sources, dests, self._sources, self._dests = self._sources, self._dests, None, None
        try:
            for handles in (sources, dests):
                if handles is not None:
                    handles.close()
        finally:
            super().on_stop()

    def process(self, item: FileRecord) -> Iterator[FileRecord]:
        """Copy the file unless its row says it was; mark it ``S3_COPIED``."""
        if item.status in (FAILED, VERIFIED):
            return
        if item.status not in (S3_COPIED, API_UPLOADED):
            try:
                self._copy(item)
            except LeaseLost as lost:
                yield from self._handed_over(item, lost)
                return
        item.dest_bucket = self.dest_bucket
        item.history.append(self.name)
        yield item

    def _copy(self, item: FileRecord) -> None:
        dest = nullcontext(None) if self.dest_store is None else _lent(self._dests, self.dest_store)
        with self._table() as table, _lent(self._sources, self.store) as source, dest as target:
            self._copy_with(item, table, source, target)

    def _copy_with(
        self, item: FileRecord, table: FileTable, source: ObjectStore, target: ObjectStore | None
    ) -> None:
        worker = threading.current_thread().name
        check_key(item.source_key)
        key = check_key(table.assign_dest_key(item.id, item.dest_key or dest_key_now()))
        item.dest_key = key
        logger.info("Uploader %s copy file %s S3 -> S3", worker, item.name)
        if target is None:
            info = source.copy(
                item.source_bucket, item.source_key, self.dest_bucket, key, size=item.size
            )
        else:
            data = source.get(item.source_bucket, item.source_key)
            info = target.put(self.dest_bucket, key, data)
        if info.sha256 != item.checksum or info.size != item.size:
            message = (
                f"copy of {item.name} has sha256 {info.sha256[:12]}... and {info.size} bytes;"
                f" the database says {item.checksum[:12]}... and {item.size}"
            )
            raise ChecksumMismatch(message)
        # On the database's clock: the API stage that reads it may run in
        # another process or on another machine (see FileRecord.leased_at).
        leased_at = table.clock()
        table.advance(item.id, S3_COPIED)  # which renews the lease too
        item.status, item.leased_at = S3_COPIED, leased_at
        logger.info(
            "Uploader %s stored file [%s] in S3 bucket=[%s] and key=[%s]",
            worker,
            item.name,
            self.dest_bucket,
            key,
        )


def metadata_of(item: FileRecord) -> dict[str, object]:
    """The record the API keeps for a file."""
    return {
        "name": item.name,
        "size": item.size,
        "checksum": item.checksum,
        "source_bucket": item.source_bucket,
        "source_key": item.source_key,
        "dest_bucket": item.dest_bucket or "",
        "dest_key": item.dest_key or "",
    }


class _APIStage(_TableStage):
    def __init__(self, api: MetadataAPI, table: FileTable, *, name: str) -> None:
        super().__init__(table, name=name)
        self.api = api
        self._apis: _Handles[MetadataAPI] | None = None  # from on_start to on_stop

    def on_start(self) -> None:
        super().on_start()
        try:
            self._apis = _Handles(self.api, self.api.for_worker)
        except BaseException:
            self.on_stop()  # not called for an on_start that raised: close what it opened
            raise

    def on_stop(self) -> None:
        apis, self._apis = self._apis, None
        try:
            if apis is not None:
                apis.close()
        finally:
            super().on_stop()

    def _api(self) -> AbstractContextManager[MetadataAPI]:
        """The API client of this thread, for one item."""
        return _lent(self._apis, self.api)


class APIUploader(_APIStage):
    """Register each copied file's metadata with the REST API (an idempotent ``PUT``).

    A row already ``API_UPLOADED`` is passed on as it is. Retry the API's
    passing failures with the stage's ``retry=``
    (``Retry(on=ApiUnavailable)``); the rest fail the file.

    Args:
        api: the metadata API client (one per worker, made in ``on_start``).
        table: the files table.
    """

    def __init__(self, api: MetadataAPI, table: FileTable, *, name: str = "API Uploader") -> None:
        super().__init__(api, table, name=name)

    def process(self, item: FileRecord) -> Iterator[FileRecord]:
        """Upload the metadata unless the row says it was; mark it ``API_UPLOADED``."""
        if item.status == S3_COPIED:
            try:
                with self._table() as table, self._api() as api:
                    # Still ours? Else another migrator registers it too. A
                    # lease set less than half its length ago surely is: no
                    # statement. Both times are the database's clock, so this
                    # holds with the copy made in another process or machine.
                    if table.clock() - item.leased_at >= table.lease_seconds / 2:
                        table.renew(item.id)
                    api.put(item.id, metadata_of(item))
                    table.advance(item.id, API_UPLOADED)
            except LeaseLost as lost:
                yield from self._handed_over(item, lost)
                return
            item.status = API_UPLOADED
            logger.info("API Uploader: file [%s] uploaded ! %s", item.name, API_UPLOADED)
        elif item.status != API_UPLOADED:
            raise MigrationError(f"file {item.name} reached the API stage as {item.status}")
        item.history.append(self.name)
        yield item


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that failed: its id and name, the stage, and why."""

    id: int
    name: str
    stage: str
    reason: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """The verification report: how many files were expected, came through, and how.

    >>> failure = Failure(7, "b.pdf", "Verifier", "no object")
    >>> print(VerificationReport(3, 3, 2, 1, (failure,)).summary())
    === VERIFICATION REPORT ===
    Expected: 3
    Processed: 3
    Success: 2
    Failed: 1
      b.pdf (id 7) at Verifier: no object
    """

    expected: int
    processed: int
    success: int
    failed: int
    failures: tuple[Failure, ...] = ()

    def summary(self) -> str:
        """The report as ``Name: count`` lines under a title, then one line per failure."""
        lines = [
            "=== VERIFICATION REPORT ===",
            f"Expected: {self.expected}",
            f"Processed: {self.processed}",
            f"Success: {self.success}",
            f"Failed: {self.failed}",
        ]
        lines += [f"  {f.name} (id {f.id}) at {f.stage}: {f.reason}" for f in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "expected": self.expected,
            "processed": self.processed,
            "success": self.success,
            "failed": self.failed,
            "failures": [
                {"id": f.id, "name": f.name, "stage": f.stage, "reason": f.reason}
                for f in self.failures
            ],
        }


class _Tally:
    """The verifier's counts, shared by every worker's copy and by its failures observer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held to change or read the counts together
        self.success = 0
        self.failures: list[Failure] = []


class _MarkFailed(Observer):
    """Marks each dead-lettered file ``FAILED`` with the reason, and counts it as failed."""

    def __init__(self, table: FileTable, tally: _Tally) -> None:
        self.table = table
        self.tally = tally
        self.local = threading.local()  # the table connection of each worker thread

    def item_dead_lettered(self, worker: WorkerInfo, letter: DeadLetter) -> None:
        record = letter.item
        if not isinstance(record, FileRecord):
            return
        reason = _short_str(letter.exception)
        try:
            table = getattr(self.local, "table", None)
            if table is None:
                table = self.local.table = self.table.for_worker()
            table.advance(record.id, FAILED, error=reason)
        except LeaseLost:
            return  # taken over: the file is another migrator's to finish or fail
        record.status, record.last_error = FAILED, reason
        logger.error("Failed: %s at %s: %s", record.name, letter.stage, reason)
        with self.tally.lock:
            self.tally.failures.append(Failure(record.id, record.name, letter.stage, reason))

    def worker_stopped(self, worker: WorkerInfo) -> None:
        table = getattr(self.local, "table", None)
        if table is not None and table is not self.table:
            table.close()
        self.local.table = None


class Verifier(_APIStage):
    """Check each file at its destination and in the API; mark it ``VERIFIED``; keep the report.

    The destination object must exist with the row's sha256 and size, and
    the API must hold the file's record with the same key and checksum;
    otherwise the file fails (:class:`~pipeline.migration.ChecksumMismatch`,
    :class:`~pipeline.migration.ObjectMissing`, or
    :class:`~pipeline.migration.MigrationError`). The counts are shared by
    every worker's copy, under a lock, so the report is right with any
    number of workers; pass :attr:`failures` to the run's observers so the
    files that failed in any stage are marked and counted.

    Args:
        store: where the destination bucket is.
        api: the metadata API client.
        table: the files table.
        expected: how many files the migration should see (for the report).
    """

    def __init__(
        self,
        store: ObjectStore,
        api: MetadataAPI,
        table: FileTable,
        *,
        expected: int = 0,
        name: str = "Verifier",
    ) -> None:
        super().__init__(api, table, name=name)
        self.store = store
        self.expected = expected
        self._stores: _Handles[ObjectStore] | None = None  # from on_start to on_stop
        self._tally = _Tally()  # created here, so the workers' shallow copies share it
        self.failures: Observer = _MarkFailed(table, self._tally)
        """The observer that marks and counts the files failed in any stage."""

    def on_start(self) -> None:
        super().on_start()
        try:
            self._stores = _Handles(self.store, self.store.for_worker)
        except BaseException:
            self.on_stop()  # not called for an on_start that raised: close what it opened
            raise

    def on_stop(self) -> None:
        stores, self._stores = self._stores, None
        try:
            if stores is not None:
                stores.close()
        finally:
            super().on_stop()

    def process(self, item: FileRecord) -> Iterator[FileRecord]:
        """Verify the file; mark it ``VERIFIED``, or raise why it is not."""
        bucket, key = item.dest_bucket or "", item.dest_key or ""
        with _lent(self._stores, self.store) as store:
            found = store.head(bucket, check_key(key))
        if found is None:
            raise ObjectMissing(f"{item.name}: no object {key!r} in bucket {bucket!r}")
        if found.sha256 != item.checksum or found.size != item.size:
            raise ChecksumMismatch(f"{item.name}: the object at {key!r} is not the file's bytes")
        with self._api() as api:
            registered = api.get(item.id)
        if registered is None:
            raise MigrationError(f"{item.name}: the API has no record of file {item.id}")
        if registered.get("dest_key") != key or registered.get("checksum") != item.checksum:
            raise MigrationError(f"{item.name}: the API's record does not match the copy")
        try:
            with self._table() as table:
                table.advance(item.id, VERIFIED)
        except LeaseLost as lost:
            yield from self._handed_over(item, lost)
            return
        item.status = VERIFIED
        item.history.append(self.name)
        with self._tally.lock:
            self._tally.success += 1
        logger.info("Verified: %s - %s", item.name, item.status)
        yield item

    @property
    def success(self) -> int:
        """Files verified so far."""
        return self._tally.success

    def report(self) -> VerificationReport:
        """The counts so far, and the files that failed."""
        tally = self._tally
        with tally.lock:
            success, failures = tally.success, tuple(sorted(tally.failures, key=lambda f: f.id))
        return VerificationReport(
            expected=self.expected,
            processed=success + len(failures),
            success=success,
            failed=len(failures),
            failures=failures,
        )
