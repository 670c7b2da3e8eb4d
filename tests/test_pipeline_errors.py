"""Errors, policies and cancellation: fail-fast, skip, retry, cancel, timeout, Ctrl-C."""

from __future__ import annotations

import inspect
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from itertools import count
from pathlib import Path
from types import TracebackType

import pytest

from pipeline import (
    DeadLetter,
    OnError,
    Pipeline,
    PipelineCancelled,
    PipelineError,
    PipelineReport,
    PipelineStage,
    PipelineTimeout,
    Retry,
    StageError,
)
from tests.helpers import WAIT, Join

MAIN = Path(__file__).resolve().parent.parent


class Boom(Exception):
    """The exception the tests inject."""


def _innermost_frame(tb: TracebackType | None) -> str:
    frames = traceback.extract_tb(tb)
    assert frames, "the exception lost its traceback"
    return frames[-1].name


def _threads_since(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


class FailOn(PipelineStage[int]):
    """Raise a fresh Boom on the chosen items; keep each raised object."""

    def __init__(self, *bad: int, name: str | None = None) -> None:
        super().__init__(name=name)
        self.bad = set(bad)
        self.raised: list[Boom] = []
        self.lock = threading.Lock()

    def process(self, item: int) -> int:
        if item in self.bad:
            error = Boom(f"bad item {item}")
            with self.lock:
                self.raised.append(error)
            raise error
        return item


def _assert_failed_report(report: PipelineReport | None) -> PipelineReport:
    assert report is not None
    assert report.status == "failed"
    assert report.balanced
    for stage in report.stages:
        assert stage.arrived == stage.completed + stage.failed + stage.not_processed
    return report


# -- fail-fast ------------------------------------------------------------------------


def test_fail_fast_raises_stage_error_naming_the_stage_and_the_item() -> None:
    stage = FailOn(3, name="picky")
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(lambda x: x).add(stage).run(range(10))
    error = caught.value
    assert isinstance(error, PipelineError)
    assert (error.stage, error.item, error.has_item, error.where) == ("picky", 3, True, "process")
    assert "'picky'" in str(error)
    assert "item 3" in str(error)
    assert "Boom('bad item 3')" in str(error)


def test_stage_error_cause_is_the_original_exception_with_its_traceback() -> None:
    stage = FailOn(3)
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(stage).run(range(10))
    (raised,) = stage.raised
    assert caught.value.__cause__ is raised
    assert _innermost_frame(raised.__traceback__) == "process"
    # the chain prints both errors
    text = "".join(traceback.format_exception(caught.value))
    assert "Boom: bad item 3" in text
    assert "StageError" in text


def test_fail_fast_report_is_attached_failed_and_balanced() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(lambda x: x + 1, workers=2).add(FailOn(50)).run(range(1000))
    report = _assert_failed_report(caught.value.report)
    assert report.items_read >= 50
    assert report.stages[1].completed >= 49


def test_fail_fast_stops_reading_an_infinite_source() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(FailOn(100), workers=3).run(count())
    _assert_failed_report(caught.value.report)


def test_fail_fast_names_a_function_stage_and_a_duplicate_name() -> None:
    def check(x: int) -> int:
        if x == 2:
            raise Boom(x)
        return x

    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(lambda x: x, name="check").map(check).run(range(5))
    assert caught.value.stage == "check #2"
    assert caught.value.item == 2


def test_a_failing_none_item_is_reported_as_an_item() -> None:
    def reject_none(x: int | None) -> int:
        if x is None:
            raise Boom("none")
        return x

    with pytest.raises(StageError) as caught:
        Pipeline[int | None]().map(reject_none).run([1, None, 2])
    assert caught.value.item is None
    assert caught.value.has_item
    assert "item None" in str(caught.value)


def test_stream_raises_stage_error_from_next_and_sets_the_report() -> None:
    outputs = Pipeline[int]().add(FailOn(5)).stream(count())
    received: list[int] = []
    with pytest.raises(StageError) as caught:
        received.extend(outputs)
    assert received == list(range(len(received)))
    assert len(received) <= 5
    report = _assert_failed_report(outputs.report)
    assert caught.value.report is report
    assert report.outputs == len(received)


def test_several_failing_workers_raise_one_stage_error() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)

    def all_fail(x: int) -> int:
        barrier.wait()  # all three workers fail at the same time
        raise Boom(x)

    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(all_fail, workers=3).run(range(3))
    assert isinstance(caught.value.__cause__, Boom)
    _assert_failed_report(caught.value.report)


# -- hooks and source ------------------------------------------------------------------


def test_an_error_in_on_start_fails_the_run() -> None:
    problem = OSError("no connection")

    class BadStart(PipelineStage[int]):
        def on_start(self) -> None:
            raise problem

        def process(self, item: int) -> int:
            return item

    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(BadStart(name="db")).run(range(10))
    error = caught.value
    assert (error.stage, error.where, error.has_item, error.item) == ("db", "on_start", False, None)
    assert error.__cause__ is problem
    assert _innermost_frame(problem.__traceback__) == "on_start"
    assert "on_start()" in str(error)
    _assert_failed_report(error.report)


def test_an_error_in_on_stop_fails_an_otherwise_complete_run() -> None:
    problem = OSError("flush failed")

    class BadStop(PipelineStage[int]):
        def process(self, item: int) -> int:
            return item

        def on_stop(self) -> None:
            raise problem

    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(BadStop(name="writer")).run(range(10))
    error = caught.value
    assert (error.stage, error.where, error.has_item) == ("writer", "on_stop", False)
    assert error.__cause__ is problem
    assert "on_stop()" in str(error)
    report = _assert_failed_report(error.report)
    assert report.stages[0].completed == 10


def test_an_error_in_on_stop_after_another_failure_keeps_the_first_error() -> None:
    class Both(FailOn):
        def on_stop(self) -> None:
            raise OSError("cleanup failed too")

    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(Both(4, name="both")).run(range(10))
    assert caught.value.where == "process"
    assert isinstance(caught.value.__cause__, Boom)
    notes = getattr(caught.value, "__notes__", [])
    assert any("cleanup failed too" in note for note in notes)


def test_an_error_in_the_source_iterator_fails_the_run() -> None:
    problem = ValueError("corrupt record")

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise problem

    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(lambda x: x).run(source())
    error = caught.value
    assert (error.stage, error.where, error.has_item) == ("source", "source", False)
    assert error.__cause__ is problem
    assert _innermost_frame(problem.__traceback__) == "source"
    assert "source iterator" in str(error)
    report = _assert_failed_report(error.report)
    assert report.items_read == 2


def test_an_error_from_a_source_iterator_class_fails_the_run() -> None:
    class Broken:
        def __iter__(self) -> Iterator[int]:
            return self

        def __next__(self) -> int:
            raise KeyError("gone")

    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(lambda x: x).run(Broken())
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.where == "source"


# -- one helper to add a stage of each kind ---------------------------------------------

KINDS = ["class", "generator", "map", "filter", "flat_map", "each"]


def _add_kind(
    pipeline: Pipeline[int, int],
    kind: str,
    fn: Callable[[int], int],
    *,
    on_error: OnError = "raise",
    retry: Retry | None = None,
    workers: int = 1,
) -> None:
    """Add a stage named "s" that applies ``fn`` (inputs must be truthy for filter)."""

    class Cls(PipelineStage[int]):
        def process(self, item: int) -> int:
            return fn(item)

    class Gen(PipelineStage[int]):
        def process(self, item: int) -> Iterator[int]:
            yield fn(item)

    if kind == "class":
        pipeline.add(Cls(), name="s", on_error=on_error, retry=retry, workers=workers)
    elif kind == "generator":
        pipeline.add(Gen(), name="s", on_error=on_error, retry=retry, workers=workers)
    elif kind == "map":
        pipeline.map(fn, name="s", on_error=on_error, retry=retry, workers=workers)
    elif kind == "filter":
        pipeline.filter(fn, name="s", on_error=on_error, retry=retry, workers=workers)
    elif kind == "flat_map":
        pipeline.flat_map(
            lambda x: [fn(x)], name="s", on_error=on_error, retry=retry, workers=workers
        )
    else:
        assert kind == "each"
        pipeline.each(fn, name="s", on_error=on_error, retry=retry, workers=workers)


@pytest.mark.parametrize("kind", KINDS)
def test_fail_fast_works_for_every_kind_of_stage(kind: str) -> None:
    def bad(x: int) -> int:
        if x == 7:
            raise Boom(x)
        return x

    pipeline = Pipeline[int]()
    _add_kind(pipeline, kind, bad)
    with pytest.raises(StageError) as caught:
        pipeline.run(range(1, 20))
    assert (caught.value.stage, caught.value.item) == ("s", 7)
    assert isinstance(caught.value.__cause__, Boom)
    _assert_failed_report(caught.value.report)


# -- StopIteration is an error, never a silent end ------------------------------------


def _stop_on_3(x: int) -> int:
    if x == 3:
        raise StopIteration
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_stop_iteration_in_process_fails_the_run(kind: str) -> None:
    pipeline = Pipeline[int]()
    _add_kind(pipeline, kind, _stop_on_3)
    with pytest.raises(StageError) as caught:
        pipeline.run(range(1, 10))
    assert (caught.value.stage, caught.value.item) == ("s", 3)
    assert "StopIteration" in str(caught.value)
    _assert_failed_report(caught.value.report)


@pytest.mark.parametrize("kind", KINDS)
def test_stop_iteration_on_a_lone_item_fails_the_run(kind: str) -> None:
    # A batch of one item takes a path of its own: the same error must come out.
    pipeline = Pipeline[int]()
    _add_kind(pipeline, kind, _stop_on_3)
    with pytest.raises(StageError) as caught:
        pipeline.run([3])
    assert (caught.value.stage, caught.value.item) == ("s", 3)
    assert "StopIteration" in str(caught.value)
    _assert_failed_report(caught.value.report)


@pytest.mark.parametrize("kind", KINDS)
def test_stop_iteration_in_process_drops_no_other_item(kind: str) -> None:
    pipeline = Pipeline[int]()
    _add_kind(pipeline, kind, _stop_on_3, on_error="skip")
    result = pipeline.run(range(1, 2000))
    assert result.outputs == [x for x in range(1, 2000) if x != 3]
    assert [letter.item for letter in result.report.dead_letters] == [3]
    assert result.report.failed == 1
    assert result.report.balanced


# -- skip --------------------------------------------------------------------------------


class Recorded:
    """A function failing on chosen items, keeping each exception it raised."""

    def __init__(self, bad: Callable[[int], bool], *, failures_per_item: int | None = None):
        self.bad = bad
        self.failures_per_item = failures_per_item  # None: fail every try
        self.lock = threading.Lock()
        self.raised: dict[int, list[Boom]] = {}
        self.tries: dict[int, list[float]] = {}

    def __call__(self, x: int) -> int:
        with self.lock:
            self.tries.setdefault(x, []).append(time.monotonic())
            if not self.bad(x):
                return x
            mine = self.raised.setdefault(x, [])
            if self.failures_per_item is not None and len(mine) >= self.failures_per_item:
                return x
            error = Boom(f"try {len(mine) + 1} of {x}")
            mine.append(error)
        raise error


@pytest.mark.parametrize("kind", KINDS)
def test_skip_records_dead_letters_and_goes_on(kind: str) -> None:
    fn = Recorded(lambda x: x % 10 == 3)
    pipeline = Pipeline[int]()
    _add_kind(pipeline, kind, fn, on_error="skip", workers=2)
    result = pipeline.run(range(1, 100))
    assert result.outputs == [x for x in range(1, 100) if x % 10 != 3]
    letters = sorted(result.report.dead_letters, key=lambda d: d.item)
    assert [d.item for d in letters] == list(range(3, 100, 10))
    for letter in letters:
        assert isinstance(letter, DeadLetter)
        assert letter.stage == "s"
        assert letter.attempts == 1
        assert letter.exception is fn.raised[letter.item][0]
    report = result.report
    assert report.status == "completed"
    assert report.failed == report.stages[0].failed == 10
    assert report.balanced


def test_skip_discards_the_partial_outputs_of_a_failing_generator() -> None:
    class HalfThenFail(PipelineStage[int, str]):
        def process(self, item: int) -> Iterator[str]:
            yield f"{item}a"
            if item == 2:
                raise Boom(item)
            yield f"{item}b"

    result = Pipeline[int]().add(HalfThenFail(), on_error="skip").run([1, 2, 3])
    assert result.outputs == ["1a", "1b", "3a", "3b"]
    assert [d.item for d in result.report.dead_letters] == [2]
    assert result.report.balanced


def test_skip_in_one_stage_does_not_change_fail_fast_in_another() -> None:
    def later(x: int) -> int:
        if x == 8:
            raise Boom(x)
        return x

    with pytest.raises(StageError) as caught:
        (
            Pipeline[int]()
            .map(Recorded(lambda x: x == 2), name="lenient", on_error="skip")
            .map(later, name="strict")
            .run(range(10))
        )
    assert caught.value.stage == "strict"
    report = _assert_failed_report(caught.value.report)
    assert [d.item for d in report.dead_letters] == [2]


def test_dead_letters_keep_the_item_for_replay() -> None:
    payload = {"id": 7}
    result = (
        Pipeline[dict[str, int]]().map(lambda d: 1 // (d["id"] - 7), on_error="skip").run([payload])
    )
    (letter,) = result.report.dead_letters
    assert letter.item is payload
    assert isinstance(letter.exception, ZeroDivisionError)
    assert letter.to_dict()["item"] == "{'id': 7}"


# -- retry -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_retry_succeeds_on_a_later_try(kind: str) -> None:
    fn = Recorded(lambda x: x % 5 == 0, failures_per_item=2)
    pipeline = Pipeline[int]()
    retry = Retry(attempts=3, backoff=0.0, jitter=0.0)
    _add_kind(pipeline, kind, fn, retry=retry, workers=2)
    result = pipeline.run(range(1, 50))
    assert result.outputs == list(range(1, 50))
    assert result.report.dead_letters == ()
    assert result.report.stages[0].retried == 2 * 9
    assert all(len(fn.tries[x]) == 3 for x in range(5, 50, 5))
    assert all(len(fn.tries[x]) == 1 for x in range(1, 50) if x % 5)
    assert result.report.status == "completed"


def test_retry_gives_up_after_attempts_then_fail_fast_applies() -> None:
    fn = Recorded(lambda x: x == 4)
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(fn, name="s", retry=Retry(attempts=3, backoff=0.0)).run(range(10))
    assert len(fn.tries[4]) == 3
    assert caught.value.item == 4
    assert caught.value.__cause__ is fn.raised[4][-1]  # the last try's exception
    report = _assert_failed_report(caught.value.report)
    assert report.stages[0].retried == 2


def test_retry_gives_up_after_attempts_then_skip_applies() -> None:
    fn = Recorded(lambda x: x in {4, 6})
    result = (
        Pipeline[int]()
        .map(fn, name="s", retry=Retry(attempts=4, backoff=0.0), on_error="skip")
        .run(range(10))
    )
    assert result.outputs == [0, 1, 2, 3, 5, 7, 8, 9]
    letters = sorted(result.report.dead_letters, key=lambda d: d.item)
    assert [(d.item, d.attempts) for d in letters] == [(4, 4), (6, 4)]
    assert all(d.exception is fn.raised[d.item][-1] for d in letters)
    assert result.report.stages[0].retried == 6


def test_retry_only_retries_the_exception_types_in_on() -> None:
    fn = Recorded(lambda x: x == 1)  # raises Boom
    result = (
        Pipeline[int]()
        .map(fn, retry=Retry(attempts=5, backoff=0.0, on=(ConnectionError,)), on_error="skip")
        .run([0, 1, 2])
    )
    assert len(fn.tries[1]) == 1
    (letter,) = result.report.dead_letters
    assert letter.attempts == 1
    assert result.report.stages[0].retried == 0


def test_retry_retries_subclasses_of_the_types_in_on() -> None:
    class Flaky(ConnectionError):
        pass

    tries: list[int] = []

    def flaky(x: int) -> int:
        tries.append(x)
        if len(tries) < 3:
            raise Flaky
        return x

    retry = Retry(attempts=3, backoff=0.0, on=OSError)  # type: ignore[arg-type]  # a bare type is accepted
    assert retry.on == (OSError,)
    assert Pipeline[int]().map(flaky, retry=retry).run([5]).outputs == [5]
    assert tries == [5, 5, 5]


def test_retry_materialises_generator_outputs_so_a_failed_try_emits_nothing() -> None:
    tries = 0

    class Flaky(PipelineStage[int, str]):
        def process(self, item: int) -> Iterator[str]:
            nonlocal tries
            yield f"{item}a"
            if item == 2:
                tries += 1
                if tries < 3:
                    raise Boom(tries)
            yield f"{item}b"

    result = Pipeline[int]().add(Flaky(), retry=Retry(attempts=3, backoff=0.0)).run([1, 2, 3])
    assert result.outputs == ["1a", "1b", "2a", "2b", "3a", "3b"]


def test_retry_waits_the_backoff_between_tries() -> None:
    fn = Recorded(lambda x: True)
    retry = Retry(attempts=3, backoff=0.02, max_delay=0.03, jitter=0.0)
    with pytest.raises(StageError):
        Pipeline[int]().map(fn, retry=retry).run([1])
    first, second, third = fn.tries[1]
    assert second - first >= 0.02 - 0.001
    assert third - second >= 0.03 - 0.001  # min(max_delay, 0.02 * 2)


def test_cancel_cuts_a_retry_backoff_short() -> None:
    failed_once = threading.Event()

    def always(x: int) -> int:
        failed_once.set()
        raise Boom(x)

    pipeline = Pipeline[int]().map(always, retry=Retry(attempts=2, backoff=60.0, max_delay=60.0))

    def cancel() -> None:
        assert failed_once.wait(WAIT)
        pipeline.cancel()

    canceller = Join(cancel)
    started = time.monotonic()
    with pytest.raises(PipelineCancelled) as caught:
        pipeline.run([1, 2, 3])
    canceller.join()
    assert time.monotonic() - started < WAIT
    report = caught.value.report
    assert report is not None
    assert report.status == "cancelled"
    assert report.balanced
    assert report.stages[0].retried == 1


def test_a_timeout_cuts_a_retry_backoff_short() -> None:
    def always(x: int) -> int:
        raise Boom(x)

    pipeline = Pipeline[int]().map(always, retry=Retry(attempts=2, backoff=60.0, max_delay=60.0))
    started = time.monotonic()
    with pytest.raises(PipelineTimeout):
        pipeline.run([1], timeout=0.05)
    assert time.monotonic() - started < WAIT


@pytest.mark.parametrize(
    ("options", "error", "parameter"),
    [
        ({"attempts": 0}, ValueError, "'attempts'"),
        ({"attempts": 1.5}, TypeError, "'attempts'"),
        ({"attempts": True}, TypeError, "'attempts'"),
        ({"backoff": -1}, ValueError, "'backoff'"),
        ({"backoff": "1"}, TypeError, "'backoff'"),
        ({"max_delay": -0.1}, ValueError, "'max_delay'"),
        ({"max_delay": float("nan")}, ValueError, "'max_delay'"),
        ({"jitter": 1.5}, ValueError, "'jitter'"),
        ({"jitter": -0.1}, ValueError, "'jitter'"),
        ({"on": ()}, ValueError, "'on'"),
        ({"on": (int,)}, TypeError, "'on'"),
        ({"on": [ValueError]}, ValueError, "'on'"),
    ],
)
def test_retry_validates_its_options(
    options: dict[str, object], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=parameter):
        Retry(**options)  # type: ignore[arg-type]


def test_retry_delay_grows_exponentially_up_to_max_delay_with_jitter() -> None:
    plain = Retry(backoff=0.1, max_delay=0.5, jitter=0.0)
    assert [plain.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    jittery = Retry(backoff=1.0, max_delay=10.0, jitter=0.5)
    assert all(0.5 <= jittery.delay(1) <= 1.5 for _ in range(200))


# -- cancel ------------------------------------------------------------------------------


def _blocking_pipeline() -> tuple[Pipeline[int, int], threading.Event, threading.Event]:
    """A pipeline whose stage blocks on ``release`` after signalling ``entered``."""
    entered = threading.Event()
    release = threading.Event()

    def block(x: int) -> int:
        entered.set()
        release.wait(WAIT)
        return x

    return Pipeline[int]().map(lambda x: x, workers=2).map(block), entered, release


def test_cancel_from_another_thread_stops_a_blocked_run() -> None:
    pipeline, entered, release = _blocking_pipeline()

    def cancel() -> None:
        assert entered.wait(WAIT)
        pipeline.cancel()
        release.set()  # the item in hand finishes; nothing else starts

    canceller = Join(cancel)
    try:
        with pytest.raises(PipelineCancelled) as caught:
            pipeline.run(count())
    finally:
        release.set()
        canceller.join()
    assert not isinstance(caught.value, PipelineTimeout)
    report = caught.value.report
    assert report is not None
    assert report.status == "cancelled"
    assert report.balanced
    assert report.items_read >= 1
    assert report.not_processed >= 1
    assert report.stages[1].completed <= 1


def test_cancel_stops_a_stream_and_sets_its_report() -> None:
    pipeline, entered, release = _blocking_pipeline()
    outputs = pipeline.stream(count())

    def cancel() -> None:
        assert entered.wait(WAIT)
        pipeline.cancel()
        release.set()

    canceller = Join(cancel)
    try:
        with pytest.raises(PipelineCancelled):
            list(outputs)
    finally:
        release.set()
        canceller.join()
    assert outputs.report is not None
    assert outputs.report.status == "cancelled"
    assert outputs.report.balanced


def test_cancel_from_inside_a_stage_stops_the_run() -> None:
    pipeline = Pipeline[int]()
    pipeline.each(lambda x: pipeline.cancel() if x == 100 else None)
    with pytest.raises(PipelineCancelled) as caught:
        pipeline.run(count())
    assert caught.value.report is not None
    assert caught.value.report.status == "cancelled"
    assert caught.value.report.balanced


def test_cancel_without_a_run_does_nothing_and_the_pipeline_stays_usable() -> None:
    pipeline = Pipeline[int]().map(lambda x: x + 1)
    pipeline.cancel()
    assert pipeline.run([1, 2]).outputs == [2, 3]


def test_cancel_affects_only_its_own_pipeline() -> None:
    blocked, entered, release = _blocking_pipeline()
    other = Pipeline[int]().map(lambda x: x * 2)

    def cancel() -> None:
        assert entered.wait(WAIT)
        blocked.cancel()
        release.set()

    canceller = Join(cancel)
    try:
        with pytest.raises(PipelineCancelled):
            blocked.run(count())
    finally:
        release.set()
        canceller.join()
    assert other.run([1, 2]).outputs == [2, 4]


# -- timeout -----------------------------------------------------------------------------


def test_run_timeout_raises_pipeline_timeout_while_outputs_flow() -> None:
    def work(x: int) -> int:
        time.sleep(0.001)  # simulated I/O
        return x

    started = time.monotonic()
    with pytest.raises(PipelineTimeout) as caught:
        Pipeline[int]().map(work).run(count(), timeout=0.1)
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < WAIT
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, PipelineCancelled)
    report = caught.value.report
    assert report is not None
    assert report.status == "timed out"
    assert report.balanced


def test_run_timeout_fires_when_no_output_arrives() -> None:
    started = time.monotonic()
    with pytest.raises(PipelineTimeout) as caught:
        Pipeline[int]().filter(lambda x: False).run(count(), timeout=0.1)
    assert 0.1 <= time.monotonic() - started < WAIT
    assert caught.value.report is not None
    assert caught.value.report.status == "timed out"
    assert caught.value.report.balanced


def test_stream_timeout_raises_from_next() -> None:
    def work(x: int) -> int:
        time.sleep(0.001)  # simulated I/O
        return x

    outputs = Pipeline[int]().map(work).stream(count(), timeout=0.1)
    received: list[int] = []
    with pytest.raises(PipelineTimeout):
        received.extend(outputs)
    assert outputs.report is not None
    assert outputs.report.status == "timed out"
    assert outputs.report.outputs == len(received)


def test_a_run_that_ends_in_time_is_not_affected_by_its_timeout() -> None:
    result = Pipeline[int]().map(lambda x: x).run(range(100), timeout=WAIT)
    assert result.outputs == list(range(100))
    assert result.report.status == "completed"


class _WatchedSource:
    """A generator source that records when, and on which thread, its cleanup ran."""

    def __init__(self, cleanup_raises: BaseException | None = None) -> None:
        self.yielded = threading.Event()  # set once it has yielded 5 items
        self.closed = threading.Event()
        self.closed_on: list[str] = []
        self.cleanup_raises = cleanup_raises
        self.generator = self._items()

    def _items(self) -> Generator[int, None, None]:
        try:
            for item in count():
                if item == 5:
                    self.yielded.set()
                yield item
        finally:
            self.closed_on.append(threading.current_thread().name)
            self.closed.set()
            if self.cleanup_raises is not None:
                raise self.cleanup_raises


def test_a_failed_run_closes_its_generator_source_on_its_thread_before_it_raises() -> None:
    source = _WatchedSource()
    with pytest.raises(StageError):
        Pipeline[int]().add(FailOn(20), workers=2).run(source.generator)
    assert source.closed.is_set()  # no waiting: run() raised after the cleanup ran
    assert source.closed_on == ["pipeline-source"]  # the thread that read it
    assert inspect.getgeneratorstate(source.generator) == "GEN_CLOSED"  # not suspended


def test_a_cancelled_run_closes_its_generator_source_before_it_raises() -> None:
    source = _WatchedSource()
    pipeline = Pipeline[int]().map(lambda x: x)

    def cancel() -> None:
        assert source.yielded.wait(WAIT)
        pipeline.cancel()

    canceller = Join(cancel)
    with pytest.raises(PipelineCancelled):
        pipeline.run(source.generator)
    canceller.join()
    assert source.closed.is_set()
    assert source.closed_on == ["pipeline-source"]


def test_breaking_out_of_a_stream_closes_its_generator_source() -> None:
    source = _WatchedSource()
    with Pipeline[int]().map(lambda x: x).stream(source.generator) as outputs:
        for output in outputs:
            if output == 3:
                break
    assert source.closed.is_set()


def test_a_generator_source_whose_cleanup_raises_is_logged_and_the_run_keeps_its_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _WatchedSource(cleanup_raises=Boom("cleanup"))
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(FailOn(20)).run(source.generator)
    assert isinstance(caught.value.__cause__, Boom)
    assert str(caught.value.__cause__) == "bad item 20"
    logged = [r for r in caplog.records if r.name == "pipeline" and r.exc_info]
    assert len(logged) == 1
    assert "closing the source generator" in logged[0].getMessage()
    assert str(logged[0].exc_info[1]) == "cleanup"  # type: ignore[index]
