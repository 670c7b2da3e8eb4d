"""Observers: every event of a run reaches them with the counts we made; one that raises goes."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pipeline import (
    BatchStats,
    DeadLetter,
    Observer,
    Pipeline,
    PipelineInterrupted,
    PipelineReport,
    Retry,
    RunInfo,
    SafeQueue,
    StageError,
    WorkerInfo,
)
from tests.helpers import WAIT, Join, child_processes


class Recording(Observer):
    """Keeps every event, in the order each arrived, under a lock (workers report at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []
        self.threads: dict[str, set[str]] = defaultdict(set)  # worker name -> threads seen

    def _add(self, event: str, worker: WorkerInfo | None, *rest: Any) -> None:
        with self.lock:
            self.events.append((event, (worker, *rest)))
            if worker is not None:
                self.threads[worker.name].add(threading.current_thread().name)

    def run_started(self, run: RunInfo) -> None:
        self._add("run_started", None, run)

    def worker_started(self, worker: WorkerInfo) -> None:
        self._add("worker_started", worker)

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        self._add("batch_done", worker, batch)

    def item_retried(self, worker: WorkerInfo, item: Any, error: Exception, attempt: int) -> None:
        self._add("item_retried", worker, item, error, attempt)

    def item_dead_lettered(self, worker: WorkerInfo, letter: DeadLetter) -> None:
        self._add("item_dead_lettered", worker, letter)

    def item_failed(self, worker: WorkerInfo, item: Any, error: BaseException) -> None:
        self._add("item_failed", worker, item, error)

    def worker_stopped(self, worker: WorkerInfo) -> None:
        self._add("worker_stopped", worker)

    def run_finished(self, report: PipelineReport) -> None:
        self._add("run_finished", None, report)

    def named(self, event: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.events if name == event]

    def batches(self, stage: str) -> list[BatchStats]:
        return [args[1] for args in self.named("batch_done") if args[0].stage == stage]


def _bad(x: int) -> int:
    if x % 10 == 3:
        raise ValueError(f"bad {x}")
    return x


def test_every_event_of_a_run_reaches_an_observer_with_the_counts_we_made() -> None:
    seen = Recording()
    pipeline = (
        Pipeline[int]()
        .map(_bad, workers=2, name="check", on_error="skip", retry=Retry(attempts=2, backoff=0))
        .filter(lambda x: x % 2 == 0, name="even")
    )
    result = pipeline.run(range(100), observers=[seen])
    # What we know without the library: 10 bad items, 90 good, 45 even of those.
    bad = [x for x in range(100) if x % 10 == 3]
    good = [x for x in range(100) if x % 10 != 3]
    assert result.outputs == [x for x in good if x % 2 == 0]

    names = [name for name, _ in seen.events]
    assert names[0] == "run_started"
    assert names[-1] == "run_finished"
    assert seen.named("run_finished") == [(None, result.report)]
    [(_, info)] = seen.named("run_started")
    assert [(s.name, s.workers, s.executor, s.ordered) for s in info.stages] == [
        ("check", 2, "thread", True),
        ("even", 1, "thread", True),
    ]
    assert info.expected == 100

    workers = {"check-1", "check-2", "even-1"}
    assert Counter(w.name for (w,) in seen.named("worker_started")) == dict.fromkeys(workers, 1)
    assert Counter(w.name for (w,) in seen.named("worker_stopped")) == dict.fromkeys(workers, 1)
    # The worker events come from the worker's own thread.
    assert dict(seen.threads) == {name: {name} for name in workers}

    check = seen.batches("check")
    assert sum(b.size for b in check) == 100
    assert sum(b.completed for b in check) == len(good)
    assert sum(b.failed for b in check) == len(bad)
    assert sum(b.emitted for b in check) == len(good)
    even = seen.batches("even")
    assert sum(b.size for b in even) == len(good)
    assert sum(b.emitted for b in even) == len(result.outputs)
    assert sum(b.dropped for b in even) == len(good) - len(result.outputs)
    for batch in check + even:
        assert batch.size == batch.completed + batch.failed + batch.abandoned
        assert batch.abandoned == 0
        assert batch.seconds >= 0

    assert sorted(item for _, item, _, attempt in seen.named("item_retried")) == bad
    assert {attempt for *_, attempt in seen.named("item_retried")} == {1}
    assert sorted(letter.item for _, letter in seen.named("item_dead_lettered")) == bad
    assert seen.named("item_failed") == []


def test_the_item_that_fails_the_run_is_an_event_and_its_batch_says_what_was_left() -> None:
    seen = Recording()
    boom = ZeroDivisionError("boom")

    def explode(x: int) -> int:
        if x == 5:
            raise boom
        return x

    with pytest.raises(StageError):
        Pipeline[int]().map(explode, name="explode").run(list(range(10)), observers=[seen])
    [(worker, item, error)] = seen.named("item_failed")
    assert (worker.name, item, error) == ("explode-1", 5, boom)
    batches = seen.batches("explode")
    assert sum(b.failed for b in batches) == 1
    for batch in batches:
        assert batch.size == batch.completed + batch.failed + batch.abandoned
    [(_, report)] = seen.named("run_finished")
    assert report.status == "failed"
    assert sum(b.completed for b in batches) == report.stages[0].completed


def test_a_batch_stopped_by_a_failure_counts_the_dead_letters_before_it() -> None:
    # One worker, a queue source filled beforehand: the first batch is one
    # item, the second takes the rest, so the dead letter (2) and the item
    # that fails the run (4) are in one batch, which stops at 4.
    seen = Recording()

    def judge(x: int) -> int:
        if x == 2:
            raise ValueError("skipped")
        if x == 4:
            raise Stop
        return x

    source = SafeQueue[int]()
    source.put_many(range(7))
    source.shutdown()
    with pytest.raises(StageError):
        Pipeline[int]().map(judge, name="judge", on_error="skip").run(source, observers=[seen])
    batches = seen.batches("judge")
    assert sum(b.size for b in batches) == 7
    assert sum(b.failed for b in batches) == 2  # the dead letter and the item that failed
    for batch in batches:
        assert batch.size == batch.completed + batch.failed + batch.abandoned


def test_a_stream_starts_its_observers_at_the_first_next_and_finishes_them_at_close() -> None:
    seen = Recording()
    outputs = Pipeline[int]().map(abs).stream(range(10**6), observers=[seen])
    assert seen.events == []
    assert next(outputs) == 0
    assert seen.named("run_started")
    outputs.close()
    [(_, report)] = seen.named("run_finished")
    assert report is outputs.report
    assert outputs.report is not None
    assert outputs.report.status == "closed"


def test_run_info_gives_queue_snapshots_from_any_thread_during_the_run() -> None:
    release = threading.Event()
    snapshots: list[int] = []

    class Sampler(Observer):
        def run_started(self, run: RunInfo) -> None:
            self.run = run

        def worker_started(self, worker: WorkerInfo) -> None:
            if worker.stage == "wait":
                snapshots.append(len(Join(self.run.queue_stats).join()))  # type: ignore[arg-type]
                release.set()

    Pipeline[int]().map(abs).map(lambda x: release.wait(WAIT) and x, name="wait").run(
        [1, 2], observers=[Sampler()]
    )
    assert snapshots == [3]  # two stages' input queues and the output queue


class Raises(Observer):
    def __init__(self, event: str, error: BaseException) -> None:
        self.event = event
        self.error = error
        self.calls = 0

    def __getattribute__(self, name: str) -> Any:
        if name == object.__getattribute__(self, "event"):
            object.__setattr__(self, "calls", object.__getattribute__(self, "calls") + 1)
            raise object.__getattribute__(self, "error")
        return object.__getattribute__(self, name)


class HostileError(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class Stop(BaseException):
    pass


EVENTS = ["run_started", "worker_started", "batch_done", "worker_stopped", "run_finished"]
WORKER_EVENTS = EVENTS[1:-1]


@pytest.mark.parametrize(
    ("event", "error"),
    [(event, ValueError("observer bug")) for event in EVENTS]
    + [(event, HostileError()) for event in EVENTS]
    # A BaseException from a worker's event has nowhere to go; in the
    # caller's thread it propagates (the next test).
    + [(event, Stop()) for event in WORKER_EVENTS],
)
def test_an_observer_that_raises_is_logged_once_and_removed_and_the_run_goes_on(
    event: str, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Raises(event, error)
    seen = Recording()
    with caplog.at_level(logging.ERROR, logger="pipeline"):
        result = Pipeline[int]().map(abs, workers=3).run(range(-50, 50), observers=[broken, seen])
    assert sorted(result.outputs) == sorted(abs(x) for x in range(-50, 50))
    assert result.report.balanced
    # Removed for every worker; those already sending the same event to it
    # may see it raise too, but it is logged once.
    assert 1 <= broken.calls <= 3
    [record] = [r for r in caplog.records if "observer" in r.getMessage()]
    assert f"raised in {event}()" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    # The other observer saw everything.
    assert [name for name, _ in seen.events][-1] == "run_finished"
    assert sum(b.completed for b in seen.batches("abs")) == 100


def test_a_keyboard_interrupt_from_run_started_propagates_and_starts_no_thread() -> None:
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        Pipeline[int]().map(abs).run([1], observers=[Raises("run_started", KeyboardInterrupt())])
    assert [t for t in threading.enumerate() if t not in before] == []


def test_every_observer_hears_of_the_run_when_one_raises_a_base_exception() -> None:
    # The observer after the raising one may hold a server (PrometheusMetrics):
    # it must get run_started and run_finished all the same, or it leaks.
    for event in ("run_started", "run_finished"):
        after = Recording()
        with pytest.raises(Stop):
            Pipeline[int]().map(abs).run([1], observers=[Raises(event, Stop()), after])
        assert [name for name, _ in after.events if "run" in name] == [
            "run_started",
            "run_finished",
        ], event


def nap(item: int) -> int:
    time.sleep(0.01)
    return item


class CtrlCInRunStarted(Recording):
    """Sends itself SIGINT: once while the run starts, and again in run_finished."""

    def run_started(self, run: RunInfo) -> None:
        super().run_started(run)
        signal.raise_signal(signal.SIGINT)  # the run's first Ctrl-C: it only cancels

    def run_finished(self, report: PipelineReport) -> None:
        super().run_finished(report)
        signal.raise_signal(signal.SIGINT)  # a second, in user code: raised here


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT needs the main thread"
)
def test_a_second_ctrl_c_in_an_observer_comes_out_as_the_runs_interrupt_with_its_report() -> None:
    pressing, after = CtrlCInRunStarted(), Recording()
    with pytest.raises(PipelineInterrupted) as caught:
        # 2 s of work at most: the cancel the first Ctrl-C starts lands long before the end.
        Pipeline[int]().map(nap, workers=2).run(range(400), observers=[pressing, after])
    report = caught.value.report
    assert report is not None
    assert report.status == "interrupted"
    assert report.outputs == 0  # the caller received nothing
    assert report.balanced
    assert type(caught.value.__context__) is KeyboardInterrupt  # the one raised in the observer
    assert [name for name, _ in after.events if "run" in name] == ["run_started", "run_finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize(
    ("observers", "message"),
    [
        (Recording(), "not one Observer: use \\[observer\\]"),
        (3, "not int"),
        ([Recording(), print], "hold pipeline.Observer instances, not builtin_function"),
    ],
)
def test_bad_observers_are_refused_naming_the_parameter(observers: Any, message: str) -> None:
    pipeline = Pipeline[int]().map(abs)
    with pytest.raises(TypeError, match=f"^'observers' must .*{message}"):
        pipeline.run([1], observers=observers)
    with pytest.raises(TypeError, match=f"^'observers' must .*{message}"):
        pipeline.stream([1], observers=observers)


def test_a_queue_source_run_reports_to_observers_as_well() -> None:
    seen = Recording()
    source = SafeQueue[int]()
    source.put_many(range(20))
    source.shutdown()
    Pipeline[int]().map(abs, workers=2).run(source, observers=[seen])
    assert sum(b.size for b in seen.batches("abs")) == 20
    [(_, info)] = seen.named("run_started")
    assert info.expected is None


@pytest.mark.parametrize("executor", ["process", "pool"])
def test_events_of_a_stage_run_elsewhere_come_from_its_worker_threads(executor: str) -> None:
    seen = Recording()
    with ThreadPoolExecutor(2) as pool:
        where: Any = pool if executor == "pool" else "process"
        Pipeline[int]().map(abs, workers=2, executor=where).run(range(-30, 30), observers=[seen])
    [(_, info)] = seen.named("run_started")
    expected_name = "ThreadPoolExecutor" if executor == "pool" else "process"
    assert info.stages[0].executor == expected_name
    assert {w.executor for (w,) in seen.named("worker_started")} == {expected_name}
    assert sum(b.completed for b in seen.batches("abs")) == 60
    assert dict(seen.threads) == {"abs-1": {"abs-1"}, "abs-2": {"abs-2"}}
    assert child_processes() == []  # the run ended its worker processes


@pytest.mark.parametrize(
    ("tick", "error", "message"),
    [
        (0, ValueError, "tick_seconds must be 0.001 to 3600, got 0"),
        (float("nan"), ValueError, "tick_seconds must be 0.001 to 3600, got nan"),
        ("1", TypeError, "tick_seconds must be a number or None, not str"),
    ],
)
def test_a_tick_that_would_spin_or_is_not_a_number_is_refused_before_the_run(
    tick: Any, error: type[Exception], message: str
) -> None:
    class Ticking(Observer):
        tick_seconds = tick

    before = set(threading.enumerate())
    with pytest.raises(error, match=message):
        Pipeline[int]().map(abs).run([1], observers=[Ticking()])
    assert [t for t in threading.enumerate() if t not in before] == []
