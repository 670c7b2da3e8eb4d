"""Pipeline: building, running, streaming, ordering, batching, backpressure, reports."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from itertools import count
from typing import Any, TypeVar

import pytest

from pipeline import (
    DEFAULT_MAXSIZE,
    DEFAULT_QUEUE_BYTES,
    MAX_WORKERS,
    MIN_DEFAULT_MAXSIZE,
    Pipeline,
    PipelineCancelled,
    PipelineReport,
    PipelineStage,
    PipelineStateError,
    PipelineTimeout,
    Retry,
    RunResult,
    SafeQueue,
    ShutDown,
    StageError,
    Stream,
)
from pipeline.stages import AddStage, FilterStage, MultiplyStage
from tests.helpers import WAIT, Join


def _pipeline_threads() -> list[threading.Thread]:
    """The live threads a pipeline run could own (source feeder or stage workers)."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and t.is_alive()]


def _tiny_sleep_for(item: int) -> None:
    """Simulated I/O: 0 to 1 ms, pseudo-random but fixed per item."""
    time.sleep(random.Random(item).random() / 1000)


T = TypeVar("T")


def _identity(x: T) -> T:
    return x


# -- builder validation -------------------------------------------------------------

Builder = Callable[[Pipeline[int, int]], object]

BAD_OPTIONS: list[tuple[str, Builder, type[Exception], str]] = [
    ("workers=0", lambda p: p.map(_identity, workers=0), ValueError, "'workers'"),
    ("workers=-1", lambda p: p.filter(bool, workers=-1), ValueError, "'workers'"),
    ("workers=str", lambda p: p.map(_identity, workers="2"), TypeError, "'workers'"),  # type: ignore[arg-type]
    ("workers=float", lambda p: p.each(_identity, workers=2.0), TypeError, "'workers'"),  # type: ignore[arg-type]
    ("workers=True", lambda p: p.map(_identity, workers=True), TypeError, "'workers'"),
    ("name=int", lambda p: p.map(_identity, name=3), TypeError, "'name'"),  # type: ignore[arg-type]
    ("ordered=int", lambda p: p.map(_identity, ordered=1), TypeError, "'ordered'"),  # type: ignore[arg-type]
    ("ordered=None", lambda p: p.flat_map(lambda x: [x], ordered=None), TypeError, "'ordered'"),  # type: ignore[arg-type]
    ("maxsize=0", lambda p: p.map(_identity, maxsize=0), ValueError, "'maxsize'"),
    ("maxsize=float", lambda p: p.map(_identity, maxsize=1.5), TypeError, "'maxsize'"),  # type: ignore[arg-type]
    ("on_error", lambda p: p.map(_identity, on_error="ignore"), ValueError, "'on_error'"),  # type: ignore[arg-type]
    ("retry=int", lambda p: p.map(_identity, retry=3), TypeError, "'retry'"),  # type: ignore[arg-type]
    ("add non-stage", lambda p: p.add(_identity), TypeError, "'stage'"),  # type: ignore[arg-type]
    ("add class", lambda p: p.add(MultiplyStage), TypeError, "'stage'"),  # type: ignore[arg-type]
    ("map non-callable", lambda p: p.map(5), TypeError, "'fn'"),  # type: ignore[arg-type]
    ("flat_map non-callable", lambda p: p.flat_map(5), TypeError, "'fn'"),  # type: ignore[arg-type]
    ("each non-callable", lambda p: p.each(5), TypeError, "'fn'"),  # type: ignore[arg-type]
    ("filter non-callable", lambda p: p.filter(5), TypeError, "'predicate'"),  # type: ignore[arg-type]
    ("batch size=0", lambda p: p.batch(0), ValueError, "'size'"),
    ("batch size=str", lambda p: p.batch("2"), TypeError, "'size'"),  # type: ignore[arg-type]
    ("batch max_wait<0", lambda p: p.batch(2, -0.5), ValueError, "'max_wait'"),
    ("batch max_wait=nan", lambda p: p.batch(2, float("nan")), ValueError, "'max_wait'"),
    ("batch max_wait=str", lambda p: p.batch(2, "1"), TypeError, "'max_wait'"),  # type: ignore[arg-type]
    ("batch maxsize=0", lambda p: p.batch(2, maxsize=0), ValueError, "'maxsize'"),
    ("batch name=int", lambda p: p.batch(2, name=1), TypeError, "'name'"),  # type: ignore[arg-type]
    ("add workers=0", lambda p: p.add(AddStage(), workers=0), ValueError, "'workers'"),
]


@pytest.mark.parametrize(
    ("build", "error", "parameter"),
    [pytest.param(b, e, n, id=i) for i, b, e, n in BAD_OPTIONS],
)
def test_a_bad_option_raises_at_the_builder_call_naming_the_parameter(
    build: Builder, error: type[Exception], parameter: str
) -> None:
    pipeline = Pipeline[int]().map(_identity, name="kept")
    with pytest.raises(error, match=parameter):
        build(pipeline)
    # the failed call added nothing, and the pipeline still works
    assert pipeline.stage_names == ("kept",)
    assert pipeline.run([1, 2]).outputs == [1, 2]


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-3, ValueError), ("8", TypeError), (True, TypeError)]
)
def test_pipeline_maxsize_is_validated(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="'maxsize'"):
        Pipeline[int](maxsize=value)  # type: ignore[arg-type]


def test_a_non_iterable_source_raises_type_error_naming_source() -> None:
    pipeline = Pipeline[int]().map(_identity)
    with pytest.raises(TypeError, match="'source'"):
        pipeline.run(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'source'"):
        pipeline.stream(None)  # type: ignore[arg-type]
    assert pipeline.run([1]).outputs == [1]  # a rejected source did not start anything


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), ("1", TypeError)])
def test_a_bad_timeout_raises_naming_timeout(value: object, error: type[Exception]) -> None:
    pipeline = Pipeline[int]().map(_identity)
    with pytest.raises(error, match="'timeout'"):
        pipeline.run([1], timeout=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="'timeout'"):
        pipeline.stream([1], timeout=value)  # type: ignore[arg-type]


ADDERS: list[tuple[str, Builder]] = [
    ("add", lambda p: p.add(AddStage())),
    ("map", lambda p: p.map(_identity)),
    ("filter", lambda p: p.filter(bool)),
    ("flat_map", lambda p: p.flat_map(lambda x: [x])),
    ("each", lambda p: p.each(_identity)),
    ("batch", lambda p: p.batch(2)),
]


@pytest.mark.parametrize("adder", [pytest.param(a, id=i) for i, a in ADDERS])
def test_adding_a_stage_after_a_run_raises_pipeline_state_error(adder: Builder) -> None:
    pipeline = Pipeline[int]().map(_identity)
    pipeline.run([1])
    with pytest.raises(PipelineStateError):
        adder(pipeline)
    assert pipeline.stage_names == ("_identity",)


@pytest.mark.parametrize("adder", [pytest.param(a, id=i) for i, a in ADDERS])
def test_adding_a_stage_once_a_stream_was_opened_raises_pipeline_state_error(
    adder: Builder,
) -> None:
    pipeline = Pipeline[int]().map(_identity)
    with pipeline.stream(count()) as outputs:
        assert next(outputs) == 0
        with pytest.raises(PipelineStateError):
            adder(pipeline)


def test_running_a_closed_pipeline_raises_pipeline_state_error() -> None:
    pipeline = Pipeline[int]().map(_identity)
    pipeline.close()
    with pytest.raises(PipelineStateError):
        pipeline.run([1])
    with pytest.raises(PipelineStateError):
        pipeline.stream([1])
    with pytest.raises(PipelineStateError):
        pipeline.map(_identity)


def test_duplicate_stage_names_get_numbered_suffixes() -> None:
    pipeline = (
        Pipeline[int]()
        .map(_identity, name="step")
        .map(_identity, name="step")
        .map(_identity, name="step")
        .add(AddStage())
        .add(AddStage())
        .batch(1)
        .batch(1)
    )
    assert pipeline.stage_names == (
        "step",
        "step #2",
        "step #3",
        "AddStage",
        "AddStage #2",
        "batch",
        "batch #2",
    )
    report = pipeline.run([1]).report
    assert [s.name for s in report.stages] == list(pipeline.stage_names)


def test_builder_methods_return_the_same_pipeline() -> None:
    pipeline = Pipeline[int]()
    assert pipeline.map(_identity) is pipeline
    assert pipeline.add(AddStage()) is pipeline
    assert pipeline.filter(bool) is pipeline
    assert pipeline.each(_identity) is pipeline
    assert pipeline.flat_map(lambda x: [x]) is pipeline
    batched: object = pipeline.batch(2)
    assert batched is pipeline
    assert (
        repr(pipeline)
        == "<Pipeline _identity -> AddStage -> bool -> _identity #2 -> <lambda> -> batch>"
    )


def test_function_stages_are_named_after_the_function() -> None:
    def double(x: int) -> int:
        return 2 * x

    pipeline = Pipeline[int]().map(double).filter(bool).map(lambda x: x)
    assert pipeline.stage_names == ("double", "bool", "<lambda>")


# -- run and stream basics --------------------------------------------------------


def test_a_pipeline_without_stages_passes_items_through() -> None:
    result = Pipeline[int]().run([3, 1, 2])
    assert result.outputs == [3, 1, 2]
    assert result.report.status == "completed"
    assert result.report.stages == ()


def test_run_returns_outputs_in_order_and_a_completed_report() -> None:
    result = Pipeline[int]().map(lambda x: x * 2).filter(lambda x: x % 3 != 0).run(range(10))
    assert isinstance(result, RunResult)
    assert result.outputs == [2, 4, 8, 10, 14, 16]
    assert result.report.status == "completed"
    assert result.report.balanced


def test_run_on_an_empty_source_returns_nothing() -> None:
    result = Pipeline[int]().map(_identity).batch(3).run([])
    assert result.outputs == []
    assert result.report.items_read == 0
    assert result.report.status == "completed"


@pytest.mark.parametrize(
    "source",
    [
        [1, 2, 3],
        (1, 2, 3),
        range(1, 4),
        {1: "a", 2: "b", 3: "c"},
        iter([1, 2, 3]),
    ],
    ids=["list", "tuple", "range", "dict", "iterator"],
)
def test_any_iterable_is_a_source(source: Any) -> None:
    assert Pipeline[int]().map(lambda x: x * 10).run(source).outputs == [10, 20, 30]


@pytest.mark.parametrize("workers", [1, 2])  # read by the worker, or by a feeder
@pytest.mark.parametrize("kind", [list, tuple, range])
def test_a_big_sequence_source_is_read_whole_and_in_order(kind: type, workers: int) -> None:
    size = 3 * DEFAULT_MAXSIZE + 5  # read in several chunks, the last one short
    source = kind(range(size)) if kind is not range else range(size)
    result = Pipeline[int]().map(_identity, workers=workers).run(source)
    assert result.outputs == list(range(size))
    assert result.report.items_read == size


class _Squares(list[int]):
    """A list subclass that iterates differently from how it slices."""

    def __iter__(self) -> Iterator[int]:
        return (x * x for x in super().__iter__())


def test_a_list_subclass_source_is_read_through_its_own_iterator() -> None:
    assert Pipeline[int]().map(_identity).run(_Squares([1, 2, 3])).outputs == [1, 4, 9]


def test_a_generator_source_is_read_lazily_by_the_run() -> None:
    def numbers() -> Iterator[int]:
        yield from range(5)

    assert Pipeline[int]().map(lambda x: -x).run(numbers()).outputs == [0, -1, -2, -3, -4]


def test_run_ends_every_thread_it_started() -> None:
    before = set(threading.enumerate())
    Pipeline[int]().map(_identity, workers=4).filter(bool, workers=2).run(range(1000))
    assert [t for t in threading.enumerate() if t not in before] == []


def test_stream_yields_the_same_outputs_as_run() -> None:
    pipeline = Pipeline[int]().map(lambda x: x + 1, workers=3).filter(lambda x: x % 2 == 0)
    expected = pipeline.run(range(500)).outputs
    with pipeline.stream(range(500)) as outputs:
        assert isinstance(outputs, Stream)
        assert list(outputs) == expected


def _report_of(stream: Stream[Any]) -> PipelineReport | None:
    return stream.report


def test_stream_report_is_set_once_the_run_ended() -> None:
    outputs = Pipeline[int]().map(_identity).stream(range(3))
    assert _report_of(outputs) is None
    assert next(outputs) == 0
    assert _report_of(outputs) is None
    assert list(outputs) == [1, 2]
    report = _report_of(outputs)
    assert report is not None
    assert report.status == "completed"
    assert (report.items_read, report.outputs) == (3, 3)


def test_stream_starts_no_thread_before_the_first_next() -> None:
    before = set(threading.enumerate())
    outputs = Pipeline[int]().map(_identity).stream(count())
    assert set(threading.enumerate()) == before
    assert next(outputs) == 0
    names = {t.name for t in threading.enumerate() if t not in before}
    assert {"pipeline-source", "_identity-1"} <= names
    outputs.close()
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []


def test_closing_a_stream_that_never_started_starts_nothing() -> None:
    read: list[int] = []

    def source() -> Iterator[int]:
        read.append(1)
        yield 1

    outputs = Pipeline[int]().map(_identity).stream(source())
    outputs.close()
    outputs.close()  # idempotent
    assert read == []
    with pytest.raises(StopIteration):
        next(outputs)


def test_breaking_out_of_a_for_loop_over_an_infinite_stream_joins_every_thread() -> None:
    before = set(threading.enumerate())
    pipeline = Pipeline[int]().map(lambda x: x * 2, workers=3).filter(lambda x: x % 3 == 0)
    taken: list[int] = []
    for item in pipeline.stream(count()):
        taken.append(item)
        if len(taken) == 5:
            break
    # no close() call and no with block: dropping the stream closed it
    assert [t.name for t in threading.enumerate() if t not in before and t.is_alive()] == []
    assert taken == [0, 6, 12, 18, 24]


def test_stream_close_stops_the_run_and_reports_closed() -> None:
    pipeline = Pipeline[int]().map(_identity, workers=2)
    outputs = pipeline.stream(count())
    assert [next(outputs) for _ in range(10)] == list(range(10))
    outputs.close()
    report = outputs.report
    assert report is not None
    assert report.status == "closed"
    assert report.balanced
    assert report.outputs == 10
    assert report.items_read >= 10
    with pytest.raises(StopIteration):
        next(outputs)
    outputs.close()  # idempotent
    assert [t for t in _pipeline_threads() if t.name.startswith("_identity")] == []


def test_leaving_a_stream_with_block_closes_it() -> None:
    with Pipeline[int]().map(_identity).stream(count()) as outputs:
        assert next(outputs) == 0
    assert outputs.report is not None
    assert outputs.report.status == "closed"
    assert outputs.report.balanced


def test_leaving_a_pipeline_with_block_closes_open_streams_and_refuses_runs() -> None:
    with Pipeline[int]().map(_identity, workers=2) as pipeline:
        outputs = pipeline.stream(count())
        assert next(outputs) == 0
    report = outputs.report
    assert report is not None  # closed, and its threads joined, by the with block
    assert report.status in {"cancelled", "closed"}  # close() cancels, then closes streams
    assert report.balanced
    with pytest.raises(StopIteration):
        next(outputs)
    with pytest.raises(PipelineStateError):
        pipeline.run([1])


def test_close_cancels_a_run_going_on_in_another_thread() -> None:
    entered = threading.Event()

    def mark(x: int) -> int:
        entered.set()
        time.sleep(0.001)  # simulated work
        return x

    pipeline = Pipeline[int]().map(mark)
    runner = Join(lambda: pipeline.run(count()))
    assert entered.wait(WAIT)
    pipeline.close()
    with pytest.raises(PipelineCancelled) as caught:
        runner.join()
    assert caught.value.report is not None
    assert caught.value.report.status == "cancelled"
    assert caught.value.report.balanced


def test_a_pipeline_can_run_many_times_independently() -> None:
    pipeline = Pipeline[int]().map(lambda x: x + 1, workers=2).filter(lambda x: x % 2 == 1)
    first = pipeline.run(range(10))
    second = pipeline.run(range(4))
    with pipeline.stream(range(6)) as outputs:
        third = list(outputs)
    assert first.outputs == [1, 3, 5, 7, 9]
    assert second.outputs == [1, 3]
    assert third == [1, 3, 5]
    assert first.report.items_read == 10
    assert second.report.items_read == 4
    assert second.report.stages[0].arrived == 4


def test_concurrent_runs_of_one_pipeline_are_independent() -> None:
    pipeline = Pipeline[int]().map(lambda x: x * 3, workers=2).filter(lambda x: x % 2 == 0)

    def run_block(k: int) -> Callable[[], RunResult[int]]:
        return lambda: pipeline.run(range(k * 1000, (k + 1) * 1000))

    runners = [Join(run_block(k)) for k in range(4)]
    results = [runner.join() for runner in runners]
    for k, result in enumerate(results):
        assert isinstance(result, RunResult)
        expected = [x * 3 for x in range(k * 1000, (k + 1) * 1000) if x * 3 % 2 == 0]
        assert result.outputs == expected
        assert result.report.items_read == 1000
        assert result.report.balanced


def test_a_stream_and_a_run_of_one_pipeline_can_interleave() -> None:
    pipeline = Pipeline[int]().map(lambda x: x + 100)
    with pipeline.stream(range(5)) as outputs:
        assert next(outputs) == 100
        assert pipeline.run([1, 2]).outputs == [101, 102]
        assert list(outputs) == [101, 102, 103, 104]


# -- ordering -----------------------------------------------------------------------


def test_ordered_multi_worker_stage_emits_in_input_order() -> None:
    def work(x: int) -> int:
        _tiny_sleep_for(x)
        return x

    result = Pipeline[int]().map(work, workers=4).map(work, workers=3).run(range(300))
    assert result.outputs == list(range(300))


def test_ordered_stage_holds_back_a_later_item_that_finished_first() -> None:
    second_done = threading.Event()

    def work(x: int) -> int:
        if x == 0:
            assert second_done.wait(WAIT)  # item 0 finishes after item 1
        elif x == 1:
            second_done.set()
        return x

    assert Pipeline[int]().map(work, workers=2).run(range(4)).outputs == [0, 1, 2, 3]


def test_unordered_stage_emits_items_as_they_finish() -> None:
    first_seen = threading.Event()

    def work(x: int) -> int:
        if x == 0:
            assert first_seen.wait(WAIT)  # item 0 waits until item 1 reached the caller
        return x

    pipeline = Pipeline[int]().map(work, workers=2, ordered=False)
    with pipeline.stream(range(2)) as outputs:
        assert next(outputs) == 1
        first_seen.set()
        assert list(outputs) == [0]


def test_unordered_multi_worker_stage_emits_the_same_multiset() -> None:
    def work(x: int) -> int:
        _tiny_sleep_for(x)
        return x % 17

    source = list(range(300))
    result = Pipeline[int]().map(work, workers=4, ordered=False).run(source)
    assert Counter(result.outputs) == Counter(x % 17 for x in source)


def test_ordered_filter_and_flat_map_with_several_workers_keep_order() -> None:
    def spread(x: int) -> list[int]:
        _tiny_sleep_for(x)
        return [x] * (x % 3)

    result = (
        Pipeline[int]()
        .filter(lambda x: x % 5 != 0, workers=3)
        .flat_map(spread, workers=4)
        .run(range(200))
    )
    assert result.outputs == [x for x in range(200) if x % 5 != 0 for _ in range(x % 3)]


# -- batch --------------------------------------------------------------------------


def test_batch_groups_items_into_lists_of_size_and_flushes_the_rest() -> None:
    assert Pipeline[int]().batch(3).run(range(10)).outputs == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
        [9],
    ]


def test_batch_emits_no_empty_list() -> None:
    assert Pipeline[int]().batch(3).run([]).outputs == []
    assert Pipeline[int]().batch(3).run(range(6)).outputs == [[0, 1, 2], [3, 4, 5]]
    assert Pipeline[int]().filter(lambda x: False).batch(2).run(range(9)).outputs == []


def test_batch_of_one_wraps_each_item() -> None:
    assert Pipeline[int]().batch(1).run([5, 6]).outputs == [[5], [6]]


def test_batch_without_max_wait_waits_for_size_items_or_the_end() -> None:
    # The source pauses after two items; without max_wait nothing is emitted
    # until the third item or the end of the source.
    resume = threading.Event()
    consumer_waiting = threading.Event()

    def source() -> Iterator[int]:
        yield 0
        yield 1
        consumer_waiting.wait(WAIT)
        resume.set()
        yield 2

    with Pipeline[int]().batch(3).stream(source()) as outputs:
        consumer_waiting.set()
        first = next(outputs)
        assert resume.is_set()  # the first list needed the third item
        assert first == [0, 1, 2]
        assert list(outputs) == []


def test_batch_max_wait_flushes_a_partial_list_while_the_source_blocks() -> None:
    resume = threading.Event()
    resumed_in_time: list[bool] = []
    started = time.monotonic()

    def source() -> Iterator[int]:
        yield 0
        yield 1
        resumed_in_time.append(resume.wait(WAIT))
        yield 2
        yield 3

    max_wait = 0.05
    with Pipeline[int]().batch(10, max_wait).stream(source()) as outputs:
        first = next(outputs)  # can only come from the max_wait flush
        elapsed = time.monotonic() - started
        resume.set()
        rest = list(outputs)
    assert first == [0, 1]
    assert elapsed >= max_wait
    assert rest == [[2, 3]]
    assert resumed_in_time == [True]


def test_batch_emits_at_size_before_max_wait() -> None:
    started = time.monotonic()
    outputs = Pipeline[int]().batch(2, max_wait=WAIT).run(range(5)).outputs
    assert outputs == [[0, 1], [2, 3], [4]]
    assert time.monotonic() - started < WAIT / 2


def test_batch_report_counts_items_in_and_lists_out() -> None:
    report = Pipeline[int]().batch(4).run(range(10)).report
    stage = report.stages[0]
    assert (stage.name, stage.workers) == ("batch", 1)
    assert (stage.arrived, stage.completed, stage.emitted, stage.dropped) == (10, 10, 3, 0)
    assert report.outputs == 3
    assert report.created == -7
    assert report.balanced


def test_batch_then_map_sees_the_lists() -> None:
    result = Pipeline[int]().batch(2, name="pairs").map(sum).run(range(7))
    assert result.outputs == [1, 5, 9, 6]
    assert result.report.stages[0].name == "pairs"


def test_items_reach_the_consumer_while_the_source_blocks_for_the_next_one() -> None:
    # A live source (a socket, a queue of events) pauses between items: what
    # it has produced must not wait for what it has not.
    resume = threading.Event()
    resumed_in_time: list[bool] = []

    def source() -> Iterator[int]:
        yield from range(100)
        resumed_in_time.append(resume.wait(WAIT / 5))
        yield 100

    with Pipeline[int]().map(_identity).stream(source()) as outputs:
        first = [next(outputs) for _ in range(100)]
        resume.set()
        rest = list(outputs)
    assert first == list(range(100))
    assert rest == [100]
    assert resumed_in_time == [True], "item 99 was delivered only after the source resumed"


# -- backpressure -------------------------------------------------------------------


def test_a_stalled_last_stage_bounds_how_far_the_source_is_read_ahead() -> None:
    maxsize = 4
    # Items can be: in the feeder's hands (at most what fits its queue), in
    # each stage's input queue (maxsize), in each worker's hands (a batch is
    # taken from the input queue, so at most maxsize). Two one-worker stages:
    bound = maxsize + 2 * (maxsize + maxsize)
    # Certainly reached once everything upstream of the stalled worker is
    # full: its one item, queue 2 full, one item held by stage 1, queue 1
    # full, one item held by the feeder.
    floor = 1 + maxsize + 1 + maxsize + 1
    gate = threading.Event()
    reached_floor = threading.Event()
    overran = threading.Event()
    read = 0

    def source() -> Iterator[int]:
        nonlocal read
        for item in count():
            read += 1
            if read >= floor:
                reached_floor.set()
            if read > bound:
                overran.set()
            yield item

    def stalled(x: int) -> int:
        gate.wait(WAIT)
        return x

    pipeline = Pipeline[int](maxsize=maxsize).map(lambda x: x + 1).map(stalled)
    with pipeline.stream(source()) as outputs:
        consumer = Join(lambda: next(outputs))
        try:
            assert reached_floor.wait(WAIT), f"backpressure never built up: read {read}"
            # Nothing downstream moves, so reading must stop at the bound.
            assert not overran.wait(0.3), f"read {read} items ahead, bound {bound}"
        finally:
            gate.set()
            assert consumer.join() == 1


def test_a_slow_consumer_bounds_how_far_the_source_is_read_ahead() -> None:
    maxsize = 8
    read = 0
    peak_lead = 0
    consumed = 0

    def source() -> Iterator[int]:
        nonlocal read, peak_lead
        for item in range(2000):
            read += 1
            peak_lead = max(peak_lead, read - consumed)
            yield item

    workers = 2
    pipeline = Pipeline[int](maxsize=maxsize).map(lambda x: x, workers=workers)
    # Where items read but not yet consumed can be, each place holding at most
    # maxsize items: the feeder's chunk, the stage's input queue, the batches
    # of the ordered stage (parked in its reorder window of 2 * workers
    # batches, or in a worker's hands), the output queue, and the batch the
    # consumer's stream took from it.
    bound = maxsize * (1 + 1 + (2 * workers + workers) + 1 + 1)
    with pipeline.stream(source()) as outputs:
        for _ in outputs:
            consumed += 1
            if consumed % 50 == 0:
                time.sleep(0.001)  # the consumer's simulated work
    assert consumed == 2000
    assert peak_lead <= bound, f"source read {peak_lead} items ahead of the consumer"


def test_a_stream_of_an_infinite_source_keeps_memory_bounded() -> None:
    pipeline = Pipeline[int](maxsize=16).map(lambda x: x * 2, workers=2)
    with pipeline.stream(count()) as outputs:
        for item in outputs:
            if item >= 20_000:
                break
    report = outputs.report
    assert report is not None
    for stage in report.stages:
        assert stage.queue.peak_size <= 16
        assert stage.queue.maxsize == 16


def _queue_bounds(pipeline: Pipeline[Any, Any], items: list[Any]) -> list[int]:
    """Stream ``items`` through ``pipeline``; return each stage's input queue bound."""
    with pipeline.stream(iter(items)) as outputs:  # an iterator: every stage has a queue
        assert list(outputs) == items
    assert outputs.report is not None
    return [stage.queue.maxsize for stage in outputs.report.stages]


def test_without_a_maxsize_small_items_get_the_default_bound() -> None:
    bounds = _queue_bounds(Pipeline[int]().map(_identity).map(_identity), list(range(100)))
    assert bounds == [DEFAULT_MAXSIZE, DEFAULT_MAXSIZE]


def test_without_a_maxsize_big_items_get_a_bound_of_about_the_default_bytes() -> None:
    blob = bytes(100_000)
    expected = DEFAULT_QUEUE_BYTES // sys.getsizeof(blob)
    assert MIN_DEFAULT_MAXSIZE < expected < DEFAULT_MAXSIZE
    assert _queue_bounds(Pipeline[bytes]().map(_identity), [blob] * 5) == [expected]


def test_without_a_maxsize_huge_items_still_get_the_least_bound() -> None:
    blob = bytes(DEFAULT_QUEUE_BYTES)
    assert _queue_bounds(Pipeline[bytes]().map(_identity), [blob] * 3) == [MIN_DEFAULT_MAXSIZE]


def test_each_queue_takes_its_bound_from_its_own_first_item() -> None:
    blob = bytes(DEFAULT_QUEUE_BYTES // 100)
    pipeline = (
        Pipeline[int]()
        .map(_identity, name="ints")
        .map(lambda _: blob, name="blobs")
        .map(len, name="sizes")
    )
    with pipeline.stream(iter(range(10))) as outputs:
        assert list(outputs) == [len(blob)] * 10
    assert outputs.report is not None
    bounds = {stage.name: stage.queue.maxsize for stage in outputs.report.stages}
    assert bounds == {
        "ints": DEFAULT_MAXSIZE,
        "blobs": DEFAULT_MAXSIZE,  # fed ints by the stage before
        "sizes": DEFAULT_QUEUE_BYTES // sys.getsizeof(blob),
    }


def test_an_explicit_maxsize_is_kept_whatever_the_item_size() -> None:
    blob = bytes(DEFAULT_QUEUE_BYTES)
    assert _queue_bounds(Pipeline[bytes](maxsize=100).map(_identity), [blob] * 3) == [100]
    assert _queue_bounds(Pipeline[bytes]().map(_identity, maxsize=50), [blob] * 3) == [50]


class _Unsizable:
    def __sizeof__(self) -> int:
        raise RuntimeError("no size")


def test_an_item_whose_size_cannot_be_read_keeps_the_default_bound() -> None:
    items: list[Any] = [_Unsizable(), _Unsizable()]
    assert _queue_bounds(Pipeline[Any]().map(_identity), items) == [DEFAULT_MAXSIZE]


# -- reports ------------------------------------------------------------------------


def test_report_counts_every_item_of_a_completed_run() -> None:
    result = (
        Pipeline[int]()
        .map(lambda x: x * 2, name="double", workers=2)
        .filter(lambda x: x % 3 != 0, name="no-threes", maxsize=7)
        .run(range(10))
    )
    report = result.report
    assert report.status == "completed"
    assert report.items_read == 10
    assert report.outputs == len(result.outputs) == 6
    assert (report.dropped, report.failed, report.not_processed, report.created) == (4, 0, 0, 0)
    assert report.processed == 10
    assert report.balanced
    assert report.dead_letters == ()
    assert report.elapsed_seconds >= 0
    double, no_threes = report.stages
    assert (double.name, double.workers) == ("double", 2)
    assert (double.arrived, double.received, double.completed, double.emitted) == (10, 10, 10, 10)
    assert (double.dropped, double.failed, double.retried, double.not_processed) == (0, 0, 0, 0)
    assert (no_threes.name, no_threes.workers) == ("no-threes", 1)
    assert (no_threes.arrived, no_threes.completed, no_threes.emitted) == (10, 10, 6)
    assert no_threes.dropped == 4
    assert double.queue.maxsize == DEFAULT_MAXSIZE
    assert no_threes.queue.maxsize == 7
    assert no_threes.queue.puts == 10
    assert double.busy_seconds >= 0


def test_report_stage_identities_hold() -> None:
    report = (
        Pipeline[int]()
        .flat_map(lambda x: range(x % 4), workers=3)
        .filter(lambda x: x > 0)
        .batch(3)
        .map(len)
        .run(range(100))
        .report
    )
    assert report.balanced
    assert report.stages[0].arrived == report.items_read
    for before, after in zip(report.stages, report.stages[1:], strict=False):
        assert after.arrived == before.emitted
    for stage in report.stages:
        assert stage.arrived == stage.completed + stage.failed + stage.not_processed
        assert stage.received == stage.arrived
    assert report.outputs == report.stages[-1].emitted


def test_flat_map_creates_items_and_the_report_says_so() -> None:
    report = Pipeline[int]().flat_map(lambda x: [x] * x).run([0, 1, 2, 3]).report
    assert (report.items_read, report.outputs, report.dropped) == (4, 6, 1)
    assert report.created == 3
    assert report.balanced


def test_verification_report_summary_text() -> None:
    even = FilterStage[int](lambda x: x % 2 == 0)
    pipeline = Pipeline[int]().add(MultiplyStage()).add(AddStage()).add(even)
    summary = pipeline.run(range(1, 11)).report.summary()
    lines = summary.splitlines()
    assert lines[:5] == [
        "=== VERIFICATION REPORT ===",
        "Expected: 10",
        "Processed: 10",
        "Success: 10",
        "Failed: 0",
    ]
    assert lines[5].startswith("Status: completed in ")
    assert "=== STAGES ===" in lines
    time_title = next(i for i, line in enumerate(lines) if line.startswith("=== TIME ("))
    table = lines[lines.index("=== STAGES ===") + 1 : time_title - 1]
    assert table[0].split() == [
        "stage",
        "workers",
        "received",
        "emitted",
        "dropped",
        "failed",
        "retried",
        "unfinished",
        "busy",
        "s",
    ]
    assert [row.split()[:8] for row in table[1:]] == [
        ["MultiplyStage", "1", "10", "10", "0", "0", "0", "0"],
        ["AddStage", "1", "10", "10", "0", "0", "0", "0"],
        ["FilterStage", "1", "10", "10", "0", "0", "0", "0"],
    ]


def test_summary_says_what_a_fan_in_stage_did_with_no_negative_count() -> None:
    summary = Pipeline[int]().filter(lambda x: x > 2).batch(2).run(range(6)).report.summary()
    lines = summary.split("\n\n")[0].splitlines()
    assert lines[1:8] == [
        "Expected: 6",
        "Processed: 6",
        "Success: 3",
        "Failed: 0",
        "Filtered out: 3",
        "Stage 'batch' merged 3 items into 2",
        "Delivered: 2",
    ]
    assert "-" not in summary.split("=== STAGES ===")[0].replace("=== VERIFICATION REPORT ===", "")


def test_summary_of_fan_out_then_fan_in_counts_each_part_in_its_own_items() -> None:
    report = (
        Pipeline[int]()
        .flat_map(lambda x: range(x % 4), workers=3)
        .filter(lambda x: x > 0)
        .batch(3)
        .run(range(100))
        .report
    )
    lines = report.summary().split("\n\n")[0].splitlines()
    assert lines[1:10] == [
        "Expected: 100",
        "Processed: 100",
        "Success: 75",
        "Failed: 0",
        "Filtered out: 25",
        "Stage '<lambda>' split 75 items into 150",
        "  of those: filtered out 75",
        "Stage 'batch' merged 75 items into 25",
        "Delivered: 25",
    ]


def test_summary_of_a_failed_run_counts_the_failing_item_and_names_the_error() -> None:
    def fail_at_3(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(fail_at_3, name="m").run(range(1, 11))
    report = caught.value.report
    assert report is not None
    assert report.failed == report.stages[0].failed == 1
    assert report.processed + report.not_processed == 10
    lines = report.summary().split("\n\n")[0].splitlines()
    assert lines[1:6] == [
        "Expected: 10",
        f"Processed: {report.processed}",
        f"Success: {report.outputs}",
        "Failed: 1",
        f"Not processed: {report.not_processed}",
    ]
    error = "StageError: stage 'm' failed on item 3: ValueError('three')"
    assert f"Error: {error}" in lines
    assert report.to_dict()["error"] == error
    assert report.balanced


def test_summary_after_a_timeout_keeps_the_expected_length_and_says_how_much_was_read() -> None:
    with pytest.raises(PipelineTimeout) as caught:
        Pipeline[int]().each(lambda x: time.sleep(0.001)).run(range(10**6), timeout=0.05)
    report = caught.value.report
    assert report is not None
    assert 0 < report.items_read < 10**6
    lines = report.summary().split("\n\n")[0].splitlines()
    assert lines[1:4] == [
        "Expected: 1000000",
        f"Read: {report.items_read}",
        f"Not read: {10**6 - report.items_read}",
    ]
    assert "Error: PipelineTimeout: the run's timeout elapsed" in lines


def test_report_to_dict_round_trips_through_json() -> None:
    report = (
        Pipeline[int]()
        .map(lambda x: 10 // x, on_error="skip", name="invert")
        .filter(lambda x: x > 1)
        .run([0, 1, 2, 5, 20])
        .report
    )
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["status"] == "completed"
    assert data["items_read"] == 5
    assert data["outputs"] == report.outputs == 3
    assert data["failed"] == 1
    assert data["dropped"] == 1
    assert data["balanced"] is True
    assert [s["name"] for s in data["stages"]] == ["invert", "<lambda>"]
    assert data["stages"][0]["failed"] == 1
    (letter,) = data["dead_letters"]
    assert letter["stage"] == "invert"
    assert letter["item"] == "0"
    assert "ZeroDivisionError" in letter["exception"]
    assert letter["attempts"] == 1


def test_report_of_a_retried_stage_counts_retries() -> None:
    failed_once: set[int] = set()
    lock = threading.Lock()

    def flaky(x: int) -> int:
        with lock:
            if x not in failed_once:
                failed_once.add(x)
                raise ConnectionError(x)
        return x

    retry = Retry(attempts=2, backoff=0.0, jitter=0.0)
    report = Pipeline[int]().map(flaky, retry=retry, workers=2).run(range(5)).report
    assert report.stages[0].retried == 5
    assert report.outputs == 5
    assert report.to_dict()["stages"][0]["retried"] == 5


class _Sink(PipelineStage[int]):
    def process(self, item: int) -> int:
        return item


def test_report_stage_workers_and_names_match_the_options() -> None:
    report = Pipeline[int]().add(_Sink(), workers=3, name="sink").run(range(3)).report
    assert (report.stages[0].name, report.stages[0].workers) == ("sink", 3)


# -- a SafeQueue as the source --------------------------------------------------------


def test_a_safequeue_source_is_read_until_its_last_producer_closes() -> None:
    source = SafeQueue[int](maxsize=4)
    producer = source.producer()
    with Pipeline[int]().map(lambda x: x * 2, workers=2).stream(source) as outputs:
        producer.put(1)
        assert next(outputs) == 2  # a conversation: one item in, one out
        producer.put_many([2, 3])
        assert [next(outputs), next(outputs)] == [4, 6]
        producer.close()
        assert list(outputs) == []
    report = outputs.report
    assert report is not None
    assert report.status == "completed"
    assert (report.items_read, report.outputs) == (3, 3)
    assert report.balanced


def test_a_shut_down_safequeue_source_is_drained() -> None:
    source = SafeQueue[int]()
    source.put_many([1, 2, 3])
    source.shutdown()
    assert Pipeline[int]().map(lambda x: -x).run(source).outputs == [-1, -2, -3]
    empty = SafeQueue[int]()
    empty.put_many([7, 8])
    empty.shutdown()
    assert Pipeline[int]().run(empty).outputs == [7, 8]


def test_two_ordered_runs_sharing_a_safequeue_source_each_keep_their_items_in_order() -> None:
    # Each run numbers the batches it takes from the shared queue on its own.
    source = SafeQueue[int]()
    pipeline = Pipeline[int]().map(lambda x: x, workers=3)
    results: list[list[int]] = [[], []]

    def consume(number: int) -> None:
        results[number] = pipeline.run(source, timeout=WAIT).outputs

    runs = [Join(partial(consume, n), name=f"test-run-{n}") for n in range(2)]
    source.put_many(range(5000))
    source.shutdown()
    for run in runs:
        run.join()
    for outputs in results:
        assert outputs == sorted(outputs)
    assert sorted(results[0] + results[1]) == list(range(5000))


def test_closing_a_stream_shuts_its_safequeue_source_down() -> None:
    source = SafeQueue[int]()
    producer = source.producer()
    with Pipeline[int]().map(abs).stream(source) as outputs:
        producer.put(-5)
        assert next(outputs) == 5
    assert source.is_shutdown
    with pytest.raises(ShutDown):
        producer.put(1)
    assert outputs.report is not None
    assert outputs.report.status == "closed"
    assert outputs.report.balanced


# -- the books are counted, not derived ------------------------------------------------


class _CountedSource(list[int]):
    """A list subclass (so the run reads it through its iterator) that counts pulls."""

    pulled = 0

    def __iter__(self) -> Iterator[int]:
        for item in list.__iter__(self):
            self.pulled += 1
            yield item


def test_after_a_cancel_every_item_is_where_the_harness_counted_it() -> None:
    gate, inside = threading.Event(), threading.Event()
    finished: list[int] = []
    lock = threading.Lock()

    def hold_first(x: int) -> int:
        if x == 0:
            inside.set()
            gate.wait(WAIT)
        with lock:
            finished.append(x)
        return x

    source = _CountedSource(range(1000))
    pipeline = Pipeline[int]().map(hold_first, name="a", maxsize=4).map(abs, name="b", maxsize=4)

    def cancel() -> None:
        assert inside.wait(WAIT)
        pipeline.cancel()
        gate.set()

    canceller = Join(cancel, name="test-cancel")
    with pytest.raises(PipelineCancelled) as caught:
        pipeline.run(source)
    canceller.join()
    report = caught.value.report
    assert report is not None
    assert report.items_read == source.pulled  # counted where taken from the source
    assert report.outputs == 0  # run() raised: the caller received nothing
    a, b = report.stages
    assert a.completed == len(finished)
    assert a.not_processed == source.pulled - len(finished)  # in queue 0, in hand, refused
    assert b.arrived == a.emitted == len(finished)
    assert report.balanced


def test_balanced_is_false_when_an_item_is_missing_from_the_books() -> None:
    report = Pipeline[int]().map(abs).run(range(10)).report
    assert report.balanced
    stage = report.stages[0]
    lost = dataclasses.replace(report, stages=(dataclasses.replace(stage, completed=9, emitted=9),))
    assert not lost.balanced
    short = dataclasses.replace(report, outputs=9)
    assert not short.balanced


# -- builder: options, workers, filter(None), single-worker stages ---------------------


def test_a_misspelled_option_names_the_method_and_lists_the_options() -> None:
    with pytest.raises(TypeError) as caught:
        Pipeline[int]().map(abs, wrokers=3)  # type: ignore[call-arg]
    message = str(caught.value)
    assert message.startswith(
        "Pipeline.map() got an unknown option 'wrokers' (did you mean 'workers'?)"
    )
    assert "workers, name, ordered, maxsize, on_error, retry" in message
    assert "_append" not in message


@pytest.mark.parametrize("workers", [0, MAX_WORKERS + 1, 10**11])
def test_workers_out_of_range_is_refused_at_once(workers: int) -> None:
    with pytest.raises(ValueError, match=r"'workers' must be at (least|most)"):
        Pipeline[int]().map(abs, workers=workers)


def test_filter_none_keeps_true_items_as_the_builtin_filter() -> None:
    items = [0, 1, 2, 0, 3, "", "x", None]
    assert Pipeline[Any]().filter(None).run(items).outputs == list(filter(None, items))


def test_a_single_worker_stage_refuses_more_workers_at_add() -> None:
    class Tally(PipelineStage[int]):
        single_worker = True

        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def process(self, item: int) -> int:
            self.total += item
            return item

    with pytest.raises(ValueError, match="must run in one worker; got 'workers'=2"):
        Pipeline[int]().add(Tally(), workers=2)
    tally = Tally()
    Pipeline[int]().add(tally).run(range(5))
    assert tally.total == 10


def test_a_timeout_that_no_wait_can_take_is_refused() -> None:
    with pytest.raises(ValueError, match="'timeout' must be a finite"):
        Pipeline[int]().run([1], timeout=1e300)
    with pytest.raises(ValueError, match="'max_delay'"):
        Retry(max_delay=float("inf"))
