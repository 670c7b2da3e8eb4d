"""Pipeline: the builder, and the runner that owns every thread of a run.

This is the only module that starts and joins threads.

How a run ends (the poison pill that cannot be miscounted): every queue
between two stages counts its producers. The runner registers them all before
any thread starts: one handle for the source feeder on the first queue, one per
worker of stage ``i`` on queue ``i + 1``. A worker closes its handle when its
input has ended and it has handed on its last output; the last close shuts the
queue down gracefully, so every worker of the next stage drains what is left
and then sees end of stream. No pill is ever counted by hand.

How the source is read: a ``SafeQueue`` source is the first stage's input
queue itself (its own producers end it). An in-memory collection feeding a
single-worker first stage is read by that worker, in chunks. Anything else is
read by a feeder thread: collections in chunks, other iterables item by item,
so no item waits in the feeder while the source blocks for the next one.

How a run is cancelled (an error, ``cancel()``, a timeout, Ctrl-C, a stream
closed early): every queue is shut down immediately, which wakes every blocked
put and get; the feeder stops reading the source; each worker finishes the
item in hand, runs ``on_stop`` and exits; the runner joins them all.
"""

from __future__ import annotations

import copy
import functools
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import length_hint
from time import monotonic, perf_counter, perf_counter_ns
from types import TracebackType
from typing import Any, Generic, Self, TypedDict, TypeVar, Unpack

from ._compat import TypeVar as DefaultTypeVar
from ._exceptions import (
    PipelineCancelled,
    PipelineStateError,
    PipelineTimeout,
    ShutDown,
    StageError,
)
from ._policy import OnError, Retry, check_on_error
from ._report import PipelineReport, RunStatus, StageRecorder, StageReport
from ._safequeue import Empty, Producer, SafeQueue
from ._stage import (
    MAX_BATCH,
    Inbox,
    PipelineStage,
    StageKind,
    StageSpec,
    kind_of,
    next_batch_cap,
    run_worker,
)
from .stages import EachStage, FilterStage, FlatMapStage, MapStage

__all__ = [
    "DEFAULT_MAXSIZE",
    "DEFAULT_QUEUE_BYTES",
    "MIN_DEFAULT_MAXSIZE",
    "Pipeline",
    "RunResult",
    "StageOptions",
    "Stream",
]

logger = logging.getLogger("pipeline")

In = DefaultTypeVar("In", default=Any)
Out = DefaultTypeVar("Out", default=In)
R = TypeVar("R")
T = TypeVar("T")

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
``maxsize`` yourself.
"""

MIN_DEFAULT_MAXSIZE = 16
"""The fewest items a queue holds when its bound was set from the item size."""


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name!r} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name!r} must be at least {minimum}, got {value}")
    return value


def _check_seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name!r} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name!r} must be a non-negative number of seconds, got {value!r}")
    return float(value)


class StageOptions(TypedDict, total=False):
    """The per-stage options of :meth:`Pipeline.add`, ``map``, ``filter``, ``flat_map``, ``each``.

    >>> options: StageOptions = {"workers": 4, "ordered": False, "on_error": "skip"}
    >>> sorted(Pipeline[int]().map(abs, **options).run([-2, 1]).outputs)
    [1, 2]

    Attributes:
        workers: threads running the stage (default 1).
        name: the stage's name (thread names are ``"<name>-<n>"``); defaults to
            the stage's own name or the function's name.
        ordered: with several workers, emit in input order (default ``True``)
            through a bounded reorder window; ``False`` emits as items finish.
        maxsize: the bound of the stage's *input* queue, in items (default:
            the pipeline's ``maxsize``; if that is ``None`` too, set from the
            size of the first item, see :data:`DEFAULT_QUEUE_BYTES`).
        on_error: ``"raise"`` (fail-fast, default) or ``"skip"`` (dead letter).
        retry: a :class:`~pipeline.Retry` policy applied before ``on_error``.
    """

    workers: int
    name: str | None
    ordered: bool
    maxsize: int | None
    on_error: OnError
    retry: Retry | None


@dataclass(frozen=True, slots=True)
class RunResult(Generic[T]):
    """What :meth:`Pipeline.run` returns: the outputs, in order, and the report.

    >>> result = Pipeline[int]().map(lambda x: x * 10).run([1, 2])
    >>> result.outputs, result.report.outputs
    ([10, 20], 2)
    """

    outputs: list[T]
    report: PipelineReport


class _ReportBox:
    # Shared by a Stream and its generator, so the generator never refers to
    # the Stream: no cycle, and dropping the Stream closes the run at once.
    __slots__ = ("report",)

    def __init__(self) -> None:
        self.report: PipelineReport | None = None


class Stream(Generic[T]):
    """The lazy outputs of :meth:`Pipeline.stream`: an iterator you can close.

    Threads start at the first ``next()``. Closing the stream (``close()``, the
    end of a ``with`` block, or breaking out of a ``for`` loop over it, which
    drops it) cancels the run, stops reading the source and joins every
    thread before returning. ``report`` is set once the run has ended.

    >>> from pipeline import Pipeline
    >>> with Pipeline[int]().map(lambda x: x + 1).stream(range(10**9)) as outputs:
    ...     first = [next(outputs) for _ in range(3)]
    >>> first, outputs.report.status
    ([1, 2, 3], 'closed')
    """

    def __init__(self, outputs: Iterator[T], box: _ReportBox) -> None:
        self._outputs = outputs
        self._box = box

    @property
    def report(self) -> PipelineReport | None:
        """The run's report once it has ended, else ``None``."""
        return self._box.report

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        return next(self._outputs)

    def close(self) -> None:
        """Stop the run and join its threads; idempotent."""
        close = getattr(self._outputs, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Run:
    """One execution of a pipeline: its queues, threads, counters and outcome."""

    def __init__(
        self,
        specs: tuple[StageSpec, ...],
        final_maxsize: int | None,
        source: Iterator[Any] | SafeQueue[Any],
        *,
        in_memory: bool = False,
        sequence: list[Any] | tuple[Any, ...] | range | None = None,
    ) -> None:
        self.specs = specs
        # A SafeQueue source is consumed by the first stage itself: no feeder
        # thread, one hand-off less per item.
        self.source = source
        self.direct = isinstance(source, SafeQueue)
        self.in_memory = in_memory
        # A list, tuple or range source is read by slicing it, not through
        # its iterator: a copy in C instead of a call per item.
        self.sequence = sequence
        if isinstance(source, SafeQueue):
            head: SafeQueue[Any] = source
        else:
            head = _new_queue(specs[0].maxsize if specs else final_maxsize)
        # queues[i] feeds stage i; queues[-1] holds the outputs. With no stage
        # the head queue is the output queue.
        self.queues: list[SafeQueue[Any]] = [head]
        if specs:
            self.queues += [_new_queue(spec.maxsize) for spec in specs[1:]]
            self.queues.append(_new_queue(final_maxsize))
        self.recorders = [[StageRecorder() for _ in range(spec.workers)] for spec in specs]
        self.threads: list[threading.Thread] = []
        self.claimed = False
        # Items read from an iterator source; written only by the one thread
        # that reads it (the feeder, or a lone first worker reading itself).
        self.fed = 0
        self.delivered = 0  # written by the consuming thread only
        # The first entry decides how the run ended; later ones are attached
        # to the raised error as notes. list.append is atomic, on free-threaded
        # builds too, so the first to append wins without a lock.
        self.outcomes: list[tuple[RunStatus, BaseException]] = []
        # Read by every worker once per batch: a plain attribute, set once.
        self.cancelled = False
        # The one synchronisation object outside the queue module: it lets a
        # retry back-off sleep be cut short by a cancellation.
        self._stopping = threading.Event()
        self.started = perf_counter()
        self.elapsed = 0.0

    # -- the Supervisor protocol, used by the workers --------------------------

    def fail(self, error: StageError) -> None:
        logger.debug("run failing: %s", error)
        self._end("failed", error)

    def pause(self, seconds: float) -> bool:
        return not self._stopping.wait(seconds)

    # -- control ----------------------------------------------------------------

    def cancel(self, status: RunStatus, reason: BaseException) -> None:
        self._end(status, reason)

    def _end(self, status: RunStatus, reason: BaseException) -> None:
        self.outcomes.append((status, reason))
        self.cancelled = True
        self._stopping.set()
        for queue in self.queues:
            queue.shutdown(immediate=True)

    @property
    def read(self) -> int:
        """Items read from the source: fed by the feeder, or taken from a queue source."""
        if not self.direct:
            return self.fed
        if self.specs:
            return sum(r.received for r in self.recorders[0])
        return self.delivered

    def claim_source(self) -> None:
        """Reserve a queue source's ordered hand-off for this run, if it needs one.

        Raises :class:`PipelineStateError`, with no side effect, if another run
        holds it. Call before :meth:`start`, outside the cancel-on-error block.
        """
        if isinstance(self.source, SafeQueue) and self.specs:
            first = self.specs[0]
            if first.ordered and first.workers > 1:
                # Batches are numbered from the source queue's ticket count,
                # which earlier runs may have advanced.
                self.queues[1]._turn = self.source._claim_tickets(self)
                self.claimed = True

    def start(self) -> None:
        """Register every producer, then start the feeder and the workers."""
        self.started = perf_counter()  # a stream starts at its first next()
        plans: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = []
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
                first_inbox = _SourceReader(self.source, self, maxsize, self.sequence)
            else:
                feed = functools.partial(self._feed, in_memory=self.in_memory)
                plans.append(("pipeline-source", feed, (self.source, self.queues[0].producer())))
        for index, spec in enumerate(self.specs):
            for number in range(spec.workers):
                stage = spec.stage if number == 0 else copy.copy(spec.stage)
                args = (
                    spec,
                    stage,
                    first_inbox if index == 0 else self.queues[index],
                    self.queues[index + 1].producer(),
                    self,
                    self.recorders[index][number],
                )
                plans.append((f"{spec.name}-{number + 1}", run_worker, args))
        for name, target, args in plans:
            thread = threading.Thread(target=target, name=name, args=args, daemon=True)
            # Listed before start(): a Ctrl-C can interrupt start() after the
            # new thread is already running, and it must still be joined.
            self.threads.append(thread)
            thread.start()

    def _feed(self, source: Iterator[Any], handle: Producer[Any], *, in_memory: bool) -> None:
        try:
            if in_memory:
                self._feed_chunks(source, handle)
            else:
                self._feed_items(source, handle)
        except ShutDown:
            return
        except BaseException as exc:  # noqa: BLE001 (reported, then raised by the runner)
            self.fail(StageError("source", exc, where="source"))
        finally:
            handle.close()

    def _feed_chunks(self, source: Iterator[Any], handle: Producer[Any]) -> None:
        # An in-memory collection cannot block, so read it in chunks sized like
        # worker batches, with the reader a lone first worker would use. It
        # raises ShutDown at the end, and on a source error after failing the run.
        reader = _SourceReader(source, self, MAX_BATCH, self.sequence)
        cap = 1
        while not self.cancelled:
            started = perf_counter_ns()
            chunk = reader._get_batch(cap)
            handle.put_many(chunk)
            cap = next_batch_cap(perf_counter_ns() - started, len(chunk))

    def _feed_items(self, source: Iterator[Any], handle: Producer[Any]) -> None:
        # Any other iterable may block between items (a socket, a queue, a
        # slow generator): hand each item on before asking for the next, so no
        # item waits inside the feeder. A cancelled run shuts the queue down,
        # so the put raises ShutDown and the loop ends.
        put = handle.put
        count = 0
        try:
            for item in source:
                count += 1
                put(item)
        finally:
            self.fed += count

    def next_outputs(self, deadline: float | None) -> list[Any]:
        """Return the next batch of outputs; ``[]`` once the run has ended."""
        try:
            batch = self.queues[-1]._get_batch(MAX_BATCH, deadline)
        except ShutDown:
            return []
        except Empty:
            batch = []
        if deadline is not None and (not batch or monotonic() >= deadline):
            self.cancel("timed out", PipelineTimeout("the run's timeout elapsed"))
        return batch

    def collect(self, deadline: float | None) -> list[Any]:
        """Wait for the end of the run, then take every output at once.

        The output queue of a collecting run is unbounded (the outputs are all
        kept anyway), so nobody waits on it until the end: no wake-up per batch.
        """
        final = self.queues[-1]
        if not final._wait_for_shutdown(deadline):
            self.cancel("timed out", PipelineTimeout("the run's timeout elapsed"))
            return []
        outputs: list[Any] = []
        try:
            while True:
                outputs += final.get_many(sys.maxsize, 0)  # all of it: one list copy
        except (ShutDown, Empty):
            pass
        self.delivered = len(outputs)
        return outputs

    def join(self) -> None:
        """Join every thread of the run."""
        for thread in self.threads:
            _join(thread)
        if self.claimed and isinstance(self.source, SafeQueue):
            self.source._release_tickets(self)
        self.elapsed = perf_counter() - self.started

    def report(self) -> PipelineReport:
        """Build the report; exact once :meth:`join` has returned."""
        stages: list[StageReport] = []
        arrived = self.read
        for index, spec in enumerate(self.specs):
            stage = StageReport.from_recorders(
                spec.name, arrived, self.recorders[index], self.queues[index].stats()
            )
            stages.append(stage)
            arrived = stage.emitted
        status: RunStatus = self.outcomes[0][0] if self.outcomes else "completed"
        return PipelineReport(
            status=status,
            elapsed_seconds=self.elapsed,
            items_read=self.read,
            outputs=self.delivered,
            dropped=sum(s.dropped for s in stages),
            failed=sum(s.failed for s in stages),
            not_processed=sum(s.not_processed for s in stages) + arrived - self.delivered,
            created=sum(s.emitted - s.completed + s.dropped for s in stages),
            stages=tuple(stages),
            dead_letters=tuple(d for rs in self.recorders for r in rs for d in r.dead_letters),
        )

    def raise_for_outcome(self, report: PipelineReport) -> None:
        """Raise the error that ended the run, with the report attached."""
        if not self.outcomes:
            return
        status, error = self.outcomes[0]
        if status == "closed":
            return
        for _, later in self.outcomes[1:]:
            if isinstance(later, StageError):
                error.add_note(f"also: {later}")
        if isinstance(error, StageError | PipelineCancelled):
            error.report = report
            raise error
        # Anything else (KeyboardInterrupt) is re-raised by the caller.


class Pipeline(Generic[In, Out]):
    """An assembly line of stages, each in its own worker threads.

    >>> from pipeline import Pipeline
    >>> p = Pipeline[int]().map(lambda x: x * 2).filter(lambda x: x % 3 != 0)
    >>> p.run(range(6)).outputs
    [2, 4, 8, 10]

    Each builder method adds a stage and returns the same pipeline, retyped
    for the new output type, so chain the calls. A mismatch between one stage's
    output type and the next stage's input type is a type-checker error.

    Per-stage options (``add``, ``map``, ``filter``, ``flat_map``, ``each``)
    are keyword arguments, listed in :class:`StageOptions`: ``workers``,
    ``name``, ``ordered``, ``maxsize`` (the bound of the stage's *input*
    queue), ``on_error`` and ``retry``.

    A pipeline may be run any number of times, also concurrently; every run
    is independent (its own queues, threads and report) and uses the same
    stage objects. After the first run starts, stages can no longer be added.
    ``close()`` (or leaving a ``with`` block) cancels the runs still going and
    makes further runs fail with :class:`~pipeline.PipelineStateError`.

    Args:
        maxsize: default bound of every stage's input queue and of the output
            queue, in items. ``None`` (the default) lets the first item put
            into each queue set its bound: up to :data:`DEFAULT_MAXSIZE`
            items, fewer for big items (see :data:`DEFAULT_QUEUE_BYTES`).

    Raises:
        TypeError / ValueError: an invalid option, at the call that set it.
        PipelineStateError: adding a stage after a run started, or running a
            closed pipeline.
    """

    def __init__(self, *, maxsize: int | None = None) -> None:
        self._maxsize = None if maxsize is None else _check_int("maxsize", maxsize, 1)
        self._specs: list[StageSpec] = []
        self._frozen = False
        self._closed = False
        self._runs: set[_Run] = set()
        self._streams: weakref.WeakSet[Stream[Any]] = weakref.WeakSet()

    def __repr__(self) -> str:
        names = " -> ".join(spec.name for spec in self._specs) or "(no stages)"
        return f"<Pipeline {names}>"

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The names of the stages, in order."""
        return tuple(spec.name for spec in self._specs)

    # -- building -----------------------------------------------------------------

    def add(
        self,
        stage: PipelineStage[Out, R],
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, R]:
        """Add a class-based stage; return the pipeline, now ending in ``R``.

        >>> from pipeline.stages import MultiplyStage
        >>> Pipeline[int]().add(MultiplyStage(3), workers=2).run([1, 2]).outputs
        [3, 6]
        """
        if not isinstance(stage, PipelineStage):
            raise TypeError(f"'stage' must be a PipelineStage, not {type(stage).__name__}")
        self._append(stage, **options)
        return self  # type: ignore[return-value]

    def map(
        self,
        fn: Callable[[Out], R],
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, R]:
        """Add a stage that emits ``fn(item)`` for each item.

        >>> Pipeline[int]().map(str).run([1, 2]).outputs
        ['1', '2']
        """
        self._append(MapStage(fn), **options)
        return self  # type: ignore[return-value]

    def filter(
        self,
        predicate: Callable[[Out], object],
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Out]:
        """Add a stage that keeps the items for which ``predicate`` is true.

        >>> Pipeline[int]().filter(lambda x: x > 1).run([1, 2, 3]).outputs
        [2, 3]
        """
        stage = FilterStage(predicate, name=_function_name(predicate))
        self._append(stage, **options)
        return self

    def flat_map(
        self,
        fn: Callable[[Out], Iterable[R]],
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, R]:
        """Add a stage that emits every element of ``fn(item)`` (zero or more).

        >>> Pipeline[str]().flat_map(str.split).run(["a b", "", "c"]).outputs
        ['a', 'b', 'c']
        """
        self._append(FlatMapStage(fn), **options)
        return self  # type: ignore[return-value]

    def each(
        self,
        fn: Callable[[Out], object],
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Out]:
        """Add a stage that calls ``fn(item)`` and passes the item on unchanged.

        >>> seen = []
        >>> Pipeline[int]().each(seen.append).run([1, 2]).outputs, seen
        ([1, 2], [1, 2])
        """
        self._append(EachStage(fn), **options)
        return self

    def batch(
        self,
        size: int,
        max_wait: float | None = None,
        *,
        name: str | None = None,
        maxsize: int | None = None,
    ) -> Pipeline[In, list[Out]]:
        """Add a stage that groups items into lists of ``size``.

        A list is emitted when it holds ``size`` items, or ``max_wait`` seconds
        after its first item arrived, whichever comes first; the last, partial
        list is emitted at the end. Lists are never empty. One worker.

        >>> Pipeline[int]().batch(2).run(range(5)).outputs
        [[0, 1], [2, 3], [4]]
        """
        size = _check_int("size", size, 1)
        max_wait = _check_seconds("max_wait", max_wait)
        self._check_open()
        stage = _BatchStage(name=name or "batch")
        spec = StageSpec(
            stage=stage,
            name=self._unique(name or "batch"),
            workers=1,
            ordered=True,
            maxsize=self._maxsize if maxsize is None else _check_int("maxsize", maxsize, 1),
            on_error="raise",
            retry=None,
            kind=StageKind.BATCH,
            batch_size=size,
            max_wait=max_wait,
        )
        self._specs.append(spec)
        return self  # type: ignore[return-value]

    def _append(
        self,
        stage: PipelineStage[Any, Any],
        *,
        workers: int = 1,
        name: str | None = None,
        ordered: bool = True,
        maxsize: int | None = None,
        on_error: OnError = "raise",
        retry: Retry | None = None,
    ) -> None:
        workers = _check_int("workers", workers, 1)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"'name' must be a str, not {type(name).__name__}")
        if not isinstance(ordered, bool):
            raise TypeError(f"'ordered' must be a bool, not {type(ordered).__name__}")
        maxsize = self._maxsize if maxsize is None else _check_int("maxsize", maxsize, 1)
        on_error = check_on_error(on_error)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"'retry' must be a Retry or None, not {type(retry).__name__}")
        self._check_open()
        base = name or getattr(stage, "name", None) or type(stage).__name__
        kind, _ = kind_of(stage)
        self._specs.append(
            StageSpec(
                stage=stage,
                name=self._unique(base),
                workers=workers,
                ordered=ordered,
                maxsize=maxsize,
                on_error=on_error,
                retry=retry,
                kind=kind,
            )
        )

    def _unique(self, name: str) -> str:
        taken = {spec.name for spec in self._specs}
        if name not in taken:
            return name
        number = 2
        while f"{name} #{number}" in taken:
            number += 1
        return f"{name} #{number}"

    def _check_open(self) -> None:
        if self._closed:
            raise PipelineStateError("the pipeline is closed")
        if self._frozen:
            raise PipelineStateError("stages cannot be added once the pipeline has started")

    # -- running ------------------------------------------------------------------

    def _new_run(
        self,
        source: Iterable[In] | SafeQueue[In],
        timeout: float | None,
        *,
        final_maxsize: int | None,
    ) -> _Run:
        if self._closed:
            raise PipelineStateError("the pipeline is closed")
        _check_seconds("timeout", timeout)
        specs = tuple(self._specs)
        if isinstance(source, SafeQueue):
            run = _Run(specs, final_maxsize, source)
        else:
            try:
                iterator = iter(source)
            except TypeError:
                message = f"'source' must be iterable, not {type(source).__name__}"
                raise TypeError(message) from None
            # A sized collection (list, tuple, range, dict, set...) is in memory
            # and can be read in chunks; anything else may block between items.
            in_memory = isinstance(source, Collection)
            sequence = source if isinstance(source, list | tuple | range) else None
            if type(source) not in {list, tuple, range}:
                sequence = None  # a subclass may slice differently
            run = _Run(specs, final_maxsize, iterator, in_memory=in_memory, sequence=sequence)
        self._frozen = True
        return run

    def run(
        self, source: Iterable[In] | SafeQueue[In], *, timeout: float | None = None
    ) -> RunResult[Out]:
        """Feed ``source`` through the stages; return every output and the report.

        Blocks until the source is exhausted and every item has gone through,
        or until the run fails or is cancelled. Every thread of the run has
        ended when it returns or raises.

        >>> result = Pipeline[int]().map(lambda x: x + 1).run([1, 2, 3])
        >>> result.outputs, result.report.status
        ([2, 3, 4], 'completed')

        Args:
            source: any iterable, read by a thread of the run (a sized
                collection in chunks, anything else item by item so that no
                item waits while the source blocks); or a :class:`SafeQueue`,
                which the first stage consumes directly until it is shut down
                (its last producer closes). A cancelled run shuts a queue
                source down too.
            timeout: seconds the whole run may take.

        Raises:
            StageError: a stage, a hook or the source raised (fail-fast); the
                original exception is its ``__cause__``.
            PipelineTimeout: ``timeout`` elapsed.
            PipelineCancelled: :meth:`cancel` was called.
            KeyboardInterrupt: re-raised after the run was cancelled and joined.
        """
        run = self._new_run(source, timeout, final_maxsize=0)
        deadline = None if timeout is None else monotonic() + timeout
        outputs: list[Out] = []
        run.claim_source()
        self._runs.add(run)
        try:
            try:
                run.start()
                outputs = run.collect(deadline)
            except BaseException as exc:
                run.cancel("interrupted", exc)
                raise
            finally:
                run.join()
        finally:
            self._runs.discard(run)
        report = run.report()
        run.raise_for_outcome(report)
        return RunResult(outputs, report)

    def stream(
        self, source: Iterable[In] | SafeQueue[In], *, timeout: float | None = None
    ) -> Stream[Out]:
        """Yield outputs as they come, with memory bounded by the queue sizes.

        Works with any source :meth:`run` takes, infinite generators included.
        Feeding a :class:`SafeQueue` source item by item and reading each output
        as it comes makes a pipeline you can talk to; see :class:`Stream` for
        closing it early.

        >>> from itertools import count
        >>> with Pipeline[int]().filter(lambda x: x % 7 == 0).stream(count()) as s:
        ...     [next(s) for _ in range(3)]
        [0, 7, 14]

        Raises:
            StageError, PipelineTimeout, PipelineCancelled: as :meth:`run`,
                from the ``next()`` call that reaches the failure.
        """
        run = self._new_run(source, timeout, final_maxsize=self._maxsize)
        box = _ReportBox()
        outputs = self._iterate(run, timeout, box)
        stream: Stream[Out] = Stream(outputs, box)
        self._streams.add(stream)
        return stream

    def _iterate(
        self,
        run: _Run,
        timeout: float | None,
        box: _ReportBox,
    ) -> Iterator[Out]:
        deadline = None if timeout is None else monotonic() + timeout
        run.claim_source()
        self._runs.add(run)
        try:
            try:
                run.start()
                take = run.next_outputs
                while batch := take(deadline):
                    if len(batch) == 1:
                        # A lone item, as when a caller talks to the pipeline
                        # one item at a time: no iterator to delegate to.
                        run.delivered += 1
                        yield batch[0]
                        continue
                    run.delivered += len(batch)
                    items = iter(batch)
                    try:
                        yield from items  # delegated from C: no bytecode per item
                    except GeneratorExit:
                        run.delivered -= length_hint(items)  # never handed out
                        raise
            except GeneratorExit:
                run.cancel("closed", PipelineCancelled("the stream was closed"))
                raise
            except BaseException as exc:
                run.cancel("interrupted", exc)
                raise
            finally:
                run.join()
                box.report = run.report()
        finally:
            self._runs.discard(run)
        run.raise_for_outcome(box.report)

    def cancel(self) -> None:
        """Cancel every run of this pipeline that is going on; safe from any thread.

        The runs raise :class:`~pipeline.PipelineCancelled` (with the partial
        report) in the threads that started them, once their threads ended.
        """
        for run in list(self._runs):
            run.cancel("cancelled", PipelineCancelled())

    def close(self) -> None:
        """Cancel the runs going on, close open streams, refuse new runs.

        Streams that this thread holds are closed (their threads joined)
        before ``close`` returns; a run going on in another thread is
        cancelled and joined by that thread.
        """
        self._closed = True
        self.cancel()
        for stream in list(self._streams):
            try:
                stream.close()
            except ValueError:
                pass  # being iterated by another thread, which joins it

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _SourceReader:
    """The first stage's inbox when its one worker reads an in-memory source itself.

    Only that worker calls it. It counts what it reads into the run's ``fed``,
    and turns an exception from the source into the run's failure, attributed
    to the source, as the feeder thread would.
    """

    def __init__(
        self,
        source: Iterator[Any],
        run: _Run,
        maxsize: int,
        sequence: list[Any] | tuple[Any, ...] | range | None = None,
    ) -> None:
        self.source = source
        self.run = run
        self.maxsize = maxsize
        self.exhausted = False
        self.sequence = sequence  # read by slicing instead, when given
        self.position = 0

    def _get_batch(self, max_items: int, deadline: float | None = None) -> list[Any]:
        del deadline  # only the worker reads, and an in-memory source never blocks
        if self.exhausted:
            raise ShutDown
        # No more than the stage's input queue would have held: batch sizes,
        # and the memory they take, stay what maxsize says.
        max_items = min(max_items, self.maxsize)
        chunk: list[Any] = []
        try:
            if self.sequence is not None:
                start = self.position
                part = self.sequence[start : start + max_items]
                chunk = part if type(part) is list else list(part)
                self.position = start + len(chunk)
            else:
                chunk.extend(islice(self.source, max_items))
        except BaseException as exc:  # noqa: BLE001 (reported, then raised by the runner)
            self.exhausted = True
            self.run.fed += len(chunk)
            self.run.fail(StageError("source", exc, where="source"))
            raise ShutDown from None
        self.run.fed += len(chunk)
        if len(chunk) < max_items:
            self.exhausted = True  # islice stopped early: nothing more to read
            if not chunk:
                raise ShutDown
        return chunk


class _BatchStage(PipelineStage[Any, list[Any]]):
    """Placeholder stage for ``Pipeline.batch``; the worker loop does the grouping."""

    def process(self, item: Any) -> list[Any]:
        return [item]


def _new_queue(maxsize: int | None) -> SafeQueue[Any]:
    # A queue of a run: `maxsize` items (0: unbounded), or None for a bound
    # set by the first item put (see DEFAULT_QUEUE_BYTES).
    if maxsize is not None:
        return SafeQueue(maxsize)
    queue: SafeQueue[Any] = SafeQueue(DEFAULT_MAXSIZE)
    queue._fit_maxsize_to_first_item(DEFAULT_QUEUE_BYTES, MIN_DEFAULT_MAXSIZE)
    return queue


def _join(thread: threading.Thread) -> None:
    try:
        thread.join()
    except RuntimeError:
        # start() was interrupted before the thread reported in. If the OS
        # thread exists it reports in at once; if not, it never will.
        if thread._started.wait(1.0):  # type: ignore[attr-defined]
            thread.join()


def _function_name(fn: object) -> str | None:
    return getattr(fn, "__name__", None)
