"""The command line: ``python -m pipeline`` runs the seed's basic demo.

Integers 1..N go through a Multiply, an Add and a Filter stage; every stage
logs the items it processes and the consumer logs every final output, in the
seed's format (``[INFO] Multiply Stage processing item: 1``), then the
verification report is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence

from ._exceptions import PipelineError, StageError
from ._pipeline import DEFAULT_MAXSIZE, Pipeline
from ._report import PipelineReport
from ._stage import PipelineStage
from .stages import AddStage, FilterStage, MultiplyStage

__all__ = ["main"]

logger = logging.getLogger("pipeline.demo")

EXIT_OK = 0
EXIT_PIPELINE_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _DemoError(Exception):
    """Raised on purpose by ``--fail-at``."""


class _LoggedStage(PipelineStage[int]):
    """Wrap a demo stage: log each item as the seed does, optionally slow down or fail."""

    def __init__(
        self,
        inner: PipelineStage[int],
        *,
        delay: float = 0.0,
        fail_at: int | None = None,
    ) -> None:
        super().__init__(name=inner.name)
        self.inner = inner
        self.delay = delay
        self.fail_at = fail_at

    def process(self, item: int) -> Iterator[int]:
        logger.info("%s processing item: %s", self.name, item)
        if self.delay:
            time.sleep(self.delay)
        if item == self.fail_at:
            raise _DemoError(f"--fail-at {item}")
        result = self.inner.process(item)
        if isinstance(result, Iterator):
            yield from result  # the filter yields zero or one output
        else:
            yield result

    def on_stop(self) -> None:
        logger.debug("%s worker finished", self.name)


def _is_even(item: int) -> bool:
    return item % 2 == 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m pipeline``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=(
            "Run the basic demo: integers 1..N through Multiply (x2), Add (+10) and "
            "Filter (keep even) stages, each in its own worker threads, then print "
            "the verification report."
        ),
        epilog="Exit codes: 0 success, 1 pipeline error, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--items", type=_non_negative_int, default=10, help="how many integers (default 10)"
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=1, help="worker threads per stage (default 1)"
    )
    parser.add_argument(
        "--queue-size",
        type=_positive_int,
        default=None,
        help="bound of each stage's input queue, in items (default: set from the item "
        f"size, at most {DEFAULT_MAXSIZE})",
    )
    parser.add_argument(
        "--unordered", action="store_true", help="emit items as they finish, not in input order"
    )
    parser.add_argument(
        "--delay", type=_seconds, default=0.0, help="seconds each stage sleeps per item"
    )
    parser.add_argument(
        "--fail-at",
        type=int,
        metavar="ITEM",
        help="make the Multiply stage raise on this item (shows fail-fast)",
    )
    parser.add_argument("--timeout", type=_seconds, help="cancel the run after this many seconds")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="logging level (default INFO)",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="log nothing; print only the report"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of text"
    )
    return parser


def build_demo(args: argparse.Namespace) -> Pipeline[int, int]:
    """Return the demo pipeline configured by the parsed ``args``."""
    ordered = not args.unordered
    stages = [
        _LoggedStage(MultiplyStage(name="Multiply Stage"), delay=args.delay, fail_at=args.fail_at),
        _LoggedStage(AddStage(name="Add Stage"), delay=args.delay),
        _LoggedStage(FilterStage(_is_even, name="Filter Stage"), delay=args.delay),
    ]
    pipeline = Pipeline[int](maxsize=args.queue_size)
    for stage in stages:
        pipeline.add(stage, workers=args.workers, ordered=ordered)
    return pipeline


def _configure_logging(level: str, *, quiet: bool) -> tuple[logging.Handler, int]:
    # Log the library's hierarchy to stderr; return what to undo afterwards.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    root = logging.getLogger("pipeline")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.CRITICAL + 1 if quiet else getattr(logging, level))
    return handler, previous


def _print_report(report: PipelineReport | None, *, as_json: bool) -> None:
    if report is None:
        return
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    >>> main(["--items", "2", "--quiet"])  # doctest: +ELLIPSIS
    === VERIFICATION REPORT ===
    Expected: 2
    Processed: 2
    Success: 2
    Failed: 0
    ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler, previous_level = _configure_logging(args.log_level, quiet=args.quiet)
    try:
        pipeline = build_demo(args)
        report: PipelineReport | None = None
        with pipeline.stream(range(1, args.items + 1), timeout=args.timeout) as outputs:
            try:
                for item in outputs:
                    logger.info("Final output: %s", item)
            finally:
                report = outputs.report
        _print_report(report, as_json=args.json)
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PipelineError as exc:
        logger.error("%s", exc)  # noqa: TRY400 (a demo summarises the cause; no traceback)
        if isinstance(exc, StageError) and exc.__cause__ is not None:
            logger.error("caused by %r", exc.__cause__)  # noqa: TRY400
        _print_report(exc.report if hasattr(exc, "report") else None, as_json=args.json)
        return EXIT_PIPELINE_ERROR
    finally:
        logging.getLogger("pipeline").removeHandler(handler)
        logging.getLogger("pipeline").setLevel(previous_level)
