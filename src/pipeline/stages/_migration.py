"""The file-migration stages: copy to S3, upload metadata, verify.

A dispatcher reads the files to migrate, S3 uploaders copy each one between
buckets (fast), API uploaders register its metadata with a REST API (slow),
and a verifier counts what came through. Each stage does its I/O through a
small callable, simulated by default (a random sleep: 20-50 ms for a copy,
100-200 ms for an upload), so the example runs anywhere; pass your own
callable to do it for real (a boto3 copy, an HTTP POST).

>>> from pipeline import Pipeline
>>> files = [FileRecord(id=i, name=f"file_{i}.pdf") for i in range(3)]
>>> verifier = Verifier(expected=len(files))
>>> migration = (
...     Pipeline[FileRecord]()
...     .add(S3Uploader(delay=(0, 0)), workers=3)
...     .add(APIUploader(delay=(0, 0)), workers=2)
...     .add(verifier)
... )
>>> [f.status for f in migration.run(files).outputs]
['API_UPLOADED', 'API_UPLOADED', 'API_UPLOADED']
>>> print(verifier.report().summary())
=== VERIFICATION REPORT ===
Expected: 3
Processed: 3
Success: 3
Failed: 0
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .._stage import PipelineStage

__all__ = [
    "APIUploader",
    "FileRecord",
    "S3Uploader",
    "VerificationReport",
    "Verifier",
]

READY = "READY"
S3_COPIED = "S3_COPIED"
API_UPLOADED = "API_UPLOADED"


@dataclass
class FileRecord:
    """One file to migrate, enriched by each stage it passes.

    Attributes:
        id: the file's id in the source database.
        name: its file name.
        size: its size in bytes.
        status: ``"READY"``, then ``"S3_COPIED"``, then ``"API_UPLOADED"``.
        dest_bucket: the destination bucket, set by :class:`S3Uploader`.
        dest_key: the destination object key, set by :class:`S3Uploader`.
        history: the stages that handled it, in order.
    """

    id: int
    name: str
    size: int = 0
    status: str = READY
    dest_bucket: str | None = None
    dest_key: str | None = None
    history: list[str] = field(default_factory=list)


def _check_delay(delay: tuple[float, float]) -> tuple[float, float]:
    low, high = delay
    if not 0 <= low <= high:
        raise ValueError(f"'delay' must be (low, high) with 0 <= low <= high, got {delay!r}")
    return (float(low), float(high))


class _SimulatedIO:
    """Sleep a random time in ``[low, high]``: a stand-in for real I/O."""

    def __init__(self, delay: tuple[float, float], seed: int | None) -> None:
        self.low, self.high = delay
        self.random = random.Random(seed)

    def __call__(self, record: FileRecord) -> None:
        time.sleep(self.random.uniform(self.low, self.high))


class S3Uploader(PipelineStage[FileRecord]):
    """Copy each file to the destination bucket under a time-stamped key.

    Args:
        bucket: the destination bucket, set on each record as ``dest_bucket``.
        copy: does the copy (``copy(record, key)``); default: a simulated
            transfer sleeping ``delay`` seconds.
        delay: the simulated transfer's ``(low, high)`` seconds.
        seed: seeds the simulated delays, for reproducible runs.
    """

    def __init__(
        self,
        *,
        bucket: str = "dest-bucket-proj",
        copy: Callable[[FileRecord, str], None] | None = None,
        delay: tuple[float, float] = (0.02, 0.05),
        seed: int | None = None,
        name: str = "S3 Uploader",
    ) -> None:
        super().__init__(name=name)
        self.bucket = bucket
        simulated = _SimulatedIO(_check_delay(delay), seed)
        self.copy = copy or (lambda record, key: simulated(record))

    def process(self, item: FileRecord) -> FileRecord:
        """Copy the file; set ``dest_key`` and status ``S3_COPIED``."""
        stamp = datetime.now(timezone.utc).strftime("%Y/%m/%d/%H/%M/%S")  # noqa: UP017 (3.11)
        key = f"{stamp}/{uuid.uuid4()}"
        self.copy(item, key)
        item.dest_bucket = self.bucket
        item.dest_key = key
        item.status = S3_COPIED
        item.history.append(self.name)
        return item


class APIUploader(PipelineStage[FileRecord]):
    """Upload each file's metadata to the REST API.

    Args:
        upload: does the upload (``upload(record)``); default: simulated, sleeping
            ``delay`` seconds.
        delay: the simulated upload's ``(low, high)`` seconds.
        seed: seeds the simulated delays.
    """

    def __init__(
        self,
        *,
        upload: Callable[[FileRecord], None] | None = None,
        delay: tuple[float, float] = (0.1, 0.2),
        seed: int | None = None,
        name: str = "API Uploader",
    ) -> None:
        super().__init__(name=name)
        self.upload = upload or _SimulatedIO(_check_delay(delay), seed)

    def process(self, item: FileRecord) -> FileRecord:
        """Upload the metadata; set status ``API_UPLOADED``."""
        self.upload(item)
        item.status = API_UPLOADED
        item.history.append(self.name)
        return item


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """The verification report: what reached the verifier, and how.

    >>> print(VerificationReport(expected=3, processed=3, success=2, failed=1).summary())
    === VERIFICATION REPORT ===
    Expected: 3
    Processed: 3
    Success: 2
    Failed: 1
    """

    expected: int
    processed: int
    success: int
    failed: int

    def summary(self) -> str:
        """Return the report as four ``Name: count`` lines under a title."""
        return "\n".join(
            [
                "=== VERIFICATION REPORT ===",
                f"Expected: {self.expected}",
                f"Processed: {self.processed}",
                f"Success: {self.success}",
                f"Failed: {self.failed}",
            ]
        )


class _Tally:
    """The verifier's counts, shared by every worker's copy of the stage."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held to change or read the two counts together
        self.processed = 0
        self.success = 0


class Verifier(PipelineStage[FileRecord]):
    """Count the files that completed the migration; pass them on unchanged.

    The counts are kept in one tally that every worker's copy of the stage
    shares, under a lock, so the report is right with any number of workers.

    Args:
        expected: how many files the migration should see (for the report).
        success_status: the status that counts as a success.
    """

    def __init__(
        self,
        *,
        expected: int = 0,
        success_status: str = API_UPLOADED,
        name: str = "Verifier",
    ) -> None:
        super().__init__(name=name)
        self.expected = expected
        self.success_status = success_status
        self._tally = _Tally()  # created here, so shallow copies share it

    def process(self, item: FileRecord) -> FileRecord:
        """Count ``item`` as processed, and as a success if its status says so."""
        succeeded = item.status == self.success_status
        tally = self._tally
        with tally.lock:
            tally.processed += 1
            tally.success += succeeded
        item.history.append(self.name)
        return item

    @property
    def processed(self) -> int:
        """Files counted so far."""
        return self._tally.processed

    @property
    def success(self) -> int:
        """Files counted so far whose status was ``success_status``."""
        return self._tally.success

    def report(self) -> VerificationReport:
        """Return the counts so far as a :class:`VerificationReport`."""
        tally = self._tally
        with tally.lock:
            processed, success = tally.processed, tally.success
        return VerificationReport(
            expected=self.expected,
            processed=processed,
            success=success,
            failed=processed - success,
        )
