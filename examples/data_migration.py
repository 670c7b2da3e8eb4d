"""The seed's file migration: dispatcher, S3 uploaders, API uploaders, verifier.

    dispatcher (source) -> S3 Uploader x3 -> API Uploader x2 -> Verifier x1

Files are read from a stand-in database (a list), copied "to S3" by three
workers and their metadata "uploaded" by two, then counted by one verifier.
The transfers are simulated with sleeps in the seed's proportions (scaled
down tenfold; ``--real-time`` restores the seed's 0.2-0.5 s and 1-2 s). Shutdown
needs no poison pills counted by hand: each stage's queue ends when its last
producer finishes.

Run it with ``./run_data_example.py`` or ``python examples/data_migration.py``.
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from pipeline import Pipeline
from pipeline.stages import APIUploader, FileRecord, S3Uploader, Verifier

logger = logging.getLogger("pipeline.examples.migration")


def _sleeper(low: float, high: float, seed: int) -> Callable[[], None]:
    rng = random.Random(seed)
    return lambda: time.sleep(rng.uniform(low, high))


def build(files: int, *, scale: float, seed: int) -> tuple[Pipeline[FileRecord], Verifier]:
    """Return the migration pipeline and its verifier."""
    s3_wait = _sleeper(0.2 * scale, 0.5 * scale, seed)
    api_wait = _sleeper(1.0 * scale, 2.0 * scale, seed + 1)

    def copy(record: FileRecord, key: str) -> None:
        worker = threading.current_thread().name
        logger.info("Uploader %s copy file %s S3 -> S3", worker, record.name)
        s3_wait()
        logger.info("Uploader %s stored file [%s] under key=[%s]", worker, record.name, key)

    def upload(record: FileRecord) -> None:
        api_wait()
        logger.info("API Uploader: file [%s] uploaded! %s", record.name, "API_UPLOADED")

    def verified(record: FileRecord) -> None:
        logger.info("Verified: %s - %s", record.name, record.status)

    verifier = Verifier(expected=files)
    pipeline = (
        Pipeline[FileRecord]()
        .add(S3Uploader(copy=copy), workers=3, name="S3-Worker", ordered=False)
        .add(APIUploader(upload=upload), workers=2, name="API-Worker", ordered=False)
        .add(verifier)
        .each(verified, name="report")
    )
    return pipeline, verifier


def dispatch(files: int) -> Sequence[FileRecord]:
    """Return the files to migrate (the seed's stand-in database)."""
    return [FileRecord(id=i, name=f"file_{100 + i}.pdf", size=1024 * i) for i in range(files)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the migration; print the verifier's and the pipeline's reports."""
    parser = argparse.ArgumentParser(
        prog="run_data_example.py", description=__doc__.split("\n", maxsplit=1)[0]
    )
    parser.add_argument("--files", type=int, default=8, help="how many files (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated delays")
    parser.add_argument(
        "--real-time", action="store_true", help="the seed's delays (0.2-0.5 s and 1-2 s)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-file log lines")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="[%(levelname)s] %(message)s"
    )
    pipeline, verifier = build(args.files, scale=1.0 if args.real_time else 0.1, seed=args.seed)
    with pipeline:
        result = pipeline.run(dispatch(args.files))
    print()
    print(verifier.report().summary())
    print()
    print(result.report.table())
    print("\n=== Pipeline complete ===")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
