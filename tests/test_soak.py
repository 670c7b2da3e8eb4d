"""Soak tests: long randomised runs, left out of the default suite (``pytest -m slow``)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from pipeline import Pipeline, PipelineCancelled, PipelineReport, SafeQueue, StageError
from tests.helpers import WAIT

SOAK_SECONDS = 60.0


def _random_pipeline(rng: random.Random, fail_at: int | None) -> Pipeline[int, int]:
    pipeline = Pipeline[int](maxsize=rng.randint(1, 64))
    for position in range(rng.randint(1, 5)):
        workers = rng.randint(1, 8)
        ordered = rng.random() < 0.7

        def step(x: int, position: int = position) -> int:
            if x == fail_at and position == 0:
                raise ValueError(x)
            return x + 1

        pipeline.map(step, workers=workers, ordered=ordered, name=f"s{position}")
        if rng.random() < 0.3:
            # Each filter drops one residue mod 7: at most 5 of 7 are ever
            # dropped, so an infinite source keeps producing outputs.
            pipeline.filter(lambda x: x % 7 != 3, workers=workers, ordered=ordered)
    return pipeline


def _run_to_a_report(pipeline: Pipeline[int, int], size: int) -> PipelineReport:
    # The report of a run that completes or fails fast.
    try:
        return pipeline.run(range(size), timeout=WAIT).report
    except StageError as error:
        if error.report is None or error.report.status != "failed":
            raise
        return error.report


def _consume(pipeline: Pipeline[int, int], stop_after: int) -> None:
    for n, _ in enumerate(pipeline.stream(iter(range(10**9)), timeout=WAIT)):
        if n >= stop_after:
            pipeline.cancel()


def _stream_until_cancelled(pipeline: Pipeline[int, int], stop_after: int) -> PipelineReport:
    with pytest.raises(PipelineCancelled) as cancelled:
        _consume(pipeline, stop_after)
    report = cancelled.value.report
    assert report is not None
    return report


def _produce_and_consume(rng: random.Random) -> None:
    q = SafeQueue[tuple[int, int]](maxsize=rng.randint(0, 32))
    producers = rng.randint(1, 6)
    per_producer = rng.randint(0, 2000)
    handles = [q.producer() for _ in range(producers)]
    received: list[list[tuple[int, int]]] = [[] for _ in range(rng.randint(1, 6))]

    def produce(index: int) -> None:
        with handles[index] as handle:
            for seq in range(per_producer):
                handle.put((index, seq), timeout=WAIT)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    threads += [threading.Thread(target=out.extend, args=(q,)) for out in received]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    everything = Counter(item for out in received for item in out)
    assert everything == Counter((i, s) for i in range(producers) for s in range(per_producer))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS * 3)
def test_random_pipelines_for_a_minute_balance_their_books_and_leave_no_thread() -> None:
    rng = random.Random(20261125)
    threads_before = threading.active_count()
    deadline = time.monotonic() + SOAK_SECONDS
    runs = 0
    while time.monotonic() < deadline:
        size = rng.randint(0, 5000)
        fail_at = rng.choice([None, None, rng.randint(0, max(size - 1, 0))])
        report = _run_to_a_report(_random_pipeline(rng, fail_at), size)
        assert report.balanced
        assert threading.active_count() == threads_before
        runs += 1
    assert runs > 10


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS * 3)
def test_many_producers_and_consumers_for_a_minute_lose_nothing() -> None:
    rng = random.Random(7)
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        _produce_and_consume(rng)


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS * 3)
def test_cancelling_streams_at_random_moments_for_a_minute() -> None:
    rng = random.Random(11)
    threads_before = threading.active_count()
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        report = _stream_until_cancelled(_random_pipeline(rng, None), rng.randint(0, 3000))
        assert report.status == "cancelled"
        assert report.balanced
        assert threading.active_count() == threads_before
