"""The command line: ``python -m pipeline`` runs the basic demo.

Integers 1..N go through a Multiply (x2), an Add (+10) and a Filter (keep
even) stage; every stage logs the items it processes and the consumer logs
every final output (``[INFO] Multiply Stage processing item: 1``), then the
verification report is printed. ``python -m pipeline custom [options]``
runs the image-pipeline example instead (:mod:`pipeline._examples.images`),
``python -m pipeline data [options]`` the file migration tool
(:mod:`pipeline._examples.migration`), ``python -m pipeline api-server`` its
metadata API.

The argument types and the outcome handling here are shared with the
example scripts of the repository (``examples/``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._dask_cli import add_dask_option, on_cluster
from ._exceptions import PipelineError
from ._observe import Observer
from ._pipeline import MAX_WORKERS, Pipeline
from ._plot import PlotFile
from ._prometheus import PrometheusMetrics
from ._report import PipelineReport
from ._run import DEFAULT_MAXSIZE
from ._stage import PipelineStage
from ._stdout import reader_may_leave
from ._trace import check_trace
from ._validate import MAX_SECONDS
from .stages import AddStage, FilterStage, MultiplyStage

__all__ = ["main"]

logger = logging.getLogger("pipeline.demo")

EXIT_OK = 0
EXIT_PIPELINE_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

MAX_DELAY = 3600.0
"""The longest ``--delay`` per item the demo takes (an hour: more is a typo)."""


class _DemoError(Exception):
    """Raised on purpose by ``--fail-at``."""


class _LoggedStage(PipelineStage[int]):
    """Wrap a demo stage: log each item it processes, optionally slow down or fail."""

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


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """Return an argparse type: a whole number in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{upper}, got {value}")
        return value

    return parse


def number(minimum: float, maximum: float, *, what: str = "a number") -> Callable[[str], float]:
    """Return an argparse type: a finite number in ``[minimum, maximum]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and minimum <= value <= maximum):
            bounds = (
                f"at least {minimum:g}"
                if maximum >= MAX_SECONDS
                else f"from {minimum:g} to {maximum:g}"
            )
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text}")
        return value

    return parse


def seconds(maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """Return an argparse type: a finite, non-negative number of seconds."""
    return number(0.0, maximum, what="a number of seconds")


def trace_file(text: str) -> str:
    """The ``--trace FILE`` argument: a file path in a directory that exists."""
    try:
        checked = check_trace(text)
    except ValueError as exc:
        message = str(exc).replace("'trace' must be", "must be")
        raise argparse.ArgumentTypeError(message) from None
    return text if checked is None else checked


def plot_file(text: str) -> str:
    """The ``--plot FILE.png`` argument: a file path, with matplotlib installed."""
    path = trace_file(text)
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError("needs matplotlib: pip install 'threaded-pipeline[plot]'")
    return path


def metrics_port(text: str) -> int:
    """The ``--metrics-port PORT`` argument: 0 to 65535, with prometheus-client installed."""
    port = whole_number(0, 65535)(text)
    if importlib.util.find_spec("prometheus_client") is None:
        message = "needs prometheus-client: pip install 'threaded-pipeline[prometheus]'"
        raise argparse.ArgumentTypeError(message)
    return port


def observers_from(args: argparse.Namespace) -> list[Observer]:
    """The observers the shared options ask for (``--metrics-port``, ``--plot``)."""
    observers: list[Observer] = []
    if args.metrics_port is not None:
        observers.append(PrometheusMetrics(args.metrics_port, host=args.metrics_host))
    if args.plot is not None:
        observers.append(PlotFile(args.plot))
    return observers


def add_observing_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress``, ``--trace``, ``--plot`` and the metrics options, for every command."""
    parser.add_argument(
        "--plot",
        type=plot_file,
        metavar="FILE.png",
        help="draw the run into FILE.png: busy workers, queue depths, throughput per stage",
    )
    parser.add_argument(
        "--metrics-port",
        type=metrics_port,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics while the run goes on",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address --metrics-port binds (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show live progress on stderr, a line per stage, every second",
    )
    parser.add_argument(
        "--trace",
        type=trace_file,
        metavar="FILE",
        help="write the run's timeline to FILE (Chrome trace JSON: open it in "
        "https://ui.perfetto.dev)",
    )


def program_name() -> str:
    """How the program was started, for ``usage:`` lines.

    ``threaded-pipeline`` (the installed command) and the repository's
    ``run_*.py`` launchers go by their own names; anything else is
    ``python -m pipeline``.
    """
    started_as = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if started_as == "threaded-pipeline" or (
        started_as.startswith("run_") and started_as.endswith(".py")
    ):
        return started_as
    return "python -m pipeline"


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace | int:
    """Parse ``argv``; return the namespace, or the exit code of ``--help`` or a usage error."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def run_reporting(
    body: Callable[[], PipelineReport | None],
    show: Callable[[PipelineReport | None], None],
) -> int:
    """Run ``body``; show its report, or the partial one of an error; return the exit code.

    A pipeline error is logged in one line (exit 1); Ctrl-C prints
    ``interrupted`` (exit 130). Either way the partial report is shown.
    """
    try:
        show(body())
        return EXIT_OK
    except KeyboardInterrupt as exc:
        print("interrupted (Ctrl-C): the run was stopped; partial report below", file=sys.stderr)
        show(getattr(exc, "report", None))
        return EXIT_INTERRUPTED
    except PipelineError as exc:
        logger.error("%s", exc)  # noqa: TRY400 (one line: the message names stage, item, cause)
        show(getattr(exc, "report", None))
        return EXIT_PIPELINE_ERROR


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m pipeline``."""
    parser = argparse.ArgumentParser(
        prog=prog or program_name(),
        description=(
            "Run the basic demo: integers 1..N through Multiply (x2), Add (+10) and "
            "Filter (keep even) stages, each in its own worker threads, then print "
            "the verification report. `%(prog)s custom [options]` runs the "
            "example image pipeline instead (needs Pillow; `custom --help` lists its options); "
            "`%(prog)s data [options]` the file migration tool; `%(prog)s api-server` its "
            "metadata API."
        ),
        epilog="Exit codes: 0 success, 1 pipeline error, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--items", type=whole_number(0), default=10, help="how many integers (default 10)"
    )
    parser.add_argument(
        "--workers",
        type=whole_number(1, MAX_WORKERS),
        default=1,
        help=f"worker threads per stage (default 1, at most {MAX_WORKERS})",
    )
    parser.add_argument(
        "--queue-size",
        type=whole_number(1),
        default=None,
        help="bound of each stage's input queue, in items (default: set from the item "
        f"size, at most {DEFAULT_MAXSIZE})",
    )
    parser.add_argument(
        "--unordered", action="store_true", help="emit items as they finish, not in input order"
    )
    parser.add_argument(
        "--delay",
        type=seconds(MAX_DELAY),
        default=0.0,
        help=f"seconds each stage sleeps per item (at most {MAX_DELAY:g})",
    )
    parser.add_argument(
        "--fail-at",
        type=whole_number(1),
        metavar="ITEM",
        help="make the Multiply stage raise on this item (shows fail-fast)",
    )
    parser.add_argument("--timeout", type=seconds(), help="cancel the run after this many seconds")
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
    add_dask_option(parser, "the three stages (their per-item log lines are then the workers')")
    add_observing_options(parser)
    return parser


def build_demo(args: argparse.Namespace, executor: Any = "thread") -> Pipeline[int, int]:
    """Return the demo pipeline configured by the parsed ``args``, its stages on ``executor``."""
    ordered = not args.unordered
    stages = [
        _LoggedStage(MultiplyStage(name="Multiply Stage"), delay=args.delay, fail_at=args.fail_at),
        _LoggedStage(AddStage(name="Add Stage"), delay=args.delay),
        _LoggedStage(FilterStage(_is_even, name="Filter Stage"), delay=args.delay),
    ]
    pipeline = Pipeline[int](maxsize=args.queue_size)
    for stage in stages:
        pipeline.add(stage, workers=args.workers, ordered=ordered, executor=executor)
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


def print_report(report: PipelineReport | None, *, as_json: bool) -> None:
    """Print ``report`` to stdout as text or JSON; nothing if there is none."""
    if report is None:
        return
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())


@reader_may_leave
def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the demo with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    >>> main(["--items", "2", "--quiet"])  # doctest: +ELLIPSIS
    === VERIFICATION REPORT ===
    Expected: 2
    Processed: 2
    Success: 2
    Failed: 0
    ...
    0

    ``custom`` as the first argument runs the image-pipeline example with the
    arguments after it; ``data``, the file migration tool
    (:mod:`pipeline._examples.migration`); ``api-server``, the migration's
    metadata API in the foreground.
    """
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] == "custom":
        from ._examples import run_images  # noqa: PLC0415 (the example and Pillow on demand)

        return run_images(arguments[1:], prog=f"{prog or program_name()} custom")
    if arguments and arguments[0] == "data":
        from ._examples.migration import main as migrate  # noqa: PLC0415 (on demand)

        return migrate(arguments[1:], prog=f"{prog or program_name()} data")
    if arguments and arguments[0] == "api-server":
        from .migration._api import main as serve  # noqa: PLC0415 (on demand)

        return serve(arguments[1:], prog=f"{prog or program_name()} api-server")
    args = parse_args(build_parser(prog), argv)
    if isinstance(args, int):
        return args
    handler, previous_level = _configure_logging(args.log_level, quiet=args.quiet)
    try:
        on = on_cluster(args.dask, tasks=3 * args.workers, prog=prog or program_name())
        with on as executor:
            if isinstance(executor, int):
                return executor  # the cluster could not be reached, or Ctrl-C meanwhile
            pipeline = build_demo(args, executor)

            def demo() -> PipelineReport | None:
                items = range(1, args.items + 1)
                watching = {"trace": args.trace, "progress": args.progress}
                with pipeline.stream(
                    items, timeout=args.timeout, observers=observers_from(args), **watching
                ) as outputs:
                    for item in outputs:
                        logger.info("Final output: %s", item)
                return outputs.report

            return run_reporting(demo, lambda report: print_report(report, as_json=args.json))
    finally:
        logging.getLogger("pipeline").removeHandler(handler)
        logging.getLogger("pipeline").setLevel(previous_level)
