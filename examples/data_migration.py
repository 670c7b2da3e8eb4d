"""The file migration: dispatcher, S3 uploaders, API uploaders, verifier.

    dispatcher (source) -> S3 Uploader x3 -> API Uploader x2 -> Verifier x1

Files are read from a stand-in database (a list), copied "to S3" by three
workers and their metadata "uploaded" by two, then counted by one verifier.
The transfers are simulated with sleeps: 20-50 ms per copy and 100-200 ms
per upload (``--real-time``: 0.2-0.5 s and 1-2 s, as a real migration of
this shape takes). Shutdown needs no poison pills counted by hand: each
stage's queue ends when its last producer finishes.

Run it with ``./run_data_example.py`` or ``python examples/data_migration.py``.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python examples/x.py): use the checkout's library
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import Pipeline, PipelineReport
from pipeline._cli import (
    add_observing_options,
    observers_from,
    parse_args,
    run_reporting,
    whole_number,
)
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
    """Return the files to migrate (a stand-in for the database)."""
    return [FileRecord(id=i, name=f"file_{100 + i}.pdf", size=1024 * i) for i in range(files)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the migration; print the verifier's and the pipeline's reports; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="run_data_example.py",
        description=(__doc__ or "").split("\n", maxsplit=1)[0],
        epilog="Exit codes: 0 success, 1 pipeline error, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--files", type=whole_number(0), default=8, help="how many files (default 8)"
    )
    parser.add_argument(
        "--seed", type=whole_number(0), default=7, help="seed of the simulated delays"
    )
    parser.add_argument(
        "--real-time", action="store_true", help="real-world delays (0.2-0.5 s and 1-2 s)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-file log lines")
    add_observing_options(parser)
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="[%(levelname)s] %(message)s"
    )
    pipeline, verifier = build(args.files, scale=1.0 if args.real_time else 0.1, seed=args.seed)

    def migrate() -> PipelineReport:
        with pipeline:
            watching = {"trace": args.trace, "progress": args.progress}
            files = dispatch(args.files)
            return pipeline.run(files, observers=observers_from(args), **watching).report

    def show(report: PipelineReport | None) -> None:
        print()
        print(verifier.report().summary())
        if report is not None:
            print()
            print(report.table())
            ending = "complete" if report.status == "completed" else report.status
            print(f"\n=== Pipeline {ending} ===")

    return run_reporting(migrate, show)


if __name__ == "__main__":
    raise SystemExit(main())
