"""Observers: one interface for every event of a run, at batch granularity.

Every event of a run goes through the workers' recorders (see
:mod:`pipeline._report`): a worker started or stopped, a batch done with its
counts and duration, an item retried, dead-lettered or failing the run. The
recorders are the *default observer*: one per worker, writing plain counters
with no lock, summed into the run's report once the workers are joined.

An :class:`Observer` you pass to ``run(observers=[...])`` or
``stream(observers=[...])`` sees the same events, right after the recorder
counted them: live progress, traces and metrics are observers. With no
observer the workers pay nothing for this; with some, each event costs one
small object and a call per observer, once per batch, not per item.

Threads: ``run_started`` and ``run_finished`` are called in the thread that
runs the pipeline (the caller of ``run()``, or of the stream's ``next()``);
the worker events in that worker's own thread, so an observer sees events of
different workers at the same time and must guard its own state. The events
of one worker come in order. An observer should be quick: the worker waits
for it. An observer that sets ``tick_seconds`` also gets ``tick()`` that
often, from a ticker thread of the run, until the workers have ended: for
what no event says (queue depths, busy workers: :meth:`RunInfo.snapshot`).

An observer that raises is logged (logger ``"pipeline"``, with the
traceback) and removed from the run, as trio does with its instruments: the
run and its books go on unharmed. A ``BaseException`` from ``run_started`` or
``run_finished`` (a ``KeyboardInterrupt`` of the caller's) propagates once
the other observers had the event; a Ctrl-C the run took comes out as its
:class:`~pipeline.PipelineInterrupted`, with the report.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._exceptions import _short_repr
from ._report import DeadLetter, StageRecorder

if TYPE_CHECKING:
    from ._report import PipelineReport
    from ._safequeue import QueueStats

__all__ = [
    "BatchStats",
    "ObservedRecorder",
    "Observer",
    "ObserverGroup",
    "RunInfo",
    "StageInfo",
    "StageSnapshot",
    "WorkerInfo",
    "check_observers",
]

logger = logging.getLogger("pipeline")


@dataclass(frozen=True, slots=True)
class StageInfo:
    """A stage as a run sees it: its name, workers and where ``process()`` runs.

    Attributes:
        name: the stage's name (unique in the pipeline).
        index: its position, from 0.
        workers: how many workers it has.
        executor: ``"thread"``, ``"process"``, or the executor's class name.
        ordered: whether it hands its outputs on in input order.
    """

    name: str
    index: int
    workers: int
    executor: str
    ordered: bool


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker of a stage: who an event comes from.

    Attributes:
        stage: the stage's name.
        index: the stage's position, from 0.
        number: the worker's number in its stage, from 1.
        executor: as in :class:`StageInfo`.
    """

    stage: str
    index: int
    number: int
    executor: str

    @property
    def name(self) -> str:
        """``"<stage>-<number>"``, the name of the worker's thread."""
        return f"{self.stage}-{self.number}"


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one batch of a worker came to.

    ``size == completed + failed + abandoned``: every item taken is in one of
    the three.

    Attributes:
        size: items in the batch.
        completed: items whose ``process()`` returned (``dropped`` of those
            produced no output).
        emitted: outputs handed on.
        dropped: completed items with no output (filtered out).
        failed: items that became dead letters or failed the run.
        abandoned: items a cancellation or a fail-fast error left unprocessed.
        seconds: time spent processing the batch (in ``process()``, wherever
            it ran; retry back-offs excluded).
    """

    size: int
    completed: int
    emitted: int
    dropped: int
    failed: int
    abandoned: int
    seconds: float


@dataclass(frozen=True, slots=True)
class StageSnapshot:
    """A stage as it is now, read while the run goes on (see :meth:`RunInfo.snapshot`).

    The counts are each worker's own, read without stopping it: each is
    exact as of some moment of the last batch.

    Attributes:
        name: the stage's name.
        workers: its number of workers.
        busy: workers holding a batch now.
        taken: items its workers took so far.
        completed: items whose ``process()`` returned so far.
        emitted: outputs it produced so far.
        dropped: completed items with no output so far.
        failed: items that failed so far.
        queue_size: items waiting in its input queue.
        queue_maxsize: the bound of that queue (0: unbounded).
        starved: a worker is waiting for input.
        blocked: a worker is waiting for room in the queue after it.
    """

    name: str
    workers: int
    busy: int
    taken: int
    completed: int
    emitted: int
    dropped: int
    failed: int
    queue_size: int
    queue_maxsize: int
    starved: bool
    blocked: bool


@dataclass(frozen=True)
class RunInfo:
    """The run an observer watches, given to :meth:`Observer.run_started`.

    Attributes:
        stages: the stages, in order.
        expected: the source's length, when it has one (``len()``), else ``None``.
    """

    stages: tuple[StageInfo, ...]
    expected: int | None
    _queue_stats: Callable[[], tuple[QueueStats, ...]]
    _snapshot: Callable[[], tuple[StageSnapshot, ...]]
    _queue_sizes: Callable[[], tuple[int, ...]]

    def queue_sizes(self) -> tuple[int, ...]:
        """The size of every stage's input queue, in order, then of the output queue.

        The cheap way to sample queue depths often (a lock and a ``len()``
        per queue); :meth:`queue_stats` has everything, at a few microseconds
        a queue.
        """
        return self._queue_sizes()

    def snapshot(self) -> tuple[StageSnapshot, ...]:
        """Every stage as it is now; safe from any thread, e.g. from :meth:`Observer.tick`."""
        return self._snapshot()

    def queue_stats(self) -> tuple[QueueStats, ...]:
        """Snapshots of every stage's input queue, in order, then of the output queue.

        Safe from any thread at any time, e.g. from a thread that samples the
        queue depths while the run goes on.
        """
        return self._queue_stats()


class Observer:
    """Receives the events of a run; subclass it and override what you need.

    Every method does nothing by default. See :mod:`pipeline._observe` for
    the threads the methods are called in and what happens if one raises.

    >>> import threading
    >>> from pipeline import Observer, Pipeline
    >>> class Count(Observer):
    ...     def __init__(self):
    ...         self.lock, self.done = threading.Lock(), 0
    ...     def batch_done(self, worker, batch):
    ...         with self.lock:  # workers report at the same time
    ...             self.done += batch.completed
    >>> counter = Count()
    >>> _ = Pipeline[int]().map(abs, workers=2).run(range(1000), observers=[counter])
    >>> counter.done
    1000
    """

    tick_seconds: float | None = None
    """Set it to have :meth:`tick` called about this often while the run goes on."""

    def run_started(self, run: RunInfo) -> None:
        """The run is about to start its threads."""

    def tick(self, run: RunInfo) -> None:
        """Called every ``tick_seconds`` from a thread of the run, until its workers end.

        For what no event says: live progress, gauges (see :meth:`RunInfo.snapshot`).
        """

    def worker_started(self, worker: WorkerInfo) -> None:
        """A worker is ready: its ``on_start`` returned."""

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        """A worker finished a batch (also one that stopped part way)."""

    def item_retried(self, worker: WorkerInfo, item: Any, error: Exception, attempt: int) -> None:
        """Try ``attempt`` of ``item`` raised ``error``; it will be tried again."""

    def item_dead_lettered(self, worker: WorkerInfo, letter: DeadLetter) -> None:
        """An item failed for good under ``on_error="skip"``."""

    def item_failed(self, worker: WorkerInfo, item: Any, error: BaseException) -> None:
        """An item raised ``error``, which fails the run (fail-fast)."""

    def worker_stopped(self, worker: WorkerInfo) -> None:
        """A worker ended (after its ``on_stop``, if it had started)."""

    def run_finished(self, report: PipelineReport) -> None:
        """Every thread of the run was joined; ``report`` is final."""


def check_observers(observers: Iterable[Observer]) -> tuple[Observer, ...]:
    """The ``observers`` argument of ``run()``/``stream()``, checked."""
    if isinstance(observers, Observer):
        message = "'observers' must be an iterable of Observer, not one Observer: use [observer]"
        raise TypeError(message)
    try:
        found: tuple[object, ...] = tuple(observers)
    except TypeError:
        message = f"'observers' must be an iterable of Observer, not {type(observers).__name__}"
        raise TypeError(message) from None
    checked: list[Observer] = []
    for observer in found:
        if not isinstance(observer, Observer):
            kind = type(observer).__name__
            raise TypeError(f"'observers' must hold pipeline.Observer instances, not {kind}")
        _check_tick(observer)
        checked.append(observer)
    return tuple(checked)


def _check_tick(observer: Observer) -> None:
    # A tick every 0 s would spin the ticker thread: refuse it before the run.
    tick = observer.tick_seconds
    if tick is None:
        return
    name = type(observer).__name__
    if isinstance(tick, bool) or not isinstance(tick, int | float):
        raise TypeError(f"{name}.tick_seconds must be a number or None, not {type(tick).__name__}")
    if not MIN_TICK <= tick <= MAX_TICK:
        raise ValueError(f"{name}.tick_seconds must be {MIN_TICK} to {MAX_TICK:g}, got {tick!r}")


MIN_TICK = 0.001
MAX_TICK = 3600.0


class ObserverGroup:
    """The observers of one run, less those removed for raising.

    ``active`` is replaced, never changed in place, so workers read it
    without a lock; the lock makes removing one (and logging it) happen once.
    """

    __slots__ = ("_lock", "active", "started", "tick_seconds")

    def __init__(self, observers: tuple[Observer, ...]) -> None:
        self.active = observers
        self.started = False
        self._lock = threading.Lock()
        # The run ticks as often as the most eager observer asks.
        wanted = [o.tick_seconds for o in observers if o.tick_seconds is not None]
        self.tick_seconds = min(wanted) if wanted else None

    def call(self, event: str, *args: Any, caller: bool = False) -> None:
        """Send one event to every active observer.

        ``caller``: this runs in the caller's thread, where a
        ``BaseException`` that is not an ``Exception`` (a Ctrl-C landing in an
        observer) propagates, but only once every other observer had the
        event: one that started a server in ``run_started`` must still be
        told ``run_finished``.
        """
        escaped: BaseException | None = None
        for observer in self.active:
            try:
                getattr(observer, event)(*args)
            except Exception as exc:  # noqa: BLE001 (logged, and the observer removed)
                self._remove(observer, event, exc)
            except BaseException as exc:  # noqa: BLE001 (removed, or raised once all had it)
                if not caller:
                    self._remove(observer, event, exc)
                elif escaped is None:
                    escaped = exc
        if escaped is not None:
            try:
                raise escaped
            finally:
                escaped = None  # no cycle through this frame

    def _remove(self, observer: Observer, event: str, exc: BaseException) -> None:
        with self._lock:
            if observer not in self.active:
                return  # another worker's event removed it meanwhile
            self.active = tuple(o for o in self.active if o is not observer)
        logger.error(
            "observer %s raised in %s(); it is removed from this run",
            _short_repr(observer),
            event,
            exc_info=exc,
        )


class ObservedRecorder(StageRecorder):
    """A worker's recorder that also sends each event to the run's observers."""

    __slots__ = ("failed_in_batch", "group", "worker")

    def __init__(self, group: ObserverGroup, worker: WorkerInfo) -> None:
        super().__init__()
        self.group = group
        self.worker = worker
        self.failed_in_batch = 0  # dead letters since the last batch event

    def worker_started(self) -> None:
        self.group.call("worker_started", self.worker)

    def worker_stopped(self) -> None:
        self.group.call("worker_stopped", self.worker)

    def batch_done(
        self, size: int, completed: int, emitted: int, dropped: int, nanoseconds: int
    ) -> None:
        super().batch_done(size, completed, emitted, dropped, nanoseconds)
        failed, self.failed_in_batch = self.failed_in_batch, 0
        stats = BatchStats(size, completed, emitted, dropped, failed, 0, nanoseconds / 1e9)
        self.group.call("batch_done", self.worker, stats)

    def batch_stopped(
        self,
        *,
        size: int,
        completed: int,
        emitted: int,
        dropped: int,
        failed: int,
        abandoned: int,
        nanoseconds: int,
    ) -> None:
        # The base's batch_stopped counts through StageRecorder.batch_done
        # itself, not ours: one event per batch.
        super().batch_stopped(
            size=size, completed=completed, emitted=emitted, dropped=dropped,
            failed=failed, abandoned=abandoned, nanoseconds=nanoseconds,
        )  # fmt: skip
        failed += self.failed_in_batch
        self.failed_in_batch = 0
        stats = BatchStats(size, completed, emitted, dropped, failed, abandoned, nanoseconds / 1e9)
        self.group.call("batch_done", self.worker, stats)

    def retrying(self, item: Any, error: Exception, attempt: int) -> None:
        super().retrying(item, error, attempt)
        self.group.call("item_retried", self.worker, item, error, attempt)

    def gave_up(self, letter: DeadLetter) -> None:
        super().gave_up(letter)
        self.failed_in_batch += 1
        self.group.call("item_dead_lettered", self.worker, letter)

    def failing(self, item: Any, error: BaseException) -> None:
        self.group.call("item_failed", self.worker, item, error)
