"""One run of a pipeline: its queues, its threads, its outcome and its books.

This is the only module that starts and joins threads.

How a run ends (the poison pill that cannot be miscounted): every queue
between two stages counts its producers. The runner registers them all before
any thread starts: one handle for the source feeder on the first queue, one per
worker of stage ``i`` on queue ``i + 1``. A worker closes its handle when its
input has ended and it has handed on its last output; the last close shuts the
queue down gracefully, so every worker of the next stage drains what is left
and then sees end of stream. No pill is ever counted by hand.

How a run is cancelled (an error, ``cancel()``, a timeout, Ctrl-C, a stream
closed early): the outcome is decided under the run's lock, then every queue
is shut down immediately, which wakes every blocked put and get; the feeder
stops reading the source; each worker finishes the item in hand, runs
``on_stop`` and exits; the runner joins them all. Two threads are not waited
for without end: a feeder still inside the source's ``next()``
:data:`SOURCE_GRACE` seconds after the cancellation (no code can interrupt
it), and, after a second Ctrl-C, workers still inside user code
:data:`~pipeline._interrupt.INTERRUPT_GRACE` seconds later. Both are daemon
threads, named in the error and the report, and end when that code returns.

The books: every item is counted where it stops (see :mod:`pipeline._report`).
The runner only adds up what the recorders, the queues and the consumer
counted; it derives nothing.

Past 400 lines: threads, outcome and books belong to one object whose parts
change together (a cancellation decides the outcome, ends the threads and
fixes the books); the executors work moves executor and observer seams out.
"""

from __future__ import annotations

import _thread
import copy
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import monotonic, perf_counter, perf_counter_ns
from typing import TYPE_CHECKING, Any

from . import _interrupt
from ._dask import ClusterStage, Dask
from ._exceptions import (
    PipelineCancelled,
    PipelineInterrupted,
    PipelineTimeout,
    ProducerError,
    ShutDown,
    StageError,
    _short_str,
)
from ._executors import executor_name, worker_handle
from ._observe import (
    ObservedRecorder,
    Observer,
    ObserverGroup,
    RunInfo,
    StageInfo,
    StageSnapshot,
    WorkerInfo,
)
from ._ordering import ReorderWindow
from ._report import PipelineReport, RunStatus, StageRecorder, StageReport
from ._safequeue import Empty, Producer, QueueStats, SafeQueue
from ._source import SourceReader, feed
from ._stage import MAX_BATCH, Inbox, StageKind, StageSpec, WorkerState
from ._worker import run_worker

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["DEFAULT_MAXSIZE", "DEFAULT_QUEUE_BYTES", "MIN_DEFAULT_MAXSIZE", "SOURCE_GRACE", "Run"]

DEFAULT_MAXSIZE = 8192
"""The most items a queue of a pipeline holds when no ``maxsize`` was given.

Fewer when the items are big: see :data:`DEFAULT_QUEUE_BYTES`.
"""

DEFAULT_QUEUE_BYTES = 2 * 1024 * 1024
"""About how many bytes of items a queue holds when no ``maxsize`` was given.

The first item put into such a queue sets its bound: ``DEFAULT_QUEUE_BYTES``
divided by ``sys.getsizeof(item)``, at most :data:`DEFAULT_MAXSIZE` and at
least :data:`MIN_DEFAULT_MAXSIZE`. Integers get 8192 slots, items of 1 KB
about 2000. ``sys.getsizeof`` does not count what an object refers to (the
pixels of an image object, the contents of a list), so for such items set
``maxsize`` yourself. Where ``sys.getsizeof`` cannot tell (PyPy), the bound
stays :data:`DEFAULT_MAXSIZE`.
"""

MIN_DEFAULT_MAXSIZE = 16
"""The fewest items a queue holds when its bound was set from the item size."""

SOURCE_GRACE = 0.25
"""Seconds a cancelled run waits for a feeder thread blocked inside the source."""

_JOIN_SLICE = 0.05  # joins wake this often to see whether to stop waiting

GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
"""Whether the GIL is on (a free-threaded build may run without it): the report says."""

SLICED_WAITS = sysconfig.get_config_var("Py_GIL_DISABLED") == 1
"""Whether a stream's ``next()`` waits for outputs in slices rather than in one wait.

A SIGINT that lands between a lock acquisition's last look for signals and
its sleep is flagged but does not wake the sleep, so an untimed wait may
never run the Ctrl-C handler; a wait that wakes every ``_WAIT_SLICE``
seconds runs it then. On a free-threaded CPython 3.13 the window is wide
(the acquisition spins before it sleeps), and every stream waits in slices.
With the GIL it is narrow but real: about 1 Ctrl-C in 50 to 1000 hung a
stream whose outputs had stopped, on 3.11 and 3.12 alike. So a stream that
routes SIGINT (in the main thread) waits in slices on every build, and so
does ``run()``; a stream read from another thread, which no signal wakes,
keeps the one untimed wait, the cheaper for a lone item's round trip.
"""
_WAIT_SLICE = 0.1


@dataclass(slots=True)
class _Thread:
    """A thread of the run, with what the join needs to know about it."""

    thread: threading.Thread
    reported_in: threading.Lock  # released by the thread as it begins
    state: WorkerState | None  # None for the feeder
    started: bool = False  # Thread.start() returned


def _thread_main(reported_in: threading.Lock, target: Callable[..., None], args: Any) -> None:
    reported_in.release()
    target(*args)


class Run:
    """One execution of a pipeline; the :class:`~pipeline._stage.Supervisor` of its workers."""

    def __init__(
        self,
        specs: tuple[StageSpec, ...],
        final_maxsize: int | None,
        source: Iterator[Any] | SafeQueue[Any],
        *,
        in_memory: bool = False,
        sequence: list[Any] | tuple[Any, ...] | range | None = None,
        expected: int | None = None,
        observers: tuple[Observer, ...] = (),
    ) -> None:
        self.specs = specs
        self.source = source
        self.expected = expected
        self.in_memory = in_memory
        # A list, tuple or range source is read by slicing it, not through
        # its iterator: a copy in C instead of a call per item.
        self.sequence = sequence
        # A SafeQueue source is the first stage's input queue itself: no
        # feeder thread, one hand-off less per item.
        head = (
            source
            if isinstance(source, SafeQueue)
            else _new_queue(specs[0].maxsize if specs else final_maxsize)
        )
        # queues[i] feeds stage i; queues[-1] holds the outputs. With no stage
        # the head queue is the output queue.
        self.queues: list[SafeQueue[Any]] = [head]
        if specs:
            self.queues += [_new_queue(spec.maxsize) for spec in specs[1:]]
            self.queues.append(_new_queue(final_maxsize))
        # One recorder per worker: the default observer, which the report is
        # built from; it sends its events on to the caller's observers.
        self.observers = ObserverGroup(observers) if observers else None
        self.recorders = [self._recorders(index, spec) for index, spec in enumerate(specs)]
        # An ordered stage with several workers hands its outputs on through a
        # window that puts them back in input order (see _ordering).
        self.windows = [
            ReorderWindow(self.queues[i], self.queues[i + 1], 2 * spec.workers)
            if spec.ordered and spec.workers > 1
            else None
            for i, spec in enumerate(specs)
        ]
        self.reader: SourceReader | None = None
        self.threads: list[_Thread] = []
        # Every worker process of a process stage, as it is started: the run
        # ends any that is still there once its threads are joined.
        self.processes: list[BaseProcess] = []
        # Whether next_outputs() waits in slices (see SLICED_WAITS): a stream
        # whose SIGINT handler is installed sets it.
        self.sliced_waits = SLICED_WAITS
        self.clusters: list[ClusterStage] = []  # the Dask stages' runs, to close at the end
        self.delivered = 0  # outputs handed to the caller; written by the consumer only
        self.undelivered = 0  # outputs the consumer took but did not hand out
        self.left_running: list[str] = []
        # The outcome. The first entry decides how the run ended; later ones
        # are attached to the raised error as notes. `finished` means the
        # last output was in before any cancellation: a cancel that comes
        # later changes nothing. All three change only under the lock.
        self._lock = threading.Lock()
        self.outcomes: list[tuple[RunStatus, BaseException]] = []
        self.finished = False
        # Read by every worker once per batch, without the lock: a plain
        # attribute that only ever goes from False to True.
        self.cancelled = False
        self.cancelled_at = 0.0
        # Lets a retry back-off sleep be cut short by a cancellation.
        self._stopping = threading.Event()
        # Set once the workers are joined: ends the ticker thread.
        self._workers_ended = threading.Event()
        # Ctrl-C (see _interrupt): written by the signal handler in the main
        # thread, which takes no lock; read by the same thread.
        self.interrupts = 0
        self.give_up_at: float | None = None
        self._canceller: threading.Lock | None = None
        # What an observer raised in run_finished, for the caller to raise.
        self._escaped: BaseException | None = None
        self.started = perf_counter()
        self.elapsed = 0.0
        self.ended_ns = 0

    def _recorders(self, index: int, spec: StageSpec) -> list[StageRecorder]:
        group = self.observers
        if group is None:
            return [StageRecorder() for _ in range(spec.workers)]
        where = executor_name(spec.executor)
        return [
            ObservedRecorder(group, WorkerInfo(spec.name, index, number, where))
            for number in range(1, spec.workers + 1)
        ]

    def _run_info(self) -> RunInfo:
        stages = tuple(
            StageInfo(spec.name, index, spec.workers, executor_name(spec.executor), spec.ordered)
            for index, spec in enumerate(self.specs)
        )
        queues = self.queues
        return RunInfo(
            stages,
            self.expected,
            lambda: tuple(q.stats() for q in queues),
            self._snapshot,
            lambda: tuple(q.qsize() for q in queues),
        )

    def _snapshot(self) -> tuple[StageSnapshot, ...]:
        # Read while the workers write: each figure is some moment's.
        stats = [queue.stats() for queue in self.queues]
        stages = []
        for index, spec in enumerate(self.specs):
            recorders = self.recorders[index]
            inbox = stats[index]
            stages.append(
                StageSnapshot(
                    name=spec.name,
                    workers=spec.workers,
                    busy=sum(1 for r in recorders if r.in_hand),
                    taken=sum(r.taken for r in recorders),
                    completed=sum(r.completed for r in recorders),
                    emitted=sum(r.emitted for r in recorders),
                    dropped=sum(r.dropped for r in recorders),
                    failed=sum(r.failed for r in recorders),
                    queue_size=inbox.size,
                    queue_maxsize=inbox.maxsize,
                    starved=inbox.getters_waiting > 0,
                    blocked=stats[index + 1].putters_waiting > 0,
                )
            )
        return tuple(stages)

    def _tick(self, seconds: float) -> None:
        # The ticker thread: observers that asked for it hear from the run
        # every `seconds` until its workers have ended (join() says when).
        group = self.observers
        if group is None:
            return
        info = self._run_info()
        while not self._workers_ended.wait(seconds):
            group.call("tick", info)

    # -- the Supervisor protocol, used by the workers --------------------------

    def fail(self, error: StageError) -> None:
        self._end("failed", error)

    def pause(self, seconds: float) -> bool:
        return not self._stopping.wait(seconds)

    # -- control ----------------------------------------------------------------

    def cancel(self, status: RunStatus, reason: BaseException) -> None:
        self._end(status, reason)

    def _end(self, status: RunStatus, reason: BaseException) -> None:
        with self._lock:
            if self.finished:
                return  # the run had already delivered its last output
            self.outcomes.append((status, reason))
            if self.cancelled:
                return
            self.cancelled = True
            self.cancelled_at = monotonic()
        self._stopping.set()
        for queue in self.queues:
            # A queue source is the caller's: shut it without discarding what
            # is left in it; its blocked getters wake as it is empty.
            queue.shutdown(immediate=queue is not self.source)
        for window in self.windows:
            if window is not None:
                window.close()

    def _finish(self) -> bool:
        # The last output is in: from now on nothing can cancel the run.
        # False if a cancellation came first.
        with self._lock:
            if not self.cancelled:
                self.finished = True
            return self.finished

    def interrupted(self) -> bool:
        """Count a Ctrl-C; called by the SIGINT handler, in the main thread.

        The main thread may hold any lock at this moment (a queue's, the
        run's), so this takes none: the first time, it starts a thread that
        cancels the run; later, it sets the time at which joins stop waiting
        for workers inside user code. Returns whether this Ctrl-C is a repeat.
        """
        self.interrupts += 1
        if self.interrupts == 1:
            canceller = threading.Lock()
            canceller.acquire()
            self._canceller = canceller
            try:
                _thread.start_new_thread(self._cancel_for_interrupt, (canceller,))
            except RuntimeError:  # no thread to be had: stop as Python would
                canceller.release()
                raise KeyboardInterrupt from None
            return False
        if self.give_up_at is None:
            self.give_up_at = monotonic() + _interrupt.INTERRUPT_GRACE
        return True

    def _cancel_for_interrupt(self, done: threading.Lock) -> None:
        # Runs in its own short-lived thread, started by the signal handler;
        # join() waits for it (the lock) before the run raises.
        try:
            self.cancel("interrupted", PipelineInterrupted())
        finally:
            done.release()

    # -- threads ------------------------------------------------------------------

    def start(self) -> None:
        """Copy the stages, register every producer, then start the feeder and the workers.

        A cancellation that lands meanwhile (``cancel()``, ``close()``, Ctrl-C,
        even a stage's own ``__copy__`` cancelling) stops the start: the
        threads already started are joined as usual, and the run then ends
        as cancelled. A ``__copy__`` that raises fails the run.
        """
        self.started = perf_counter()  # a stream starts at its first next()
        for queue in self.queues:
            if queue is not self.source:  # a queue source is the caller's: left as it is
                queue._track_depth()
        if self.observers is not None:
            self.observers.started = True
            self.observers.call("run_started", self._run_info(), caller=True)
        copies: list[list[Any]] = []
        for spec in self.specs:
            if isinstance(spec.executor, Dask):
                # The stage's worker threads share one run on the cluster.
                try:
                    cluster = ClusterStage(spec)
                except BaseException as exc:  # noqa: BLE001 (user code: __reduce__)
                    self.fail(StageError(spec.name, exc, where="copy"))
                    return
                self.clusters.append(cluster)
                copies.append([cluster] * spec.workers)
                continue
            if spec.executor == "process":
                # Each worker process unpickles its own copy.
                from ._process import dumps_stage  # noqa: PLC0415 (multiprocessing on demand)

                try:
                    copies.append([dumps_stage(spec.stage, spec.name)] * spec.workers)
                except BaseException as exc:  # noqa: BLE001 (user code: __reduce__)
                    self.fail(StageError(spec.name, exc, where="copy"))
                    return
                continue
            stages = [spec.stage]
            for _ in range(1, spec.workers):
                try:
                    stages.append(copy.copy(spec.stage))
                except BaseException as exc:  # noqa: BLE001 (user code: __copy__)
                    self.fail(StageError(spec.name, exc, where="copy"))
                if self.cancelled:
                    return
            copies.append(stages)
        try:
            plans = self._plans(copies)
        except ProducerError:
            if self.cancelled:
                return  # a queue was shut down under us: the run is cancelled
            raise
        # Every planned thread starts, even once the run is cancelled: its
        # handle is registered, and its worker runs on_start and on_stop.
        for name, target, args, state in plans:
            reported_in = threading.Lock()
            reported_in.acquire()
            thread = threading.Thread(
                target=_thread_main, name=name, args=(reported_in, target, args), daemon=True
            )
            record = _Thread(thread, reported_in, state)
            # Listed before start(): an exception can interrupt start() after
            # the new thread is already running, and it must still be joined.
            self.threads.append(record)
            thread.start()
            record.started = True

    def _plans(
        self, copies: list[list[Any]]
    ) -> list[tuple[str, Callable[..., None], tuple[Any, ...], WorkerState | None]]:
        # Every thread to start, with its producer handle registered now.
        plans: list[tuple[str, Callable[..., None], tuple[Any, ...], WorkerState | None]] = []
        first_inbox: Inbox = self.queues[0]
        if not isinstance(self.source, SafeQueue):
            first = self.specs[0] if self.specs else None
            if (
                self.in_memory
                and first is not None
                and first.workers == 1
                and first.kind is not StageKind.BATCH
            ):
                # One worker and a collection that cannot block: the worker
                # reads the source itself, one thread and one hand-off less.
                maxsize = first.maxsize or DEFAULT_MAXSIZE
                self.reader = SourceReader(self.source, self, maxsize, self.sequence)
                first_inbox = self.reader
            else:
                self.reader = SourceReader(self.source, self, MAX_BATCH, self.sequence)
                handle = self.queues[0].producer()
                plans.append(("pipeline-source", self._feed, (handle,), None))
        if self.observers is not None and self.observers.tick_seconds is not None:
            ticking = WorkerState()
            ticking.where = "tick"  # what it is inside, should it hang there
            plans.append(("pipeline-ticker", self._tick, (self.observers.tick_seconds,), ticking))
        for index, spec in enumerate(self.specs):
            for number, stage in enumerate(copies[index]):
                state = WorkerState()
                args = (
                    spec,
                    worker_handle(spec, stage, self, number, self.processes),
                    first_inbox if index == 0 else self.queues[index],
                    self.queues[index + 1].producer(),
                    self,
                    self.recorders[index][number],
                    state,
                    self.windows[index],
                )
                plans.append((f"{spec.name}-{number + 1}", run_worker, args, state))
        return plans

    def _feed(self, handle: Producer[Any]) -> None:
        try:
            if self.reader is not None:
                feed(self.reader, handle.queue, self, chunks=self.in_memory)
        finally:
            handle.close()

    def join(self) -> None:
        """Join every thread of the run, or say which ones it left running."""
        ticker = [r for r in self.threads if r.thread.name == "pipeline-ticker"]
        for record in self.threads:
            if record not in ticker:
                self._join(record)
        self._workers_ended.set()  # the ticker's last tick is over when it is joined
        for record in ticker:
            self._join(record)
        if self._canceller is not None and self._canceller.acquire(timeout=_JOIN_SLICE * 20):
            self._canceller.release()
        if self.processes:
            from ._process import end_process  # noqa: PLC0415 (imported by then)

            for child in self.processes:
                end_process(child)  # left by a worker thread the run stopped waiting for
        for cluster in self.clusters:
            cluster.close()
        self.elapsed = perf_counter() - self.started
        self.ended_ns = perf_counter_ns()

    def _join(self, record: _Thread) -> None:
        thread = record.thread
        if not record.started and not record.reported_in.acquire(timeout=1.0):
            return  # start() failed before the thread came up: nothing to join
        while True:
            # In slices, so that a second Ctrl-C (which cannot wake a join)
            # or the source's grace period is noticed.
            thread.join(_JOIN_SLICE)
            if not thread.is_alive():
                return
            where = self._left_behind(record)
            if where is not None:
                self.left_running.append(f"{thread.name} ({where})")
                return

    def _left_behind(self, record: _Thread) -> str | None:
        # Where a thread is stuck, if the run should stop waiting for it now.
        now = monotonic()
        if record.state is None:
            if self.cancelled and now >= self.cancelled_at + SOURCE_GRACE:
                return "inside the source iterator's __next__"
            return None
        if self.give_up_at is not None and now >= self.give_up_at:
            return f"inside {record.state.where}()"
        return None

    # -- outputs ------------------------------------------------------------------

    def next_outputs(self, deadline: float | None) -> list[Any]:
        """Return the next batch of outputs; ``[]`` once the run has ended."""
        if deadline is not None and monotonic() >= deadline:
            self.cancel("timed out", PipelineTimeout("the run's timeout elapsed"))
        try:
            if self.sliced_waits:
                return self._get_outputs_in_slices(deadline)
            return self.queues[-1]._get_batch(MAX_BATCH, deadline)
        except ShutDown:
            self._finish()
        except Empty:
            self.cancel("timed out", PipelineTimeout("the run's timeout elapsed"))
        return []

    def collect(self, deadline: float | None) -> list[Any]:
        """Wait for the end of the run, then take every output at once.

        The output queue of a collecting run is unbounded (the outputs are all
        kept anyway), so nobody waits on it until the end: no wake-up per batch.
        """
        final = self.queues[-1]
        if deadline is not None and monotonic() >= deadline:
            self.cancel("timed out", PipelineTimeout("the run's timeout elapsed"))
        if not self._wait_for_end(deadline):
            self.cancel("timed out", PipelineTimeout("the run's timeout elapsed"))
        if not self._finish():
            return []  # cancelled: what the output queue held is counted there
        outputs: list[Any] = []
        try:
            while True:
                outputs += final.get_many(2**62, 0)  # all of it: one list copy
        except (ShutDown, Empty):
            pass
        self.delivered = len(outputs)
        return outputs

    def _get_outputs_in_slices(self, deadline: float | None) -> list[Any]:
        # _get_batch, woken every _WAIT_SLICE seconds (see SLICED_WAITS).
        while True:
            wake = monotonic() + _WAIT_SLICE
            try:
                return self.queues[-1]._get_batch(
                    MAX_BATCH, wake if deadline is None else min(wake, deadline)
                )
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    def _wait_for_end(self, deadline: float | None) -> bool:
        # Wait for the output queue's end; False if the deadline came first.
        # Always in slices: run() waits for the whole run anyway, and a SIGINT
        # flagged without waking the wait (seen on 3.12 too, rarely) is then
        # handled within a slice.
        final = self.queues[-1]
        while True:
            wake = monotonic() + _WAIT_SLICE
            if final._wait_for_shutdown(wake if deadline is None else min(wake, deadline)):
                return True
            if deadline is not None and monotonic() >= deadline:
                return False

    # -- the outcome ----------------------------------------------------------------

    def final_report(self) -> PipelineReport:
        """The report, once :meth:`join` has returned; observers get ``run_finished``.

        A ``BaseException`` an observer raised there is kept for
        :meth:`observer_escape`: the caller raises it, or the run's error.
        """
        report = self.report()
        if self.observers is not None and self.observers.started:
            try:
                self.observers.call("run_finished", report, caller=True)
            except BaseException as exc:  # noqa: BLE001 (raised by the caller: see observer_escape)
                self._escaped = exc
        return report

    def observer_escape(self, error: BaseException | None) -> BaseException | None:
        """The error to raise, given what an observer raised in ``run_finished``.

        A second Ctrl-C that landed in an observer is the run's own
        :class:`PipelineInterrupted` (which carries the report); any other
        ``BaseException`` from an observer wins, with the run's error as its
        context.
        """
        escaped, self._escaped = self._escaped, None
        if escaped is None:
            return error
        if isinstance(error, PipelineInterrupted) and isinstance(escaped, KeyboardInterrupt):
            error.__context__ = escaped
            return error
        if error is not None and escaped.__context__ is None:
            escaped.__context__ = error
        return escaped

    def report(self) -> PipelineReport:
        """Build the report from what was counted; exact once :meth:`join` has returned."""
        direct = isinstance(self.source, SafeQueue)
        if direct:
            # What the first stage took from the queue source (with no stage,
            # what the consumer took from it).
            if self.specs:
                read = sum(r.taken for r in self.recorders[0])
            else:
                read = self.delivered + self.undelivered
        else:
            read = self.reader.read if self.reader is not None else 0
        stages: list[StageReport] = []
        arrived = read
        for index, spec in enumerate(self.specs):
            ours = not (index == 0 and direct)  # a queue source's leftovers are the caller's
            refused, discarded, left = self.queues[index]._books() if ours else (0, 0, 0)
            if index and (window := self.windows[index - 1]) is not None:
                left += window.held()  # emitted upstream, not yet in this stage's queue
            inbox = self.queues[index].stats()
            starved, blocked = self._waits(index, inbox)
            stage = StageReport.from_recorders(
                spec.name,
                arrived,
                self.recorders[index],
                inbox,
                refused + discarded + left,
                executor=executor_name(spec.executor),
                queue_mean=self.queues[index]._mean_size() if ours else 0.0,
                elapsed=self.elapsed,
                ended_ns=self.ended_ns,
                starved=starved,
                blocked=blocked,
            )
            stages.append(stage)
            arrived = stage.emitted
        ours = bool(self.specs) or not direct
        refused, discarded, left = self.queues[-1]._books() if ours else (0, 0, 0)
        if self.windows and (window := self.windows[-1]) is not None:
            left += window.held()
        undelivered = self.undelivered + refused + discarded + left
        status: RunStatus = self.outcomes[0][0] if self.outcomes else "completed"
        error = None
        if self.outcomes and status != "closed":
            error = _short_str(self.outcomes[0][1])
        return PipelineReport(
            status=status,
            elapsed_seconds=self.elapsed,
            items_read=read,
            outputs=self.delivered,
            dropped=sum(s.dropped for s in stages),
            failed=sum(s.failed for s in stages),
            not_processed=sum(s.not_processed for s in stages) + undelivered,
            created=sum(s.created for s in stages),
            stages=tuple(stages),
            dead_letters=tuple(d for rs in self.recorders for r in rs for d in r.dead_letters),
            expected=self.expected,
            undelivered=undelivered,
            error=error,
            left_running=tuple(self.left_running),
            gil_enabled=GIL_ENABLED,
        )

    def _waits(self, index: int, inbox: QueueStats) -> tuple[float, float]:
        # Stage `index`'s time waiting for input and for room downstream,
        # as its queues (and its reorder window) measured them.
        blocked = self.queues[index + 1].stats().put_blocked_seconds
        window = self.windows[index]
        if window is None:
            return inbox.get_blocked_seconds, blocked
        # Its workers take through the window: one waits in the queue, the
        # others for their turn to take; all of them are waiting for input.
        starved = window.take_seconds - window.room_seconds
        return starved, blocked + window.room_seconds

    def outcome_error(self, *, closing: bool = False) -> BaseException | None:
        """The error the run ends with, to raise once the report is attached; or ``None``.

        A Ctrl-C this run took is always raised, as :class:`PipelineInterrupted`,
        whatever else ended the run, except while a stream is being closed and
        the ``KeyboardInterrupt`` for it is already on its way (``closing``).
        """
        first = self.outcomes[0][1] if self.outcomes else None
        if self.interrupts and (_interrupt.delivered() or not closing):
            interrupt = first if isinstance(first, PipelineInterrupted) else PipelineInterrupted()
            if first is not None and first is not interrupt and self.outcomes[0][0] != "closed":
                interrupt.add_note(f"before Ctrl-C: {_short_str(first)}")
            return interrupt
        if first is None or closing or self.outcomes[0][0] == "closed":
            return None
        if isinstance(first, StageError | PipelineCancelled | PipelineInterrupted):
            return first
        # Anything else (a KeyboardInterrupt of the program's own signal
        # handler, a MemoryError) is re-raised by the caller.
        return None

    def undeliver(self) -> None:
        """The outputs collected will not reach the caller after all: count them so."""
        self.undelivered += self.delivered
        self.delivered = 0

    def attach(self, error: BaseException, report: PipelineReport) -> None:
        """Attach the report, later errors and the threads left running to ``error``."""
        if isinstance(error, StageError | PipelineCancelled | PipelineInterrupted):
            error.report = report
        for _, later in self.outcomes[1:]:
            if isinstance(later, StageError):
                error.add_note(f"also: {later}")
        if self.left_running:
            error.add_note("left running, still inside user code: " + ", ".join(self.left_running))
        if isinstance(error, PipelineInterrupted):
            error.left_running = tuple(self.left_running)


def _new_queue(maxsize: int | None) -> SafeQueue[Any]:
    # A queue of a run: `maxsize` items (0: unbounded), or None for a bound
    # set by the first item put (see DEFAULT_QUEUE_BYTES).
    if maxsize is not None:
        return SafeQueue(maxsize)
    queue: SafeQueue[Any] = SafeQueue(DEFAULT_MAXSIZE)
    queue._fit_maxsize_to_first_item(DEFAULT_QUEUE_BYTES, MIN_DEFAULT_MAXSIZE)
    return queue
