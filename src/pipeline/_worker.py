"""The worker loop: take a batch, have it processed somewhere, apply the outcome, hand on.

This module starts no thread and owns no lock. One worker thread runs
:func:`run_worker` per worker of a stage. Where its batches are processed is
the worker's *handle* (see :mod:`pipeline._executors`): in the thread itself,
in a worker process, or in a ``concurrent.futures.Executor``. Whatever ran
the batch, its :class:`~pipeline._batch.BatchOutcome` comes back here, and
this thread applies it: the error policy (retry with a cancellable back-off,
dead letter, or fail-fast), the books, the size of the next batch and the
blocking hand-off downstream. So a remote executor never has to honour a
cancellation in the middle of a retry, and every executor applies the
policies in exactly the same way.

User code is hostile: whatever it raises (``BaseException`` included), and
whatever its results' ``__bool__`` or its exceptions' ``__repr__`` do, the
worker reports it and goes on counting; it never dies of it.

Smart batching: a worker takes everything available from its input queue, up
to a cap, in one lock acquisition, has the batch processed, and hands the
outputs on with one ``put_many``. Nothing waits for a batch to fill. The cap
adapts to the measured cost per item (see :func:`~pipeline._stage.next_batch_cap`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from time import monotonic, perf_counter_ns, thread_time_ns
from typing import TYPE_CHECKING, Any

from ._batch import BatchAbandoned, BatchOutcome
from ._exceptions import ShutDown, StageError
from ._report import DeadLetter, StageRecorder
from ._safequeue import Empty, Producer, SafeQueue, thread_waits
from ._stage import Inbox, StageKind, StageSpec, Supervisor, WorkerState, next_batch_cap

if TYPE_CHECKING:
    from ._executors import WorkerHandle
    from ._ordering import ReorderWindow, Slot

__all__ = ["BatchRunner", "run_worker"]


class _Abort(Exception):  # noqa: N818 (internal control flow)
    """The worker must stop: fail-fast error reported, or run cancelled."""

    def __init__(self, *, item_failed: bool) -> None:
        super().__init__()
        self.item_failed = item_failed  # the item in hand failed, rather than being abandoned


class _Skipped(Exception):  # noqa: N818 (internal control flow)
    """The item became a dead letter."""


class BatchRunner:
    """Have one batch processed, apply its outcome, record it, hand it on.

    One per worker. ``run(batch)`` passes the batch to ``process`` (the
    worker handle's: it may run anywhere) and applies the outcome: it
    records the batch (one recorder call), sizes the next one (``cap``), and
    then passes the outputs, in input order, to ``give`` (also when there
    are none). Handing on comes last: a thread that keeps running after
    waking the next stage's thread makes that thread wait for the GIL, a
    second wake-up on the path of a lone item.

    When an item raised: an ``Exception`` goes through ``retry`` (the item is
    processed again, alone, after a back-off that a cancellation cuts short)
    and ``on_error``; anything else (``KeyboardInterrupt``, ``SystemExit``, a
    custom ``BaseException``) fails the run at once, naming the item. The
    items after it are then processed as a batch of their own. A fail-fast
    error is reported to the supervisor and ends the worker with ``_Abort``,
    after the batch was recorded: the items before it completed, it failed,
    the rest were abandoned.
    """

    __slots__ = ("cap", "give", "name", "on_error", "process", "recorder", "retry",
                 "slot", "supervisor", "target_ns")  # fmt: skip

    def __init__(
        self,
        spec: StageSpec,
        process: Callable[[list[Any]], BatchOutcome],
        recorder: StageRecorder,
        supervisor: Supervisor,
        give: Callable[[list[Any]], None],
        target_ns: int,
    ) -> None:
        self.name = spec.name
        self.process = process
        self.retry = spec.retry
        self.on_error = spec.on_error
        self.recorder = recorder
        self.supervisor = supervisor
        self.give = give
        self.target_ns = target_ns  # how long one batch should take
        self.cap = 1  # the first batch measures the cost per item
        self.slot: Slot | None = None  # the batch's place in line, for an ordered hand-off

    def run(self, batch: list[Any]) -> None:
        """Process ``batch``, apply the outcome and hand the outputs on."""
        try:
            outcome = self.process(batch)
        except BatchAbandoned:
            self._stopped(batch, [], 0, 0, _Abort(item_failed=False), 0, 0)
            raise _Abort(item_failed=False) from None
        out, completed, dropped, error, nanoseconds = outcome
        if error is None:
            # The common case, kept short: a lone item's latency pays for it.
            self.recorder.batch_done(len(batch), completed, len(out), dropped, nanoseconds)
            self.cap = next_batch_cap(nanoseconds, len(batch), self.target_ns)
            self.give(out)
            return
        self._resume(batch, outcome)

    def _resume(self, batch: list[Any], outcome: BatchOutcome) -> None:
        # An item raised: apply the policy to it, then process the rest of
        # the batch, until the batch is through or the worker must stop.
        out, completed, dropped, error, nanoseconds = outcome
        failed = 0
        index = completed  # the item that raised
        while error is not None:
            try:
                again, _, emptied, _, took = self._recover(batch[index], error)
            except _Skipped:
                failed += 1
            except _Abort as abort:
                self._stopped(batch, out, completed, dropped, abort, index, nanoseconds)
                raise
            else:
                out += again
                completed += 1
                dropped += emptied
                nanoseconds += took
            start = index + 1
            if start == len(batch):
                break
            try:
                more, done, empty, error, took = self.process(batch[start:])
            except BatchAbandoned:
                abandoned = _Abort(item_failed=False)
                self._stopped(batch, out, completed, dropped, abandoned, start, nanoseconds)
                raise abandoned from None
            out += more
            completed += done
            dropped += empty
            nanoseconds += took
            index = start + done
        self.recorder.batch_done(len(batch), completed, len(out), dropped, nanoseconds)
        self.cap = next_batch_cap(nanoseconds, len(batch), self.target_ns)
        self.give(out)

    def _stopped(
        self,
        batch: list[Any],
        out: list[Any],
        completed: int,
        dropped: int,
        abort: _Abort,
        stopped_at: int,
        nanoseconds: int,
    ) -> None:
        # Record a batch that stopped part way (at item `stopped_at`), then
        # offer the outputs of the items before: the run is ending, so the
        # downstream queue refuses them, and counts them.
        rest = len(batch) - stopped_at
        self.recorder.batch_stopped(
            size=len(batch),
            completed=completed,
            emitted=len(out),
            dropped=dropped,
            failed=abort.item_failed,
            abandoned=rest - abort.item_failed,
            nanoseconds=nanoseconds,
        )
        self.give(out)

    def _recover(self, item: Any, exc: BaseException) -> BatchOutcome:
        # Retry per policy; return the outcome of the try that succeeded, or
        # record a dead letter and raise _Skipped, or report the error and
        # raise _Abort.
        attempts = 1
        retry = self.retry
        while isinstance(exc, Exception) and retry is not None and attempts < retry.attempts:
            if not _retries(retry, exc):
                break
            self.recorder.retrying(item, exc, attempts)
            if not self.supervisor.pause(retry.delay(attempts)):
                raise _Abort(item_failed=False)  # cancelled while waiting: not processed
            attempts += 1
            try:
                again = self.process([item])
            except BatchAbandoned:
                raise _Abort(item_failed=False) from None
            if again[3] is None:  # its error
                return again
            exc = again[3]
        if self.on_error == "skip" and isinstance(exc, Exception):
            self.recorder.gave_up(DeadLetter(self.name, item, exc, attempts))
            raise _Skipped
        self.recorder.failing(item, exc)
        self.supervisor.fail(StageError(self.name, exc, item=item, has_item=True))
        raise _Abort(item_failed=True)


class _FixedBatches(BatchRunner):
    """A BatchRunner whose batches hold at most ``size`` items, whatever they cost.

    For a stage whose executor sets its batch size (``Dask(batch_size=...)``):
    ``cap`` is a read-only view here, so the adaptive sizing's writes to it
    in the shared hot path are dropped, at no cost to the other runners.
    """

    __slots__ = ("_size",)

    def __init__(self, size: int, *args: Any) -> None:
        self._size = size
        super().__init__(*args)

    @property
    def cap(self) -> int:
        return self._size

    @cap.setter
    def cap(self, value: int) -> None:
        pass  # the size is fixed


def _retries(retry: Any, exc: Exception) -> bool:
    # Whether to retry exc; an `on` type whose isinstance check raises does
    # not retry (the error keeps its policy instead of killing the worker).
    try:
        return bool(retry.retries(exc))
    except BaseException:  # noqa: BLE001 (hostile __instancecheck__)
        return False


def run_worker(
    spec: StageSpec,
    handle: WorkerHandle,
    inbox: Inbox,
    outbox: Producer[Any],
    supervisor: Supervisor,
    recorder: StageRecorder,
    state: WorkerState,
    window: ReorderWindow | None = None,
) -> None:
    """Run one worker of a stage until its input ends or the run is cancelled.

    Calls the hooks (wherever the handle runs the stage), moves batches from
    ``inbox`` through the stage into ``outbox`` (through ``window``, which
    keeps them in input order, for an ordered stage with several workers),
    and always closes ``outbox``
    (the last worker to close it ends the downstream stream). Errors go to
    ``supervisor.fail``; nothing escapes, whatever user code raises.
    """
    try:
        try:
            state.where = "on_start"
            handle.start()
        except BatchAbandoned:
            return  # cancelled while the worker was starting: nothing to stop
        except BaseException as exc:  # noqa: BLE001 (reported to the supervisor)
            supervisor.fail(StageError(spec.name, exc, where="on_start"))
            return
        recorder.worker_started()
        # The worker thread's CPU time, for the report's verdict: a thread
        # stage that burns a core under the GIL is CPU-bound.
        cpu_started = thread_time_ns() if spec.executor == "thread" else None
        recorder.ready_ns = perf_counter_ns()  # its capacity counts from now to the run's end
        try:
            state.where = "process"
            if spec.kind is StageKind.BATCH:
                if not isinstance(inbox, SafeQueue):  # a batch stage always has a queue
                    raise TypeError("a batch stage needs a SafeQueue inbox")
                _batch_loop(spec, inbox, outbox, supervisor, recorder)
            else:
                _item_loop(spec, handle, inbox, outbox, supervisor, recorder, window)
        except _Abort:
            pass
        except BaseException as exc:  # noqa: BLE001 (reported to the supervisor)
            recorder.abandon_in_hand()
            supervisor.fail(StageError(spec.name, exc, where="process"))
        finally:
            if cpu_started is not None:
                recorder.cpu_ns = thread_time_ns() - cpu_started
            recorder.dispatch_ns = getattr(handle, "dispatch_ns", 0)  # kept by a Dask handle
            recorder.starved_s, recorder.blocked_s = thread_waits()  # this thread's own
            try:
                state.where = "on_stop"
                handle.stop()
            except BaseException as exc:  # noqa: BLE001 (reported to the supervisor)
                supervisor.fail(StageError(spec.name, exc, where="on_stop"))
    finally:
        state.where = "done"
        try:
            recorder.worker_stopped()
        finally:
            outbox.close()


def _item_loop(
    spec: StageSpec,
    handle: WorkerHandle,
    inbox: Inbox,
    outbox: Producer[Any],
    supervisor: Supervisor,
    recorder: StageRecorder,
    window: ReorderWindow | None,
) -> None:
    # The hot loop: one get, then the runner has the batch processed and
    # hands it on; a lone item's latency pays for every line here. The batch
    # is counted as taken before any user code sees it.
    target = handle.batch_target_ns
    fixed = getattr(handle, "batch_size", None)
    make_runner: Callable[..., BatchRunner] = (
        BatchRunner if fixed is None else partial(_FixedBatches, fixed)
    )
    if window is not None:
        # Each batch gets its slot in line as it is taken; the window hands
        # the outputs on in that order.
        give = window.give
        runner: BatchRunner = make_runner(
            spec,
            handle.process,
            recorder,
            supervisor,
            lambda out: give(runner.slot, out),  # type: ignore[arg-type]  # set before any give
            target,
        )
        take_in_line = window.take
        process = runner.run
        try:
            while not supervisor.cancelled:
                runner.slot, batch = take_in_line(runner.cap)
                recorder.in_hand = n = len(batch)
                recorder.taken += n
                process(batch)
        except ShutDown:
            pass
        return
    downstream = outbox.queue
    runner = make_runner(spec, handle.process, recorder, supervisor, downstream._put_batch, target)
    process = runner.run
    take = inbox._get_batch
    try:
        while not supervisor.cancelled:
            batch = take(runner.cap)
            recorder.in_hand = n = len(batch)
            recorder.taken += n
            process(batch)
    except ShutDown:
        pass


def _batch_loop(
    spec: StageSpec,
    inbox: SafeQueue[Any],
    outbox: Producer[Any],
    supervisor: Supervisor,
    recorder: StageRecorder,
) -> None:
    # Items taken are in hand until their list is handed on; a list that
    # cannot be handed on (the run was cancelled) is counted by the queue.
    size = spec.batch_size
    max_wait = spec.max_wait
    buffer: list[Any] = []
    deadline = 0.0
    put = outbox.queue._put_batch

    def emit() -> None:
        nonlocal buffer
        batch, buffer = buffer, []
        recorder.batch_done(len(batch), len(batch), 1, 0, 0)
        put([batch])

    try:
        while not supervisor.cancelled:
            wait = None
            if buffer and max_wait is not None:
                wait = max(0.0, deadline - monotonic())
            try:
                items = inbox.get_many(size - len(buffer), wait)
            except Empty:
                emit()
                continue
            recorder.taken += len(items)
            if not buffer and max_wait is not None:
                deadline = monotonic() + max_wait
            buffer.extend(items)
            recorder.in_hand = len(buffer)
            if len(buffer) >= size:
                emit()
        # Cancelled: the partial list stays behind, counted as in hand.
    except ShutDown:
        if buffer and not supervisor.cancelled:
            emit()
