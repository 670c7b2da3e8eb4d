"""PipelineStage, and the worker loop that feeds it. This module starts no thread.

The worker loop (:func:`run_worker`) takes batches from its input, counts
them, and hands each to a :class:`BatchRunner`, which calls ``process()``
with the stage's error policy, records the outcome and hands the outputs on.
User code is hostile: whatever it raises (``BaseException`` included), and
whatever its results' ``__bool__`` or its exceptions' ``__repr__`` do, the
worker reports it and goes on counting; it never dies of it.

Past 400 lines because the ABC and the runner still share it: the executors
work splits the runner into a pure ``process_batch`` (where a batch runs) and
the worker loop (what happens to its outcome), each in its own module.

Smart batching: a worker takes everything available from its input queue, up
to a cap, in one lock acquisition, processes the batch, and hands the outputs
on with one ``put_many``. Nothing waits for a batch to fill. The cap adapts to
the measured cost per item so that one batch takes about
:data:`BATCH_TARGET_SECONDS`: trivial stages move up to :data:`MAX_BATCH`
items per queue operation, slow stages one item at a time, which keeps the
work spread over all workers of a stage.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import chain, compress
from operator import length_hint
from time import monotonic, perf_counter_ns
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol

from ._compat import RUNTIME_DEFAULTS, TypeVar, fill_defaults
from ._exceptions import ShutDown, StageError
from ._policy import OnError, Retry
from ._report import DeadLetter, StageRecorder
from ._safequeue import Empty, Producer, SafeQueue

__all__ = [
    "BATCH_TARGET_SECONDS",
    "MAX_BATCH",
    "BatchRunner",
    "Inbox",
    "PipelineStage",
    "StageKind",
    "StageSpec",
    "Supervisor",
    "WorkerState",
    "kind_of",
    "next_batch_cap",
    "run_worker",
]

In = TypeVar("In", default=Any)
Out = TypeVar("Out", default=In)

MAX_BATCH = 8192
"""The most items a worker takes from its input queue at once."""

BATCH_TARGET_SECONDS = 0.002
"""The processing time per batch the adaptive cap aims for."""

_BATCH_TARGET_NS = round(BATCH_TARGET_SECONDS * 1e9)


class PipelineStage(ABC, Generic[In, Out]):
    """A step of a pipeline: ``process()`` runs in the stage's own worker threads.

    Implement :meth:`process`. Return a value to emit one output; write it as a
    generator (``yield``) to emit zero, one or many outputs per item. ``None``
    is ordinary data. ``PipelineStage[int]`` maps int to int;
    ``PipelineStage[Path, bytes]`` maps paths to bytes.

    >>> from pipeline import Pipeline
    >>> class Square(PipelineStage[int]):
    ...     def process(self, item: int) -> int:
    ...         return item * item
    >>> class Digits(PipelineStage[int, str]):
    ...     def process(self, item: int) -> Iterator[str]:
    ...         yield from str(item)
    >>> Pipeline[int]().add(Square()).add(Digits()).run([3, 4]).outputs
    ['9', '1', '6']

    Each worker thread calls :meth:`on_start` before its first item and
    :meth:`on_stop` after its last, to open and close per-worker resources.
    With ``workers > 1`` every worker gets its own shallow copy of the stage
    (the first worker uses the object itself): attributes that ``on_start``
    or ``process`` assign are per worker (``self.n += 1`` counts one worker's
    items), while objects created in ``__init__`` (a list, a lock) are shared
    by all workers, and shared mutable state needs a lock. A stage that keeps
    run-wide state in plain attributes sets ``single_worker = True``, and
    ``Pipeline.add`` then refuses ``workers > 1``.

    Args:
        name: the stage's name in logs, thread names and the report; defaults
            to the class name.
    """

    if not TYPE_CHECKING and not RUNTIME_DEFAULTS:  # a bare Python 3.11/3.12: see _compat

        def __class_getitem__(cls, params: Any) -> Any:
            return super().__class_getitem__(fill_defaults(cls, params))

    single_worker: ClassVar[bool] = False
    """Whether the stage must run in one worker (``add(..., workers=2)`` raises)."""

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"'name' must be a str, not {type(name).__name__}")
        self.name = name or type(self).__name__

    @abstractmethod
    def process(self, item: In) -> Out | Iterator[Out]:
        """Turn one input item into an output (return) or into outputs (yield).

        Called in one of the stage's worker threads, one item at a time per
        worker. An exception applies the stage's error policy.
        """

    def on_start(self) -> None:
        """Prepare a worker; called in each worker thread before its first item.

        An exception here fails the pipeline (hooks are not items, so the
        ``on_error`` policy does not apply).
        """

    def on_stop(self) -> None:
        """Clean up a worker; called in each worker thread after its last item.

        Runs on every path once :meth:`on_start` returned: normal end, error and
        cancellation. An exception here fails the pipeline unless it already
        failed.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r}>"


class StageKind(Enum):
    """How a stage's callable maps an item to outputs."""

    ONE = "one"  # returns one output
    MANY = "many"  # returns an iterable of outputs
    FILTER = "filter"  # returns a truth value; the item passes or not
    BATCH = "batch"  # collects items into lists


def kind_of(stage: PipelineStage[Any, Any]) -> tuple[StageKind, Callable[[Any], Any]]:
    """Return how to call ``stage``: its kind and the callable to apply per item.

    Stages may offer a faster equivalent of ``process`` through
    ``_fast_path()``; the built-in function adapters do.
    """
    fast = getattr(stage, "_fast_path", None)
    if fast is not None:
        found: tuple[StageKind, Callable[[Any], Any]] | None = fast()
        if found is not None:
            return found
    process = type(stage).process
    if inspect.isgeneratorfunction(process):
        return StageKind.MANY, stage.process
    return StageKind.ONE, stage.process


@dataclass(frozen=True, slots=True)
class StageSpec:
    """A stage as added to a pipeline, with its options, validated."""

    stage: PipelineStage[Any, Any]
    name: str
    workers: int
    ordered: bool
    maxsize: int | None
    on_error: OnError
    retry: Retry | None
    kind: StageKind
    batch_size: int = 0
    max_wait: float | None = None


class Inbox(Protocol):
    """Where a worker takes its batches from: a SafeQueue, or a source reader."""

    def _get_batch(self, max_items: int, deadline: float | None = None) -> list[Any]:
        """Wait for items, return up to ``max_items``; raise ShutDown at the end."""


class Supervisor(Protocol):
    """What a worker needs from the run that owns it."""

    cancelled: bool
    """Whether the run is being torn down (a plain attribute: read once per batch)."""

    def fail(self, error: StageError) -> None:
        """Report an error that must stop the run (first one wins)."""

    def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return False if cancelled meanwhile."""


class _Abort(Exception):  # noqa: N818 (internal control flow)
    """The worker must stop: fail-fast error reported, or run cancelled."""

    def __init__(self, *, item_failed: bool) -> None:
        super().__init__()
        self.item_failed = item_failed  # the item in hand failed, rather than being abandoned


class _Skipped(Exception):  # noqa: N818 (internal control flow)
    """The item became a dead letter."""


def _stop_iteration_error() -> RuntimeError:
    # map() takes a StopIteration from the callable for the end of its input;
    # without this check the rest of the batch would vanish silently.
    return RuntimeError("process() raised StopIteration")


class _SkippedResult:
    """Stands in for the result of an item that became a dead letter."""

    def __repr__(self) -> str:
        return "<skipped>"


_SKIPPED: Any = _SkippedResult()


def _truth(predicate: Callable[[Any], object]) -> Callable[[Any], bool]:
    # A filter's result is tested for truth as part of the item's call, so a
    # result whose __bool__ raises is that item's error, under its policy.
    return lambda item: bool(predicate(item))


class BatchRunner:
    """Process one batch with the stage's error policy, record it, hand it on.

    One per worker. ``run(batch)`` calls the stage on every item, records the
    batch (one recorder call), sizes the next one (``cap``), and then passes
    the outputs, in input order, to ``give`` (also when there are none).
    Handing on comes last: a thread that keeps running after waking the next
    stage's thread makes that thread wait for the GIL, a second wake-up on
    the path of a lone item.

    What ``process()`` raises: an ``Exception`` goes through ``retry`` and
    ``on_error``; anything else (``KeyboardInterrupt``, ``SystemExit``, a
    custom ``BaseException``) fails the run at once, naming the item. A
    fail-fast error is reported to the supervisor and ends the worker with
    ``_Abort``, after the batch was recorded: the items before it completed,
    it failed, the rest were abandoned.
    """

    __slots__ = ("_attempt", "call", "cap", "give", "kind", "name", "on_error", "recorder",
                 "retry", "run", "supervisor", "ticket")  # fmt: skip

    def __init__(
        self,
        spec: StageSpec,
        stage: PipelineStage[Any, Any],
        recorder: StageRecorder,
        supervisor: Supervisor,
        give: Callable[[list[Any]], None],
    ) -> None:
        kind, call = kind_of(stage)
        self.name = spec.name
        self.kind = kind
        self.call = call
        self.retry = spec.retry
        self.on_error = spec.on_error
        self.recorder = recorder
        self.supervisor = supervisor
        self.give = give
        self.cap = 1  # the first batch measures the cost per item
        self.ticket = 0  # the batch's place in line, for an ordered hand-off
        # How one item is tried again after a failure. A retried MANY item is
        # materialised, so a failure halfway through its outputs emits none
        # of them; a FILTER item's result is tested for truth in the try.
        self._attempt: Callable[[Any], Any] = (
            (lambda item: list(call(item)))
            if kind is StageKind.MANY
            else _truth(call)
            if kind is StageKind.FILTER
            else call
        )
        self.run: Callable[[list[Any]], None] = (
            self._one
            if kind is StageKind.ONE
            else self._filter
            if kind is StageKind.FILTER
            else self._many
        )

    def _finish(
        self, out: list[Any], completed: int, dropped: int, count: int, started: int
    ) -> None:
        # Record a batch of `count` items that went through, size the next
        # one, hand the outputs on.
        elapsed = perf_counter_ns() - started
        self.recorder.batch_done(completed, len(out), dropped, elapsed)
        self.cap = next_batch_cap(elapsed, count)
        self.give(out)

    def _call_each(
        self,
        batch: list[Any],
        started: int,
        results: list[Any],
        error: BaseException,
    ) -> tuple[list[Any], int]:
        # Call the stage on every item from len(results) on, with the error
        # policy; `error` is what stopped the first pass at that item. Return
        # the results in batch order (_SKIPPED for a dead letter, a bool for
        # a filter) and how many items became dead letters. On a fail-fast
        # error, record the batch so far and re-raise _Abort.
        call = self._attempt if self.kind is StageKind.FILTER else self.call
        failed = 0
        while True:
            index = len(results)
            try:
                results.append(self._recover(batch[index], error))
            except _Skipped:
                failed += 1
                results.append(_SKIPPED)
            except _Abort as abort:
                done = [r for r in results if r is not _SKIPPED]
                if self.kind is StageKind.FILTER:
                    out = list(compress(batch, [r is True for r in results]))
                else:
                    out = done
                self._stopped(
                    out, len(done), len(done) - len(out), abort, len(batch) - index, started
                )
                raise
            start = len(results)
            if start == len(batch):
                return results, failed
            try:
                # list.extend keeps what map produced before an exception,
                # so the failing item is the one at len(results).
                results.extend(map(call, batch[start:]))
                if len(results) == len(batch):
                    return results, failed
                error = _stop_iteration_error()
            except BaseException as exc:  # noqa: BLE001 (the error policy decides)
                error = exc

    def _one(self, batch: list[Any]) -> None:
        started = perf_counter_ns()
        # The common case inlined (no failure): every call up to the hand-off
        # is paid once per batch, and a lone item's latency pays for each.
        out: list[Any] = []
        error: BaseException
        n = len(batch)
        try:
            if n == 1:
                out.append(self.call(batch[0]))  # a lone item: cheaper than map()
            else:
                out.extend(map(self.call, batch))
        except StopIteration:
            error = _stop_iteration_error()  # as map() would have it, below
        except BaseException as exc:  # noqa: BLE001 (the error policy decides, below)
            error = exc
        else:
            if len(out) == n:
                elapsed = perf_counter_ns() - started
                self.recorder.batch_done(n, n, 0, elapsed)
                self.cap = next_batch_cap(elapsed, n)
                self.give(out)
                return
            error = _stop_iteration_error()
        out, failed = self._call_each(batch, started, out, error)
        if failed:
            out = [r for r in out if r is not _SKIPPED]
        self._finish(out, n - failed, 0, n, started)

    def _filter(self, batch: list[Any]) -> None:
        started = perf_counter_ns()
        n = len(batch)
        # One pass with filter(). It takes a StopIteration from the predicate
        # for the end of its input, so the batch is followed by a marker that
        # notes whether filter() really went past the last item.
        out: list[Any] = []
        items = iter(batch)
        end = _EndMarker()
        error: BaseException
        try:
            out.extend(filter(self.call, chain(items, end)))
        except BaseException as exc:  # noqa: BLE001 (the error policy decides, below)
            error = exc
        else:
            if end.reached:
                self._finish(out, n, n - len(out), n, started)
                return
            error = _stop_iteration_error()
        index = n - 1 - length_hint(items)  # the item filter() was calling
        keep, failed = self._call_each(batch, started, _passed_flags(batch, index, out), error)
        if failed:
            keep = [flag is True for flag in keep]
        out = list(compress(batch, keep))
        completed = n - failed
        self._finish(out, completed, completed - len(out), n, started)

    def _many(self, batch: list[Any]) -> None:
        started = perf_counter_ns()
        out: list[Any] = []
        call = self.call
        failed = dropped = 0
        for index, item in enumerate(batch):
            mark = len(out)
            try:
                out.extend(call(item))
            except BaseException as exc:  # noqa: BLE001 (the error policy decides)
                del out[mark:]
                try:
                    out.extend(self._recover(item, exc))
                except _Skipped:
                    failed += 1
                    continue
                except _Abort as abort:
                    self._stopped(out, index - failed, dropped, abort, len(batch) - index, started)
                    raise
            if len(out) == mark:
                dropped += 1
        n = len(batch)
        self._finish(out, n - failed, dropped, n, started)

    def _stopped(
        self, out: list[Any], completed: int, dropped: int, abort: _Abort, rest: int, started: int
    ) -> None:
        # Record a batch that stopped part way (`rest` items from the one that
        # stopped it on), then offer the outputs of the items before: the run
        # is ending, so the downstream queue refuses them, and counts them.
        self.recorder.batch_stopped(
            completed=completed,
            emitted=len(out),
            dropped=dropped,
            failed=abort.item_failed,
            abandoned=rest - abort.item_failed,
            nanoseconds=perf_counter_ns() - started,
        )
        self.give(out)

    def _recover(self, item: Any, exc: BaseException) -> Any:
        # Retry per policy; return the successful result, or record a dead
        # letter and raise _Skipped, or report the error and raise _Abort.
        attempts = 1
        retry = self.retry
        while isinstance(exc, Exception) and retry is not None and attempts < retry.attempts:
            if not _retries(retry, exc):
                break
            self.recorder.retrying()
            if not self.supervisor.pause(retry.delay(attempts)):
                raise _Abort(item_failed=False)  # cancelled while waiting: not processed
            attempts += 1
            try:
                return self._attempt(item)
            except StopIteration:
                exc = _stop_iteration_error()  # as on the first try
            except BaseException as again:  # noqa: BLE001 (the error policy decides)
                exc = again
        if self.on_error == "skip" and isinstance(exc, Exception):
            self.recorder.gave_up(DeadLetter(self.name, item, exc, attempts))
            raise _Skipped
        self.supervisor.fail(StageError(self.name, exc, item=item, has_item=True))
        raise _Abort(item_failed=True)


def _retries(retry: Retry, exc: Exception) -> bool:
    # Whether to retry exc; an `on` type whose isinstance check raises does
    # not retry (the error keeps its policy instead of killing the worker).
    try:
        return retry.retries(exc)
    except BaseException:  # noqa: BLE001 (hostile __instancecheck__)
        return False


class _EndMarker:
    """Follows a batch in a chain(): notes whether the chain got past the batch."""

    __slots__ = ("reached",)

    def __init__(self) -> None:
        self.reached = False

    def __iter__(self) -> Iterator[Any]:
        self.reached = True
        return iter(())


def _passed_flags(batch: list[Any], count: int, passed: list[Any]) -> list[Any]:
    # Which of the first `count` items of `batch` a filter passed, given the
    # ones it passed, in order. Matching by identity, an object that occurs
    # twice may be marked at the other place: the outputs are the same.
    flags: list[Any] = []
    matched = 0
    for item in batch[:count]:
        hit = matched < len(passed) and passed[matched] is item
        flags.append(hit)
        matched += hit
    return flags


def next_batch_cap(nanoseconds: int, count: int) -> int:
    """Size the next batch so that it takes about BATCH_TARGET_SECONDS.

    ``count`` items took ``nanoseconds`` (as ``perf_counter_ns()`` measures).
    """
    # Integer comparisons rather than min(), max() and int(): this runs once
    # per batch, on the path of a lone item, where each builtin call shows.
    if nanoseconds * MAX_BATCH <= _BATCH_TARGET_NS * count:
        return MAX_BATCH  # also when the clock did not advance
    cap: int = _BATCH_TARGET_NS * count // nanoseconds
    return cap if cap > 1 else 1


class WorkerState:
    """Where one worker thread is, for a run that may have to stop waiting for it.

    Written by the worker only at its few turning points (not per batch), read
    by the runner: ``"starting"``, ``"on_start"``, ``"process"`` (the loop,
    which calls ``process()``), ``"on_stop"``, ``"done"``.
    """

    __slots__ = ("where",)

    def __init__(self) -> None:
        self.where = "starting"


def run_worker(
    spec: StageSpec,
    stage: PipelineStage[Any, Any],
    inbox: Inbox,
    outbox: Producer[Any],
    supervisor: Supervisor,
    recorder: StageRecorder,
    state: WorkerState,
) -> None:
    """Run one worker of a stage until its input ends or the run is cancelled.

    Calls the hooks, moves batches from ``inbox`` through the stage into
    ``outbox``, and always closes ``outbox`` (the last worker to close it ends
    the downstream stream). Errors go to ``supervisor.fail``; nothing escapes,
    whatever user code raises.
    """
    try:
        try:
            state.where = "on_start"
            stage.on_start()
        except BaseException as exc:  # noqa: BLE001 (reported to the supervisor)
            supervisor.fail(StageError(spec.name, exc, where="on_start"))
            return
        try:
            state.where = "process"
            if spec.kind is StageKind.BATCH:
                if not isinstance(inbox, SafeQueue):  # a batch stage always has a queue
                    raise TypeError("a batch stage needs a SafeQueue inbox")
                _batch_loop(spec, inbox, outbox, supervisor, recorder)
            else:
                _item_loop(spec, stage, inbox, outbox, supervisor, recorder)
        except _Abort:
            pass
        except BaseException as exc:  # noqa: BLE001 (reported to the supervisor)
            recorder.abandon_in_hand()
            supervisor.fail(StageError(spec.name, exc, where="process"))
        finally:
            try:
                state.where = "on_stop"
                stage.on_stop()
            except BaseException as exc:  # noqa: BLE001 (reported to the supervisor)
                supervisor.fail(StageError(spec.name, exc, where="on_stop"))
    finally:
        state.where = "done"
        outbox.close()


def _item_loop(
    spec: StageSpec,
    stage: PipelineStage[Any, Any],
    inbox: Inbox,
    outbox: Producer[Any],
    supervisor: Supervisor,
    recorder: StageRecorder,
) -> None:
    # The hot loop: one get, then the runner processes the batch and hands
    # it on; a lone item's latency pays for every line here. The batch is
    # counted as taken before any user code sees it.
    downstream = outbox.queue
    if spec.ordered and spec.workers > 1 and isinstance(inbox, SafeQueue):
        # Batches are numbered as they are taken and handed on in that order.
        # Up to `window` finished batches may wait for an earlier one; then
        # the worker itself waits: a bounded reorder window.
        window = 2 * spec.workers
        in_turn = downstream._put_many_in_turn
        runner = BatchRunner(
            spec, stage, recorder, supervisor, lambda out: in_turn(runner.ticket, out, window)
        )
        ticketed = inbox._get_many_ticketed
        process = runner.run
        try:
            while not supervisor.cancelled:
                runner.ticket, batch = ticketed(runner.cap)
                recorder.in_hand = n = len(batch)
                recorder.taken += n
                process(batch)
        except ShutDown:
            pass
        return
    runner = BatchRunner(spec, stage, recorder, supervisor, downstream._put_batch)
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
        recorder.batch_done(len(batch), 1, 0, 0)
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
