"""The file migration tool: ``python -m pipeline data`` and ``./run_data_example.py``.

    dispatcher (claims rows) -> S3 Uploader x3 -> API Uploader x2 -> Verifier x1

With no options it runs on embedded parts, so one command runs it anywhere:
an SQLite ``files`` table, a folder per bucket, and the metadata API served
by a child process on a free port of 127.0.0.1, all under ``--root`` (created and
seeded with ``--files`` random files the first time). Point it at real
parts with ``--db postgresql://...``, ``--s3-endpoint URL`` and
``--api-url URL``. A rerun does only what is left: interrupt it (Ctrl-C,
``kill -9``) and run it again.

``--dask ADDRESS|local`` runs the S3 and API uploaders on a Dask cluster
(see :mod:`pipeline.migration._cluster` for what must be reachable from
there); the dispatcher and the verifier stay in this process.

Exit codes: 0 every file verified, 1 some file failed (listed in the
report), 2 a bad option or setup (the message says what to fix), 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .._cli import (
    EXIT_INTERRUPTED,
    add_observing_options,
    number,
    observers_from,
    parse_args,
    run_reporting,
    seconds,
    whole_number,
)
from .._dask_cli import add_dask_option, on_cluster
from .._pipeline import MAX_WORKERS
from .._report import PipelineReport
from .._stdout import reader_may_leave
from ..migration import (
    FAILED,
    FileTable,
    LocalStore,
    Migration,
    MigrationConfigError,
    ObjectStore,
    open_file_table,
    seed_files,
)
from ..migration._migrate import DEST_BUCKET, SOURCE_BUCKET
from ..migration._store import check_bucket_name

__all__ = ["main"]

logger = logging.getLogger("pipeline.migration")

EXIT_USAGE = 2
TOKEN_VARIABLE = "PIPELINE_API_TOKEN"


def _bucket(text: str) -> str:
    try:
        return check_bucket_name(text)
    except MigrationConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The migration's options."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Migrate files between buckets, register them with the metadata API, "
        "verify both; resumable (a rerun does what is left).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root",
        default="migration-demo",
        help="folder of the embedded parts: files.db, api.db, buckets/ (default ./migration-demo)",
    )
    parser.add_argument(
        "--files",
        type=whole_number(0),
        default=8,
        help="files to seed when the table does not exist yet (default 8)",
    )
    parser.add_argument(
        "--file-size",
        type=whole_number(1),
        default=64 * 1024,
        help="largest seeded file, in bytes (default 65536)",
    )
    parser.add_argument("--seed", type=whole_number(0), default=7, help="seed of the file contents")
    parser.add_argument(
        "--db", help="the files table: postgresql://... or an SQLite path (default ROOT/files.db)"
    )
    parser.add_argument(
        "--s3-endpoint",
        help="an S3-compatible endpoint URL (needs the s3 extra; credentials from the "
        "usual AWS variables and files); default: folders under ROOT/buckets",
    )
    parser.add_argument("--source-bucket", type=_bucket, default=SOURCE_BUCKET)
    parser.add_argument("--dest-bucket", type=_bucket, default=DEST_BUCKET)
    parser.add_argument(
        "--api-url", help="a running metadata API (default: one started for the run)"
    )
    parser.add_argument(
        "--api-token", help=f"the API's bearer token (default: ${TOKEN_VARIABLE}, or generated)"
    )
    parser.add_argument(
        "--api-latency",
        type=seconds(60.0),
        default=0.05,
        help="the embedded API's delay per request, seconds (default 0.05; a real one: 1-2)",
    )
    parser.add_argument(
        "--api-fail-rate",
        type=number(0.0, 1.0, what="a fraction"),
        default=0.0,
        help="the embedded API answers 503 this often (default 0)",
    )
    parser.add_argument(
        "--api-rate",
        type=number(0.001, 1e6),
        default=None,
        help="the embedded API's most requests per second (default: no cap)",
    )
    parser.add_argument(
        "--s3-workers", type=whole_number(1, MAX_WORKERS), default=3, help="copies at once (3)"
    )
    parser.add_argument(
        "--api-workers", type=whole_number(1, MAX_WORKERS), default=2, help="API requests (2)"
    )
    parser.add_argument(
        "--lease",
        type=seconds(86400.0),
        default=60.0,
        help="seconds a claim on a file lasts without progress (default 60)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="make FAILED files READY again first"
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would be done; do nothing")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-file log lines")
    add_dask_option(
        parser,
        "the S3 and API uploaders (--s3-workers and --api-workers are then batches in "
        "flight there; notes below)",
    )
    add_observing_options(parser)
    return parser


_EPILOG = """\
--dask: the S3 and API uploaders run on the cluster's workers, their per-file
log lines in the workers' logs; the dispatcher and the verifier (the report)
stay in this process. On this machine (--dask local, or a cluster whose
workers are all here) the embedded parts work, SQLite included: its
processes take turns on the file. Workers on other machines need parts they
can reach: PostgreSQL (--db postgresql://HOST/...), --s3-endpoint and
--api-url at addresses not of this machine. An SQLite --db (a file is one
machine's) or a 127.0.0.1/localhost address is then refused (exit 2); the
folder buckets (no --s3-endpoint) only work on a folder all machines share.

Exit codes: 0 all verified, 1 some file failed, 2 bad option or setup, 130
interrupted.
"""


def _store(args: argparse.Namespace, root: Path) -> ObjectStore:
    if args.s3_endpoint is None:
        return LocalStore(root / "buckets")
    try:
        from ..migration._s3 import S3Store  # noqa: PLC0415 (boto3 on demand)
    except ImportError:
        message = "--s3-endpoint needs boto3: pip install 'threaded-pipeline[s3]'"
        raise MigrationConfigError(message) from None
    return S3Store(endpoint_url=args.s3_endpoint)


@contextmanager
def _api(args: argparse.Namespace, root: Path) -> Iterator[Any]:
    from ..migration._api import MetadataClient, new_token  # noqa: PLC0415

    token = args.api_token or os.environ.get(TOKEN_VARIABLE) or None
    if args.api_url is not None:
        if token is None:
            message = f"--api-url needs a token: --api-token or ${TOKEN_VARIABLE}"
            raise MigrationConfigError(message)
        with MetadataClient(args.api_url, token) as client:
            yield client
        return
    with _embedded_api_server(args, root, token or new_token()) as (url, token):
        logger.info("Metadata API at %s", url)
        with MetadataClient(url, token) as client:
            yield client


@contextmanager
def _embedded_api_server(
    args: argparse.Namespace, root: Path, token: str
) -> Iterator[tuple[str, str]]:
    """Run the embedded metadata API as a child process; yield its URL and token.

    A process of its own, as a real API would be: in this one, its request
    threads would take the GIL from the migration's workers (measured: 4%
    more time per PUT). It stops when this block ends, and also when this
    process dies (``--until-stdin-closes``: its stdin is our pipe).
    """
    command = [sys.executable, "-m", "pipeline", "api-server", "--port", "0"]
    command += ["--db", str(root / "api.db"), "--until-stdin-closes"]
    command += ["--latency", repr(args.api_latency), "--fail-rate", repr(args.api_fail_rate)]
    command += [] if args.api_rate is None else ["--rate", repr(args.api_rate)]
    command += [] if args.seed is None else ["--seed", str(args.seed)]
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, TOKEN_VARIABLE: token, "PYTHONPATH": _this_package_on_path()},
        start_new_session=True,  # a Ctrl-C is ours to handle: we stop it after the report
    )
    assert child.stdin is not None  # both pipes, as asked: for the type checker
    assert child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], _API_START_SECONDS)
        line = child.stdout.readline() if ready else ""
        prefix = "metadata API at "
        if not line.startswith(prefix):
            why = "did not start" if ready else f"did not start in {_API_START_SECONDS:.0f} s"
            raise MigrationConfigError(f"the embedded metadata API {why} (see its error above)")
        yield line[len(prefix) :].split()[0], token
    finally:
        child.stdin.close()  # its cue to stop
        try:
            child.wait(_API_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()


def _this_package_on_path() -> str:
    # The child imports this very package, installed or not (the launchers
    # run it from the checkout on a bare Python): its folder goes first.
    # The token goes by the environment, not argv, which any user can read.
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])


_API_START_SECONDS = 30.0  # a loaded machine may take seconds to start a Python
_API_STOP_SECONDS = 10.0


def _refuse_embedded_only(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.api_url is None:
        return
    for option, value, default in (
        ("--api-fail-rate", args.api_fail_rate, 0.0),
        ("--api-rate", args.api_rate, None),
    ):
        if value != default:
            parser.error(f"argument {option}: applies to the embedded API only, not --api-url")


@reader_may_leave
def main(argv: Sequence[str] | None = None, *, prog: str = "python -m pipeline data") -> int:
    """Run the migration tool with ``argv``; return its exit code."""
    parser = build_parser(prog)
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        _refuse_embedded_only(args, parser)
    except SystemExit:  # parser.error: the usage line and the message are printed
        return EXIT_USAGE
    # A dry run touches nothing, a cluster included.
    target = None if args.dry_run else args.dask
    tasks = args.s3_workers + args.api_workers
    level = logging.WARNING if args.quiet else logging.INFO
    with _logging_to_stderr(level), on_cluster(target, tasks=tasks, prog=prog) as executor:
        if isinstance(executor, int):
            return executor  # the cluster could not be reached, or Ctrl-C meanwhile
        return _migrate(args, executor, prog)


@contextmanager
def _logging_to_stderr(level: int) -> Iterator[None]:
    """Log the library's lines (``pipeline.*``) to stderr for the run; undo it afterwards.

    Not the root logger's: Dask's scheduler, in this process with ``--dask
    local``, logs its own INFO lines there.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    library = logging.getLogger("pipeline")
    previous = library.level
    library.addHandler(handler)
    library.setLevel(level)
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(previous)


def _migrate(args: argparse.Namespace, executor: Any, prog: str) -> int:
    """Set up the parts, run the migration with its uploaders on ``executor``, report."""
    root = Path(args.root)
    with ExitStack() as stack:
        try:
            if args.db is None or args.s3_endpoint is None or args.api_url is None:
                root.mkdir(parents=True, exist_ok=True)
            table = open_file_table(args.db or str(root / "files.db"), lease_seconds=args.lease)
            stack.callback(table.close)
            store = _store(args, root)
            stack.callback(store.close)
            api = stack.enter_context(_api(args, root))
            migration = Migration(
                table,
                store,
                api,
                dest_bucket=args.dest_bucket,
                s3_workers=args.s3_workers,
                api_workers=args.api_workers,
                executor=executor,
            )
            migration.check_cluster()  # before anything is written: parts it cannot reach
            table.create()
            seeding = not any(table.counts().values())
            if seeding and args.dry_run:
                print(f"would seed {args.files} files in bucket {args.source_bucket}")
            elif seeding:
                _seed(args, table, store)
                logger.info("Seeded %d files in bucket %s", args.files, args.source_bucket)
            if args.retry_failed and not args.dry_run:
                logger.info("%d FAILED files made READY again", table.reset_failed())
            if not (seeding and args.dry_run):  # nothing there yet to check
                migration.check()
        except BrokenPipeError:
            raise  # stdout's reader left: not a setup error (see reader_may_leave)
        except (MigrationConfigError, OSError) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:  # while seeding, or starting the embedded API
            print("interrupted (Ctrl-C) before the migration started", file=sys.stderr)
            return EXIT_INTERRUPTED
        if args.dry_run:
            return _dry_run(migration, as_json=args.json)
        failed = False

        def migrate() -> PipelineReport:
            nonlocal failed
            watching = {
                "trace": args.trace,
                "progress": args.progress,
                "observers": observers_from(args),
            }
            result = migration.run(**watching)
            failed = result.verification.failed > 0
            return result.report

        def show(report: PipelineReport | None) -> None:
            verification = migration.verifier.report() if migration.verifier else None
            counts = table.counts()
            if args.json:
                print(
                    json.dumps(
                        {
                            "verification": None
                            if verification is None
                            else verification.to_dict(),
                            "table": counts,
                            "pipeline": None if report is None else report.to_dict(),
                        },
                        indent=2,
                    )
                )
                return
            print()
            if verification is not None:
                print(verification.summary())
            print(_table_line(counts))
            if report is not None:
                print()
                print(report.table())
                ending = "complete" if report.status == "completed" else report.status
                print(f"\n=== Pipeline {ending} ===")

        code = run_reporting(migrate, show)
        return 1 if code == 0 and failed else code


def _seed(args: argparse.Namespace, table: FileTable, store: ObjectStore) -> None:
    """Put ``--files`` random files in the source bucket and their rows in the table."""
    try:
        seed_files(
            table, store, args.source_bucket, count=args.files, size=args.file_size, seed=args.seed
        )
        store.create_bucket(args.dest_bucket)
    except MigrationConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 (a store's own error: botocore's, an OSError)
        # The table has no rows yet (seed_files adds them last): a rerun seeds again.
        message = f"cannot seed bucket {args.source_bucket!r} in the {store.describe()}: {exc}"
        raise MigrationConfigError(message) from None


def _table_line(counts: dict[str, int]) -> str:
    return "Table: " + ", ".join(f"{status} {n}" for status, n in counts.items())


def _dry_run(migration: Migration, *, as_json: bool) -> int:
    plan = migration.plan()
    if as_json:
        print(
            json.dumps(
                [{"id": p.id, "name": p.name, "status": p.status, "steps": p.steps} for p in plan],
                indent=2,
            )
        )
        return 0
    for step in plan:
        print(f"would {', '.join(step.steps)}: {step.name} (id {step.id}, {step.status})")
    failed = migration.table.counts()[FAILED]
    print(f"{len(plan)} files to migrate; {failed} FAILED left as they are (--retry-failed)")
    return 0
