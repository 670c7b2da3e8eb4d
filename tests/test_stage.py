"""PipelineStage: return versus yield, None as data, hooks, worker copies, thread names."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline import Pipeline, PipelineCancelled, PipelineStage, StageError
from pipeline._executors import ThreadWorker
from pipeline._report import StageRecorder
from pipeline._worker import BatchRunner
from pipeline.stages import (
    AddStage,
    EachStage,
    FilterStage,
    FlatMapStage,
    MapStage,
    MultiplyStage,
)
from tests.helpers import WAIT


def _thread_name() -> str:
    return threading.current_thread().name


class Square(PipelineStage[int]):
    def process(self, item: int) -> int:
        return item * item


class Repeat(PipelineStage[int]):
    """Emit each item ``item`` times: zero, one or many outputs."""

    def process(self, item: int) -> Iterator[int]:
        for _ in range(item):
            yield item


class Recorder(PipelineStage[int]):
    """Record, per hook and per item, the thread that ran it."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []  # (what, thread name), shared by copies

    def _record(self, what: str) -> None:
        with self.lock:
            self.events.append((what, _thread_name()))

    def on_start(self) -> None:
        self._record("start")

    def process(self, item: int) -> int:
        self._record(f"item {item}")
        return item

    def on_stop(self) -> None:
        self._record("stop")


# -- return versus generator ------------------------------------------------------


def test_process_returning_a_value_emits_one_output_per_item() -> None:
    assert Pipeline[int]().add(Square()).run([1, 2, 3]).outputs == [1, 4, 9]


def test_generator_process_emits_zero_one_or_many_outputs_per_item() -> None:
    result = Pipeline[int]().add(Repeat()).run([0, 1, 3, 0, 2])
    assert result.outputs == [1, 3, 3, 3, 2, 2]
    stage = result.report.stages[0]
    assert (stage.completed, stage.emitted, stage.dropped) == (5, 6, 2)


def test_returned_list_is_one_output_not_many() -> None:
    class Pair(PipelineStage[int, list[int]]):
        def process(self, item: int) -> list[int]:
            return [item, item]

    assert Pipeline[int]().add(Pair()).run([1, 2]).outputs == [[1, 1], [2, 2]]


def test_none_returned_by_process_is_an_output() -> None:
    class Nothing(PipelineStage[int, None]):
        def process(self, item: int) -> None:
            return None

    result = Pipeline[int]().add(Nothing()).run([1, 2, 3])
    assert result.outputs == [None, None, None]
    assert result.report.outputs == 3
    assert result.report.dropped == 0


def test_none_yielded_by_a_generator_is_an_output() -> None:
    class YieldNone(PipelineStage[int, None]):
        def process(self, item: int) -> Iterator[None]:
            yield None

    assert Pipeline[int]().add(YieldNone()).run([1, 2]).outputs == [None, None]


def test_none_items_from_the_source_flow_through_every_stage() -> None:
    seen: list[int | None] = []
    result = (
        Pipeline[int | None]()
        .each(seen.append)
        .map(lambda x: x)
        .filter(lambda x: True)
        .flat_map(lambda x: [x])
        .run([None, 1, None])
    )
    assert result.outputs == [None, 1, None]
    assert seen == [None, 1, None]
    assert result.report.items_read == 3


# -- the class itself ---------------------------------------------------------------


def test_stage_without_process_cannot_be_instantiated() -> None:
    class Incomplete(PipelineStage[int]):
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


def test_stage_name_defaults_to_the_class_name() -> None:
    assert Square().name == "Square"
    assert Square(name="sq").name == "sq"
    assert repr(Square(name="sq")) == "<Square 'sq'>"


def test_stage_name_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="'name'"):
        Square(name=3)  # type: ignore[arg-type]


def test_process_can_be_called_directly_without_a_pipeline() -> None:
    assert Square().process(7) == 49
    assert list(Repeat().process(2)) == [2, 2]


# -- hooks and threads --------------------------------------------------------------


def test_hooks_and_process_run_in_the_stage_worker_thread() -> None:
    stage = Recorder(name="rec")
    Pipeline[int]().add(stage).run([1, 2])
    assert stage.events == [
        ("start", "rec-1"),
        ("item 1", "rec-1"),
        ("item 2", "rec-1"),
        ("stop", "rec-1"),
    ]


def test_on_start_runs_before_the_first_item_and_on_stop_after_the_last_in_each_worker() -> None:
    stage = Recorder(name="rec")
    Pipeline[int]().add(stage, workers=3).run(range(30))
    threads = {thread for _, thread in stage.events}
    assert threads <= {"rec-1", "rec-2", "rec-3"}
    for thread in threads:
        mine = [what for what, name in stage.events if name == thread]
        assert mine[0] == "start"
        assert mine[-1] == "stop"
        assert mine.count("start") == mine.count("stop") == 1
    # every worker starts and stops, even one that got no item
    starts = sorted(name for what, name in stage.events if what == "start")
    assert starts == ["rec-1", "rec-2", "rec-3"]
    items = sorted(int(what.split()[1]) for what, _ in stage.events if what.startswith("item"))
    assert items == list(range(30))


def test_hooks_run_on_an_empty_source() -> None:
    stage = Recorder(name="rec")
    assert Pipeline[int]().add(stage).run([]).outputs == []
    assert stage.events == [("start", "rec-1"), ("stop", "rec-1")]


def test_thread_names_are_stage_name_and_worker_number() -> None:
    names: set[str] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(2, timeout=WAIT)

    def record(_: int) -> None:
        with lock:
            names.add(_thread_name())

    def meet(_: int) -> None:
        barrier.wait()  # both workers of "meet" hold an item at once
        record(_)

    (
        Pipeline[int]()
        .each(record, name="first")
        .each(meet, workers=2, name="meet")
        .each(record, name="first")  # a duplicate name gets " #2"
        .run([1, 2])
    )
    assert names == {"first-1", "meet-1", "meet-2", "first #2-1"}


def test_the_source_is_read_in_the_pipeline_source_thread() -> None:
    readers: list[str] = []

    def source() -> Iterator[int]:
        for i in range(3):
            readers.append(_thread_name())
            yield i

    Pipeline[int]().map(lambda x: x).run(source())
    assert set(readers) == {"pipeline-source"}


def test_workers_of_a_stage_run_process_concurrently() -> None:
    # Each worker's first batch is one item; three items can only pass the
    # barrier if three workers are inside process() at once.
    barrier = threading.Barrier(3, timeout=WAIT)

    class Meet(PipelineStage[int]):
        def process(self, item: int) -> int:
            barrier.wait()
            return item

    assert sorted(Pipeline[int]().add(Meet(), workers=3).run([1, 2, 3]).outputs) == [1, 2, 3]


class _Overlaps(PipelineStage[int]):
    """Counts the calls of process() that began while another was still inside it."""

    def __init__(self) -> None:
        super().__init__()
        # Objects made here are shared by the workers' copies (an int counter
        # would not be: `self.n += 1` on a copy counts into that copy).
        self.inside = threading.Lock()
        self.overlapped: list[int] = []

    @property
    def overlaps(self) -> int:
        return len(self.overlapped)

    def process(self, item: int) -> int:
        if not self.inside.acquire(blocking=False):
            self.overlapped.append(item)
            return item
        try:
            time.sleep(0.0002)  # held across a thread switch: another call would see it
        finally:
            self.inside.release()
        return item


def test_a_single_worker_calls_process_one_item_at_a_time() -> None:
    alone = _Overlaps()
    Pipeline[int]().add(alone).run(range(300))
    assert alone.overlaps == 0
    # The detector itself works: four workers do overlap.
    crowd = _Overlaps()
    Pipeline[int]().add(crowd, workers=4).run(range(300))
    assert crowd.overlaps > 0


def test_first_worker_uses_the_stage_itself_and_the_others_shallow_copies() -> None:
    selves: list[PipelineStage[int]] = []
    lock = threading.Lock()

    class Who(PipelineStage[int]):
        def __init__(self) -> None:
            super().__init__()
            self.shared: list[int] = []

        def on_start(self) -> None:
            with lock:
                selves.append(self)

        def process(self, item: int) -> int:
            with lock:
                self.shared.append(item)
            return item

    stage = Who()
    Pipeline[int]().add(stage, workers=4).run(range(40))
    assert len(selves) == 4
    assert len({id(s) for s in selves}) == 4
    assert sum(1 for s in selves if s is stage) == 1
    # shallow copies: what __init__ created is shared by every worker
    assert all(isinstance(s, Who) and s.shared is stage.shared for s in selves)
    assert sorted(stage.shared) == list(range(40))


def test_attributes_assigned_in_on_start_are_per_worker() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)

    class Tagged(PipelineStage[int, tuple[str, str]]):
        tag = ""

        def on_start(self) -> None:
            self.tag = _thread_name()

        def process(self, item: int) -> tuple[str, str]:
            barrier.wait()  # all three workers have run on_start and hold an item
            return (self.tag, _thread_name())

    outputs = Pipeline[int]().add(Tagged(name="t"), workers=3).run([1, 2, 3]).outputs
    assert sorted(outputs) == [("t-1", "t-1"), ("t-2", "t-2"), ("t-3", "t-3")]


def test_hooks_run_again_when_the_stage_is_reused_in_a_second_run() -> None:
    stage = Recorder(name="rec")
    pipeline = Pipeline[int]().add(stage)
    pipeline.run([1])
    pipeline.run([2])
    whats = [what for what, _ in stage.events]
    assert whats == ["start", "item 1", "stop", "start", "item 2", "stop"]


# -- on_stop on every path ----------------------------------------------------------


class StopCounter(PipelineStage[int]):
    """Count on_start and on_stop calls; optionally fail on one item."""

    def __init__(self, *, fail_on: int | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.fail_on = fail_on
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.stopped: list[str] = []

    def on_start(self) -> None:
        with self.lock:
            self.started.append(_thread_name())

    def process(self, item: int) -> int:
        if item == self.fail_on:
            raise ValueError(f"bad item {item}")
        return item

    def on_stop(self) -> None:
        with self.lock:
            self.stopped.append(_thread_name())


def test_on_stop_runs_after_a_normal_end() -> None:
    stage = StopCounter(name="s")
    Pipeline[int]().add(stage, workers=2).run(range(10))
    assert sorted(stage.stopped) == ["s-1", "s-2"]


def test_on_stop_runs_in_every_worker_when_process_raises() -> None:
    stage = StopCounter(fail_on=5, name="s")
    with pytest.raises(StageError):
        Pipeline[int]().add(stage, workers=3).run(range(100))
    assert sorted(stage.stopped) == sorted(stage.started) == ["s-1", "s-2", "s-3"]


def test_on_stop_runs_when_another_stage_fails() -> None:
    healthy = StopCounter(name="healthy")
    with pytest.raises(StageError) as caught:
        (
            Pipeline[int]()
            .add(healthy, workers=2)
            .add(StopCounter(fail_on=3, name="broken"))
            .run(range(50))
        )
    assert caught.value.stage == "broken"
    assert sorted(healthy.stopped) == ["healthy-1", "healthy-2"]


def test_on_stop_runs_when_the_run_is_cancelled() -> None:
    entered = threading.Event()
    release = threading.Event()

    class Blocking(StopCounter):
        def process(self, item: int) -> int:
            entered.set()
            release.wait(WAIT)
            return item

    stage = Blocking(name="b")
    pipeline = Pipeline[int]().add(stage)

    def cancel_when_blocked() -> None:
        entered.wait(WAIT)
        pipeline.cancel()
        release.set()

    canceller = threading.Thread(target=cancel_when_blocked)
    canceller.start()
    try:
        with pytest.raises(PipelineCancelled):
            pipeline.run(range(1000))
    finally:
        release.set()
        canceller.join(WAIT)
    assert not canceller.is_alive()
    assert stage.stopped == ["b-1"]


def test_on_stop_runs_when_a_stream_is_closed_early() -> None:
    stage = StopCounter(name="s")
    pipeline = Pipeline[int]().add(stage, workers=2)

    def endless() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    with pipeline.stream(endless()) as outputs:
        assert next(outputs) == 0
    assert sorted(stage.stopped) == ["s-1", "s-2"]


def test_on_stop_is_skipped_for_a_worker_whose_on_start_raised() -> None:
    class BadStart(StopCounter):
        def on_start(self) -> None:
            raise OSError("cannot open")

    stage = BadStart(name="bad")
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(stage).run([1, 2])
    assert caught.value.where == "on_start"
    assert stage.stopped == []


# -- the stages in the box ----------------------------------------------------------


def test_multiply_stage_doubles_by_default_and_takes_a_factor() -> None:
    assert Pipeline[int]().add(MultiplyStage()).run([1, 2, 3]).outputs == [2, 4, 6]
    assert Pipeline[int]().add(MultiplyStage(factor=5)).run([1, 2]).outputs == [5, 10]
    assert MultiplyStage().name == "MultiplyStage"


def test_add_stage_adds_ten_by_default_and_takes_an_amount() -> None:
    assert Pipeline[int]().add(AddStage()).run([1, -10]).outputs == [11, 0]
    assert Pipeline[int]().add(AddStage(amount=-1)).run([1]).outputs == [0]


def test_filter_stage_without_a_predicate_keeps_true_items_as_the_builtin_filter() -> None:
    items = [0, 1, "", "a", None, [], [0], 2.5, 0.0]
    result = Pipeline[object]().add(FilterStage()).run(items)
    assert result.outputs == list(filter(None, items))
    assert result.report.dropped == 5


def test_filter_stage_takes_a_predicate() -> None:
    stage = FilterStage[str](str.isdigit)
    assert Pipeline[str]().add(stage).run(["1", "a", "22"]).outputs == ["1", "22"]


def test_demo_pipeline_multiply_add_keep_even() -> None:
    even = FilterStage[int](lambda x: x % 2 == 0)
    pipeline = Pipeline[int]().add(MultiplyStage()).add(AddStage(3)).add(even)
    assert pipeline.run(range(1, 11)).outputs == []
    pipeline = Pipeline[int]().add(MultiplyStage()).add(AddStage()).add(FilterStage())
    result = pipeline.run(range(1, 11))
    assert result.outputs == [2 * i + 10 for i in range(1, 11)]
    assert [s.name for s in result.report.stages] == ["MultiplyStage", "AddStage", "FilterStage"]


def test_map_stage_applies_its_function_and_is_named_after_it() -> None:
    stage = MapStage[int, str](hex)
    assert stage.name == "hex"
    assert Pipeline[int]().add(stage).run([10, 255]).outputs == ["0xa", "0xff"]


def test_flat_map_stage_emits_every_element() -> None:
    stage = FlatMapStage[str, str](str.split)
    assert Pipeline[str]().add(stage).run(["a b", "", "c"]).outputs == ["a", "b", "c"]


def test_each_stage_passes_items_on_unchanged() -> None:
    seen: list[int] = []
    stage = EachStage[int](seen.append)
    assert Pipeline[int]().add(stage).run([3, 1]).outputs == [3, 1]
    assert seen == [3, 1]


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: MapStage(5), "'fn'"),  # type: ignore[arg-type]
        (lambda: FlatMapStage(5), "'fn'"),  # type: ignore[arg-type]
        (lambda: EachStage(5), "'fn'"),  # type: ignore[arg-type]
        (lambda: FilterStage(5), "'predicate'"),  # type: ignore[arg-type]
    ],
)
def test_function_stages_reject_a_non_callable(make: Callable[[], object], parameter: str) -> None:
    with pytest.raises(TypeError, match=parameter):
        make()


def test_subclass_overriding_process_of_a_function_stage_is_honoured() -> None:
    class Loud(MapStage[str, str]):
        def process(self, item: str) -> str:
            return super().process(item) + "!"

    class Evens(FilterStage[int]):
        def process(self, item: int) -> Iterator[int]:
            yield from super().process(item)
            yield -1

    assert Pipeline[str]().add(Loud(str.upper)).run(["a"]).outputs == ["A!"]
    even = Evens(lambda x: x % 2 == 0)
    assert Pipeline[int]().add(even).run([1, 2]).outputs == [-1, 2, -1]


# -- the batch runner ---------------------------------------------------------------


class _Supervisor:
    cancelled = False

    def __init__(self) -> None:
        self.errors: list[StageError] = []

    def fail(self, error: StageError) -> None:
        self.errors.append(error)

    def pause(self, seconds: float) -> bool:
        return True


def _run_filter_batch(
    predicate: Callable[[int], object], batch: list[int]
) -> tuple[list[int], StageRecorder, list[object]]:
    """Run one batch through a skip-on-error filter's runner; return outputs, books, dead items."""
    [spec] = Pipeline[int]().filter(predicate, name="f", on_error="skip")._specs
    handed_on: list[int] = []
    recorder = StageRecorder()
    handle = ThreadWorker(spec.stage)
    runner = BatchRunner(
        spec, handle.process, recorder, _Supervisor(), handed_on.extend, handle.batch_target_ns
    )
    recorder.taken = recorder.in_hand = len(batch)  # as the worker loop counts a batch it takes
    runner.run(batch)
    assert recorder.in_hand == 0
    return handed_on, recorder, [letter.item for letter in recorder.dead_letters]


def _even_but_stop_on(bad: int) -> Callable[[int], bool]:
    def predicate(x: int) -> bool:
        if x == bad:
            raise StopIteration
        return x % 2 == 0

    return predicate


@pytest.mark.parametrize("bad", [1, 4, 7, 8])  # first, middle, second to last, last
def test_a_filter_predicate_raising_stop_iteration_loses_no_other_item(bad: int) -> None:
    batch = [1, 2, 3, 4, 5, 6, 7, 8]
    out, books, dead = _run_filter_batch(_even_but_stop_on(bad), batch)
    assert out == [x for x in batch if x % 2 == 0 and x != bad]
    assert dead == [bad]
    assert (books.taken, books.completed, books.failed) == (8, 7, 1)
    assert books.emitted + books.dropped == books.completed


def test_a_filter_failure_amid_repeated_objects_keeps_the_right_outputs() -> None:
    # The same int objects occur several times; the failure is in the middle.
    batch = [2, 2, 3, 2, 9, 3, 2, 4]

    def predicate(x: int) -> bool:
        if x == 9:
            raise ValueError(x)
        return x % 2 == 0

    out, books, dead = _run_filter_batch(predicate, batch)
    assert out == [2, 2, 2, 2, 4]
    assert dead == [9]
    assert (books.taken, books.completed, books.emitted, books.dropped) == (8, 7, 5, 2)


def test_a_filter_batch_of_one_item() -> None:
    assert _run_filter_batch(lambda x: x > 0, [5])[0] == [5]
    assert _run_filter_batch(lambda x: x > 0, [-5])[0] == []
    assert _run_filter_batch(_even_but_stop_on(5), [5])[2] == [5]


def test_state_a_worker_assigns_is_its_own_copys() -> None:
    # The per-worker copy the README describes: self.n counts one worker's items.
    class Counts(PipelineStage[int]):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.all: list[int] = []  # created in __init__: shared by the copies

        def process(self, item: int) -> int:
            time.sleep(0.0005)
            self.n += 1
            self.all.append(item)
            return item

    stage = Counts()
    Pipeline[int]().add(stage, workers=4).run(range(100))
    assert len(stage.all) == 100
    assert stage.n < 100
