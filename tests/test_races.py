"""Controls landing at awkward moments: while a run starts, after it collected its
outputs, from another thread while the consumer waits, while the source blocks,
and while the pipeline's registry changes; and one meaning of ``timeout=0``."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import (
    Pipeline,
    PipelineCancelled,
    PipelineStage,
    PipelineStateError,
    PipelineTimeout,
    SafeQueue,
)
from pipeline._run import Run
from tests.helpers import WAIT, Join


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


# -- item 5: cancel() or close() while the run starts its threads ---------------------------


class CancelsWhenCopied(PipelineStage[int]):
    """A stage whose __copy__ (made for every worker after the first) cancels its pipeline."""

    def __init__(self, pipeline: Pipeline[int, int], how: str) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.how = how

    def process(self, item: int) -> int:
        return item

    def __copy__(self) -> CancelsWhenCopied:
        getattr(self.pipeline, self.how)()
        return CancelsWhenCopied(self.pipeline, self.how)


@pytest.mark.parametrize("how", ["cancel", "close"])
@pytest.mark.parametrize("mode", ["run", "stream"])
def test_a_cancel_while_the_run_starts_raises_pipeline_cancelled(how: str, mode: str) -> None:
    pipeline = Pipeline[int]()
    pipeline.add(CancelsWhenCopied(pipeline, how), workers=3)
    before = set(threading.enumerate())
    start = pipeline.run if mode == "run" else lambda source: list(pipeline.stream(source))
    with pytest.raises(PipelineCancelled) as caught:
        start(range(10))
    assert caught.value.report is not None
    assert caught.value.report.status == "cancelled"
    assert caught.value.report.balanced
    assert _new_threads(before) == []


def test_a_copy_that_raises_fails_the_run_naming_the_stage() -> None:
    class Uncopyable(PipelineStage[int]):
        def process(self, item: int) -> int:
            return item

        def __copy__(self) -> Uncopyable:
            raise RuntimeError("no copies")

    with pytest.raises(Exception, match="could not be copied") as caught:
        Pipeline[int]().add(Uncopyable(), workers=2, name="u").run([1])
    assert caught.value.where == "copy"  # type: ignore[attr-defined]


# -- item 6: a cancel after the run collected every output ---------------------------------


def test_a_cancel_after_the_last_output_is_in_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = Pipeline[int]().map(lambda x: x * 2, workers=2)
    join = Run.join

    def cancel_then_join(run: Run) -> None:
        pipeline.cancel()  # lands after collect() took the outputs
        join(run)

    monkeypatch.setattr(Run, "join", cancel_then_join)
    result = pipeline.run(range(10))
    assert result.outputs == [x * 2 for x in range(10)]
    assert result.report.status == "completed"
    assert (result.report.outputs, result.report.not_processed) == (10, 0)


def test_a_cancel_before_the_outputs_are_collected_counts_them_as_not_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = Pipeline[int]().map(lambda x: x * 2, workers=2)
    collect = Run.collect

    def cancel_then_collect(run: Run, deadline: float | None) -> list[Any]:
        # Every output is in (a deadline, not a duration: WAIT alone passed at once).
        assert run.queues[-1]._wait_for_shutdown(time.monotonic() + WAIT)
        pipeline.cancel()
        return collect(run, deadline)

    monkeypatch.setattr(Run, "collect", cancel_then_collect)
    with pytest.raises(PipelineCancelled) as caught:
        pipeline.run(range(10))
    report = caught.value.report
    assert report is not None
    assert report.outputs == 0  # the caller received nothing, and the report says so
    assert report.undelivered == report.not_processed == 10
    assert report.balanced


# -- item 7: Stream.close() from another thread ----------------------------------------------


@pytest.mark.parametrize("source", ["queue", "generator"])
def test_closing_a_stream_from_another_thread_ends_the_consumers_loop(source: str) -> None:
    inbox = SafeQueue[int]()
    gate = threading.Event()

    def slow() -> Iterator[int]:
        yield 1
        gate.wait(WAIT)

    outputs = Pipeline[int]().map(abs).stream(inbox if source == "queue" else slow())
    received: list[int] = []
    first = threading.Event()

    def consume() -> None:
        for item in outputs:
            received.append(item)
            first.set()

    before = set(threading.enumerate())
    consumer = Join(consume, name="test-consumer")
    inbox.put(1)
    assert first.wait(WAIT)
    outputs.close()  # the consumer is blocked in next() meanwhile
    consumer.join()  # its loop ended: no error, no hang
    gate.set()
    assert received == [1]
    assert outputs.report is not None
    assert outputs.report.status == "closed"
    assert outputs.report.balanced
    for thread in threading.enumerate():
        if thread not in before and thread.name == "pipeline-source":
            thread.join(WAIT)
    assert _new_threads(before | {consumer.thread}) == []


class StopsWhenReleased(PipelineStage[int]):
    """A stage whose on_stop holds the end of the run until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = threading.Event()
        self.release = threading.Event()

    def process(self, item: int) -> int:
        return item

    def on_stop(self) -> None:
        self.stopping.set()
        self.release.wait(WAIT)


def test_a_next_while_another_thread_closes_the_stream_ends_the_stream() -> None:
    # The window a free-threaded build hit in CI: the consumer calls next()
    # while another thread's close() is still joining the run's threads.
    stage = StopsWhenReleased()
    before = set(threading.enumerate())
    outputs = Pipeline[int]().add(stage).stream(range(10**6))
    assert next(outputs) == 0
    closer = Join(outputs.close, name="test-closer")
    assert stage.stopping.wait(WAIT)
    with pytest.raises(StopIteration):
        next(outputs)
    stage.release.set()
    closer.join()
    assert outputs.report is not None
    assert outputs.report.status == "closed"
    assert _new_threads(before) == []


def test_a_stream_closed_before_its_first_next_has_a_report_of_nothing_read() -> None:
    outputs = Pipeline[int]().map(abs).stream(range(10))
    outputs.close()
    assert outputs.report is not None
    assert (outputs.report.status, outputs.report.items_read) == ("closed", 0)
    assert list(outputs) == []


# -- item 8: a source blocked inside its own next() --------------------------------------------


class Blocking:
    """A source that hands out one item, then blocks inside next() until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = threading.Event()
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        self.pulled += 1
        yield 1
        self.inside.set()
        self.release.wait(WAIT)


def _ends_soon(control: str) -> tuple[float, BaseException | None, Any]:
    source = Blocking()
    pipeline = Pipeline[int]().map(abs)
    if control == "cancel":
        threading.Timer(0.2, pipeline.cancel).start()
    started = time.monotonic()
    outcome: BaseException | None = None
    report = None
    try:
        if control in {"cancel", "run timeout"}:
            pipeline.run(source, timeout=0.2 if control == "run timeout" else None)
        elif control == "stream timeout":
            list(pipeline.stream(source, timeout=0.2))
        else:  # break
            with pipeline.stream(source) as outputs:
                for _ in outputs:
                    assert source.inside.wait(WAIT)
                    break
            report = outputs.report
    except PipelineCancelled as error:
        outcome = error
        report = error.report
    took = time.monotonic() - started
    source.release.set()
    return took, outcome, report


@pytest.mark.parametrize("control", ["cancel", "run timeout", "stream timeout", "break"])
def test_a_source_blocked_in_next_does_not_hold_up_a_cancellation(control: str) -> None:
    before = set(threading.enumerate())
    took, error, report = _ends_soon(control)
    assert took < 1.5  # the source blocks for up to WAIT seconds
    assert report is not None
    assert report.left_running == ("pipeline-source (inside the source iterator's __next__)",)
    assert report.balanced
    if error is not None:
        assert any("pipeline-source" in note for note in error.__notes__)
    # Left behind, the source's thread ends once next() returns.
    for thread in threading.enumerate():
        if thread not in before and thread.name == "pipeline-source":
            thread.join(WAIT)
    assert _new_threads(before) == []


# -- item 12: close() racing stream() in another thread ------------------------------------------


def test_close_racing_new_streams_in_another_thread_never_raises() -> None:
    rng = random.Random(12)
    for _ in range(100):
        pipeline = Pipeline[int]().map(abs)

        def churn(pipeline: Pipeline[int, int] = pipeline) -> None:
            while True:
                try:
                    pipeline.stream([1])
                except PipelineStateError:
                    return

        churner = Join(churn, name="test-churn")
        time.sleep(rng.random() / 1000)
        pipeline.close()
        churner.join()


# -- timeout=0: one meaning everywhere ----------------------------------------------------------


def test_timeout_zero_times_the_run_out_at_once_for_run_and_stream() -> None:
    with pytest.raises(PipelineTimeout) as caught:
        Pipeline[int]().map(abs).run([1, 2, 3], timeout=0)
    assert caught.value.report is not None
    assert caught.value.report.outputs == 0
    outputs = Pipeline[int]().map(abs).stream([1, 2, 3], timeout=0)
    received: list[int] = []
    with pytest.raises(PipelineTimeout):
        received.extend(outputs)
    assert received == []
