"""The migration, wired: seed a table, check the setup, run the four stages, report.

:class:`Migration` is what ``python -m pipeline data`` runs, and the way to
run the file migration from code::

    from pipeline.migration import LocalStore, Migration, open_file_table

    table = open_file_table("files.db")
    store = LocalStore("buckets")
    migration = Migration(table, store, api, dest_bucket="dest-bucket-proj")
    migration.check()                  # MigrationConfigError names what to fix
    result = migration.run()
    print(result.verification.summary())

The stages themselves are in :mod:`pipeline.stages` (:class:`S3Uploader`,
:class:`APIUploader`, :class:`Verifier`, and the dispatcher
:func:`claim_files`).

``executor=`` is where the two uploaders run: threads by default, or a
Dask cluster (a ``distributed.Client``, ``"dask://HOST:PORT"``), where each
of their ``s3_workers`` and ``api_workers`` is a batch in flight. The
dispatcher and the verifier stay in this process, on threads. The parts
then travel to the cluster's workers as their configuration, and must be
reachable from there: on one machine anything goes (SQLite included, see
:class:`~pipeline.migration.SQLiteFileTable`); with workers on other
machines :meth:`Migration.check` refuses an SQLite table (use PostgreSQL)
and any part at a loopback address (``127.0.0.1``, ``localhost``), and
warns that a folder store must be one the machines share.
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._policy import Retry
from ._cluster import check_reachable
from ._errors import ApiUnavailable
from ._files import API_UPLOADED, READY, S3_COPIED, UNFINISHED, FileRecord, FileTable
from ._store import ObjectStore, check_bucket_name

if TYPE_CHECKING:
    from .._observe import Observer
    from .._pipeline import Pipeline
    from .._report import PipelineReport
    from ..stages._migration import MetadataAPI, VerificationReport

__all__ = ["Migration", "MigrationResult", "PlannedStep", "seed_files"]

SOURCE_BUCKET = "source-bucket-proj"
DEST_BUCKET = "dest-bucket-proj"


def seed_files(
    table: FileTable,
    store: ObjectStore,
    bucket: str = SOURCE_BUCKET,
    *,
    count: int,
    size: int = 64 * 1024,
    seed: int | None = None,
    first_id: int = 100,
) -> list[FileRecord]:
    """Put ``count`` files of random bytes in ``bucket`` and a ``READY`` row for each.

    Files are named ``file_<id>.pdf`` from ``first_id`` on (``file_100.pdf``,
    ...), their sizes drawn up to ``size`` bytes. Creates the table and the
    bucket if needed; returns the records added.
    """
    rng = random.Random(seed)
    table.create()
    store.create_bucket(bucket)
    records = []
    for file_id in range(first_id, first_id + count):
        data = rng.randbytes(rng.randint(max(1, size // 2), max(1, size)))
        name = f"file_{file_id}.pdf"
        info = store.put(bucket, name, data)
        records.append(FileRecord(file_id, name, info.size, info.sha256, bucket, name))
    table.add(records)
    return records


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What a migration run did: the pipeline's report, the verification, the table's counts."""

    report: PipelineReport
    verification: VerificationReport
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "verification": self.verification.to_dict(),
            "table": self.counts,
            "pipeline": self.report.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """What a run would do with one file (``--dry-run``)."""

    id: int
    name: str
    status: str
    steps: tuple[str, ...]


_STEPS = {
    READY: ("copy", "register", "verify"),
    S3_COPIED: ("register", "verify"),
    API_UPLOADED: ("verify",),
}


class Migration:
    """The file migration: dispatcher, S3 uploaders, API uploaders, verifier, over real parts.

    Args:
        table: the files table (:func:`~pipeline.migration.open_file_table`).
        store: where the source buckets are (and the destination, unless ``dest_store``).
        api: the metadata API client (``MetadataClient``).
        dest_bucket: the destination bucket.
        dest_store: the destination's store, if it is another one.
        s3_workers: copies at once (three S3 uploaders).
        api_workers: API requests at once (two API uploaders).
        api_retry: how API answers worth retrying are retried (503, timeouts).
        executor: where the S3 and API uploaders run (any ``executor=`` of
            ``Pipeline.add``): ``"thread"``, or a Dask cluster, where
            ``s3_workers`` and ``api_workers`` are batches in flight.
    """

    def __init__(
        self,
        table: FileTable,
        store: ObjectStore,
        api: MetadataAPI,
        *,
        dest_bucket: str = DEST_BUCKET,
        dest_store: ObjectStore | None = None,
        s3_workers: int = 3,
        api_workers: int = 2,
        api_retry: Retry | None = None,
        executor: Any = "thread",
    ) -> None:
        self.table = table
        self.store = store
        self.api = api
        self.dest_bucket = check_bucket_name(dest_bucket)
        self.dest_store = dest_store
        self.s3_workers = s3_workers
        self.api_workers = api_workers
        self.executor = executor
        self.verifier: Any = None  # the last run's Verifier
        self.api_retry = api_retry or Retry(
            attempts=5, backoff=0.05, max_delay=2.0, on=(ApiUnavailable,)
        )

    def check(self) -> None:
        """Fail before any work if the setup cannot work.

        Raises:
            MigrationConfigError: what to fix (the database, a bucket, the API or its
                token, or a part the Dask cluster's workers cannot reach).
        """
        self.check_cluster()
        self.table.create()
        (self.dest_store or self.store).check_bucket(self.dest_bucket)
        buckets = {r.source_bucket for r in self.unfinished()}
        for bucket in sorted(buckets):
            self.store.check_bucket(bucket)
        check = getattr(self.api, "check", None)
        if callable(check):
            check()

    def check_cluster(self) -> None:
        """Refuse the parts that are this machine's if the uploaders' cluster has others.

        Part of :meth:`check`; on its own, it writes nothing, so it can come
        before a table is created or seeded. Nothing to do without a Dask
        ``executor``; see :func:`~pipeline.migration._cluster.check_reachable`.

        Raises:
            MigrationConfigError: some worker is on another machine, and the
                table is SQLite, or a part is at a loopback address.
        """
        check_reachable(self.executor, self.table, self.store, self.dest_store, self.api)

    def unfinished(self) -> list[FileRecord]:
        """The rows a run still has work for."""
        return [r for status in UNFINISHED for r in self.table.records(status)]

    def plan(self) -> list[PlannedStep]:
        """What a run would do, file by file, changing nothing (``--dry-run``)."""
        rows = sorted(self.unfinished(), key=lambda r: r.id)
        return [PlannedStep(r.id, r.name, r.status, _STEPS[r.status]) for r in rows]

    def pipeline(self, expected: int = 0) -> tuple[Pipeline[FileRecord], Any]:
        """The four stages wired, and the verifier (whose ``failures`` the run must observe)."""
        from .._pipeline import Pipeline  # noqa: PLC0415 (pipeline.stages imports this package)
        from ..stages._migration import APIUploader, S3Uploader, Verifier  # noqa: PLC0415

        dest = self.dest_store or self.store
        verifier = Verifier(dest, self.api, self.table, expected=expected)
        copy = S3Uploader(
            self.store, self.table, dest_bucket=self.dest_bucket, dest_store=self.dest_store
        )
        # Short queues: a migrator holds claims only on the files it has in
        # hand or about to be, so the others sharing the table get the rest.
        pipeline = (
            Pipeline[FileRecord]()
            .add(
                copy,
                workers=self.s3_workers,
                name="S3-Worker",
                ordered=False,
                on_error="skip",
                maxsize=2 * self.s3_workers,
                executor=self.executor,
            )
            .add(
                APIUploader(self.api, self.table),
                workers=self.api_workers,
                name="API-Worker",
                ordered=False,
                on_error="skip",
                retry=self.api_retry,
                maxsize=2 * self.api_workers,
                executor=self.executor,
            )
            .add(verifier, name="Verifier", on_error="skip", maxsize=8)
        )
        return pipeline, verifier

    def run(
        self,
        *,
        observers: Iterable[Observer] = (),
        trace: str | os.PathLike[str] | None = None,
        progress: bool = False,
        timeout: float | None = None,
    ) -> MigrationResult:
        """Migrate every unfinished file; return the reports.

        Raises what ``Pipeline.run`` raises (Ctrl-C, a timeout), with the
        claims this run still held given back first, so that a rerun or
        another migrator takes those files at once.
        """
        from ..stages._migration import claim_files  # noqa: PLC0415

        expected = len(self.unfinished())
        pipeline, verifier = self.pipeline(expected)
        self.verifier = verifier  # its report, also when the run raised
        stop_claiming = threading.Event()
        try:
            with pipeline:
                run = pipeline.run(
                    claim_files(self.table, stop=stop_claiming),
                    observers=[verifier.failures, *observers],
                    trace=trace,
                    progress=progress,
                    timeout=timeout,
                )
        finally:
            stop_claiming.set()  # a dispatcher still running claims nothing after the release
            self.table.release()
        return MigrationResult(run.report, verifier.report(), self.table.counts())


def count_statuses(records: Iterable[FileRecord]) -> Counter[str]:
    """How many of ``records`` have each status."""
    return Counter(r.status for r in records)
