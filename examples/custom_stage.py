"""A custom stage with hooks, retries, dead letters, fan-out and batching.

Documents are fetched from a flaky "service" (it fails now and then, so the
fetch stage retries with backoff and, if a document keeps failing, records it
as a dead letter instead of stopping the run), split into words (a generator
stage: one document in, many words out), batched, and counted by a single
aggregator. Every worker opens its own "connection" in ``on_start`` and closes
it in ``on_stop``.

Run it with ``./run_custom_example.py`` or ``python examples/custom_stage.py``.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python examples/x.py): use the checkout's library
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import Pipeline, PipelineReport, PipelineStage, Retry
from pipeline._cli import number, parse_args, run_reporting, whole_number

logger = logging.getLogger("pipeline.examples.custom")

PROSE = (
    "the quick brown fox jumps over the lazy dog while the pipeline keeps every "
    "worker busy and every queue bounded so nothing is lost and nothing hangs"
)


class FlakyError(ConnectionError):
    """The simulated service failed this time."""


class Fetch(PipelineStage[int, str]):
    """Fetch a document by id from a service that fails now and then."""

    def __init__(self, failure_rate: float, always_failing: frozenset[int]) -> None:
        super().__init__(name="fetch")
        self.failure_rate = failure_rate
        self.always_failing = always_failing
        self.connection: str | None = None

    def on_start(self) -> None:
        # Runs in each worker thread: each worker has its own connection,
        # because each worker has its own shallow copy of the stage.
        self.connection = f"connection of {threading.current_thread().name}"
        self.random = random.Random(hash(self.connection))
        logger.info("opened %s", self.connection)

    def process(self, item: int) -> str:
        if item in self.always_failing or self.random.random() < self.failure_rate:
            raise FlakyError(f"service unavailable for document {item}")
        words = self.random.choices(PROSE.split(), k=12)
        return " ".join(words)

    def on_stop(self) -> None:
        logger.info("closed %s", self.connection)


class Words(PipelineStage[str]):
    """Split a document into lower-case words: zero or more outputs per item."""

    def process(self, item: str) -> Iterator[str]:
        for word in item.split():
            yield word.lower()


class CountWords(PipelineStage[list[str], int]):
    """Count words batch by batch; emit how many words each batch had.

    The totals are one Counter for the whole run, kept in the stage itself:
    ``single_worker`` makes ``add()`` refuse more than one worker for it.
    """

    single_worker = True

    def __init__(self) -> None:
        super().__init__(name="count")
        self.totals: Counter[str] = Counter()

    def process(self, item: list[str]) -> int:
        self.totals.update(item)
        return len(item)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the word count; print the top words and the report; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="run_custom_example.py",
        description=(__doc__ or "").split("\n", maxsplit=1)[0],
        epilog="Exit codes: 0 success, 1 pipeline error, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--documents", type=whole_number(0), default=200, help="how many documents (default 200)"
    )
    parser.add_argument(
        "--failure-rate",
        type=number(0.0, 1.0, what="a probability"),
        default=0.2,
        help="chance a fetch fails, from 0 to 1 (default 0.2)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no log lines")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="[%(levelname)s] %(message)s"
    )
    counter = CountWords()
    pipeline = (
        Pipeline[int]()
        .add(
            Fetch(args.failure_rate, always_failing=frozenset({13, 42})),
            workers=4,
            retry=Retry(attempts=4, backoff=0.001, max_delay=0.01, on=(FlakyError,)),
            on_error="skip",
        )
        .add(Words(name="words"), workers=2)
        .batch(100, max_wait=0.05)
        .add(counter)
    )

    def count() -> PipelineReport:
        return pipeline.run(range(args.documents)).report

    def show(report: PipelineReport | None) -> None:
        print("top words:", ", ".join(f"{w} {n}" for w, n in counter.totals.most_common(5)))
        if report is None:
            return
        for letter in report.dead_letters:
            print(
                f"dead letter: document {letter.item} after {letter.attempts} tries: "
                f"{letter.exception}"
            )
        print(report.summary())

    return run_reporting(count, show)


if __name__ == "__main__":
    raise SystemExit(main())
