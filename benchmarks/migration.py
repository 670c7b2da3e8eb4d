"""The file migration: the copy stage against ``rclone copy``, the makespan against its bound.

Two scenarios, the floors of the file-migration issue:

``s3_copy``
    1,000 files of 64 KB in a bucket of moto's S3 server on 127.0.0.1 (a
    real HTTP endpoint), copied to a fresh bucket each round: the library's
    copy stage (the dispatcher claiming rows of a SQLite files table, then
    ``S3Uploader`` with 4 workers: it records each file's key, copies it on
    the server, checks its sha256 and marks it ``S3_COPIED``) against
    ``rclone copy --checksum --transfers 4`` (Debian's ``rclone``; without
    it the floor row is skipped with a note, and ours is shown alone). Floor:
    0.8x rclone's files per second. rclone's time includes its start, about
    a tenth of a second; ours includes reading and writing the table.
``migration``
    The whole migration tool (``python -m pipeline data``, in a subprocess)
    on its embedded parts with ``--api-latency 0.05`` and 4 API workers:
    the run's makespan (the report's elapsed time, after seeding) against
    the bound the slow API stage sets, files x latency / workers. Floor: at
    most 1.1x the bound.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

from pipeline import Pipeline
from pipeline.migration import S3_COPIED, FileRecord, SQLiteFileTable
from pipeline.stages import S3Uploader, claim_files

from .harness import ROOT, Config, Row, ScenarioResult, compare, interleave, median, paired_ratio

__all__ = ["migration", "s3_copy"]

TRANSFERS = 4
"""Copies at once, for both: rclone's ``--transfers`` and our stage's workers."""

SOURCE = "bench-source"


@contextmanager
def _moto() -> Iterator[str | None]:
    """moto's S3 server on 127.0.0.1 for the scenario (its URL), or ``None`` without one."""
    # The tests' fixture module starts it; the suite runs from the repository
    # with the dev extras, so both are there.
    from tests.s3server import MotoServer, find_moto_server

    command = find_moto_server()
    if command is None:
        yield None
        return
    server = MotoServer(command)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _rclone_env(endpoint: str) -> dict[str, str]:
    # A remote named "bench" from the environment alone: no config file read.
    # rclone's AWS SDK refuses to start when AWS_CA_BUNDLE names a bundle
    # it cannot use for plain HTTP, and this machine sets one.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(
        RCLONE_CONFIG=os.devnull,
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENDPOINT=endpoint,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="testing",
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="testing",
        RCLONE_CONFIG_BENCH_REGION="us-east-1",
    )
    return env


class _CopyRounds:
    """Each round of each variant copies the source into a bucket of its own."""

    def __init__(self, store: Any, workdir: Path, template: Path, files: int) -> None:
        import boto3  # type: ignore[import-untyped]  # (there when S3Store is)

        self.store = store
        self.lister = boto3.client(
            "s3",
            endpoint_url=store.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.workdir = workdir
        self.template = template
        self.files = files
        self.rounds = 0

    def bucket(self) -> str:
        self.rounds += 1
        name = f"bench-dest-{self.rounds}"
        self.store.create_bucket(name)
        return name

    def ours(self) -> float:
        bucket = self.bucket()
        path = self.workdir / f"files-{self.rounds}.db"
        shutil.copyfile(self.template, path)
        table = SQLiteFileTable(path)
        try:
            stage = S3Uploader(self.store, table, dest_bucket=bucket)
            started = perf_counter()
            run = (
                Pipeline[Any]().add(stage, workers=TRANSFERS, ordered=False).run(claim_files(table))
            )
            seconds = perf_counter() - started
            copied = table.counts().get(S3_COPIED, 0)
        finally:
            table.close()
        if run.report.status != "completed" or copied != self.files:
            raise RuntimeError(f"our copy: {run.report.status}, {copied} of {self.files} copied")
        return seconds

    def rclone(self, rclone: str, env: dict[str, str]) -> float:
        bucket = self.bucket()
        command = [
            rclone,
            "copy",
            f"bench:{SOURCE}",
            f"bench:{bucket}",
            "--checksum",
            "--transfers",
            str(TRANSFERS),
            "--checkers",
            str(TRANSFERS),
            "-q",
        ]
        started = perf_counter()
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        seconds = perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"rclone copy failed ({done.returncode}): {done.stderr[-500:]}")
        listed = self.lister.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
        if listed != self.files:
            raise RuntimeError(f"rclone copied {listed} of {self.files} files")
        return seconds


def s3_copy(config: Config) -> ScenarioResult:
    """The copy stage against ``rclone copy``, same endpoint, same concurrency."""
    s = "s3_copy"
    files = 100 if config.quick else 1000
    rclone = shutil.which("rclone")
    try:
        from pipeline.migration import S3Store
    except ImportError:
        return ScenarioResult([_skip(s, "boto3 is not installed (the s3 extra)")], {})
    with _moto() as endpoint, tempfile.TemporaryDirectory(prefix="bench-s3-") as folder:
        if endpoint is None:
            return ScenarioResult(
                [_skip(s, "moto's S3 server is not installed (moto[server])")], {}
            )
        store = S3Store(
            endpoint_url=endpoint, region="us-east-1", access_key="testing", secret_key="testing"
        )
        try:
            template = Path(folder) / "template.db"
            with closing(SQLiteFileTable(template)) as table:
                table.create()
                store.create_bucket(SOURCE)
                records = []
                for file_id in range(files):
                    key = f"file_{file_id}.pdf"
                    info = store.put(SOURCE, key, os.urandom(64 * 1024))
                    records.append(FileRecord(file_id, key, info.size, info.sha256, SOURCE, key))
                table.add(records)
            rounds = _CopyRounds(store, Path(folder), template, files)
            env = _rclone_env(endpoint)
            variants: dict[str, Callable[[], float]] = {"S3Uploader": rounds.ours}
            if rclone is not None:
                variants["rclone copy"] = lambda: rounds.rclone(rclone, env)
            samples = interleave(variants, config.repeat, warmups=variants)
        finally:
            store.close()
    rate = {name: files / median(values) for name, values in samples.items()}
    note = f"{files} files of 64 KB, {TRANSFERS} at once, moto's S3 server; files/s"
    ours = f"S3Uploader workers={TRANSFERS}"
    if rclone is None:
        rows = [
            Row(s, ours, rate["S3Uploader"], "files/s", note=note),
            _skip(s, "rclone is not installed (apt-get install rclone): no floor to check"),
        ]
        return ScenarioResult(rows, samples)
    ratio = paired_ratio(samples["rclone copy"], samples["S3Uploader"])  # its time over ours
    rows = [
        Row(
            s,
            f"rclone copy --checksum --transfers {TRANSFERS}",
            rate["rclone copy"],
            "files/s",
            kind="base",
            note=note,
        ),
        compare(
            s,
            ours,
            rate["S3Uploader"],
            "files/s",
            "rclone copy",
            rate["rclone copy"],
            ratio=ratio,
            kind="floor",
            floor=0.8,
        ),
    ]
    return ScenarioResult(rows, samples)


def _skip(scenario: str, why: str) -> Row:
    return Row(scenario, "S3Uploader vs rclone copy", None, "files/s", kind="skip", note=why)


LATENCY = 0.05
API_WORKERS = 4


def _makespan(files: int, root: Path) -> float:
    """One run of the migration tool on fresh embedded parts: the run's elapsed seconds."""
    shutil.rmtree(root, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "data",
        "--root",
        str(root),
        "--files",
        str(files),
        "--api-latency",
        str(LATENCY),
        "--api-workers",
        str(API_WORKERS),
        "--json",
        "--quiet",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the migration tool failed ({done.returncode}): {done.stderr[-500:]}")
    result = json.loads(done.stdout)
    verified = result["table"].get("VERIFIED", 0)
    if verified != files:
        raise RuntimeError(f"{verified} of {files} files verified")
    return float(result["pipeline"]["elapsed_seconds"])


def migration(config: Config) -> ScenarioResult:
    """The whole migration's makespan against the bound its slow API stage sets."""
    s = "migration"
    files = 40 if config.quick else 200
    bound = files * LATENCY / API_WORKERS
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as folder:
        root = Path(folder) / "run"
        samples = interleave({"migration": lambda: _makespan(files, root)}, config.repeat)
    took = median(samples["migration"])
    note = f"{files} files, --api-latency {LATENCY}, {API_WORKERS} API workers; makespan / bound"
    rows = [
        Row(s, "API bound: files x latency / workers", bound, "s", kind="base"),
        compare(
            s,
            "python -m pipeline data",
            took,
            "s",
            "API bound: files x latency / workers",
            bound,
            kind="floor",
            floor=1.1,
            higher_is_better=False,
            note=note,
        ),
    ]
    return ScenarioResult(rows, samples)
