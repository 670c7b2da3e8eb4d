"""Pipeline: the builder, ``run()`` and ``stream()``.

The run itself (queues, threads, outcome, books) is :mod:`pipeline._run`;
the source is read by :mod:`pipeline._source`; Ctrl-C is routed by
:mod:`pipeline._interrupt`. This module starts no thread.

Past 400 lines: the builder's six methods, each with its docstring and
example, and ``run()``/``stream()``, whose skeletons differ (a stream yields,
is closed, and can be closed from another thread); they are kept side by
side so that a change to one is seen against the other.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from difflib import get_close_matches
from operator import length_hint
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypedDict, TypeVar, Unpack

from . import _interrupt
from ._compat import RUNTIME_DEFAULTS, fill_defaults
from ._compat import TypeVar as DefaultTypeVar
from ._dask import Dask
from ._exceptions import PipelineCancelled, PipelineInterrupted, PipelineStateError
from ._executors import check_executor
from ._observe import Observer, check_observers
from ._policy import OnError, Retry, check_on_error
from ._progress import Progress
from ._report import PipelineReport, RunStatus
from ._run import DEFAULT_MAXSIZE, DEFAULT_QUEUE_BYTES, MIN_DEFAULT_MAXSIZE, Run
from ._safequeue import SafeQueue
from ._source import is_in_memory
from ._stage import PipelineStage, StageKind, StageSpec, kind_of
from ._trace import TraceFile, check_trace
from ._validate import check_int, check_seconds
from .stages import EachStage, FilterStage, FlatMapStage, MapStage

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "DEFAULT_MAXSIZE",
    "DEFAULT_QUEUE_BYTES",
    "MAX_WORKERS",
    "MIN_DEFAULT_MAXSIZE",
    "Pipeline",
    "RunResult",
    "StageOptions",
    "Stream",
]

In = DefaultTypeVar("In", default=Any)
Out = DefaultTypeVar("Out", default=In)
R = TypeVar("R")
T = TypeVar("T")

MAX_WORKERS = 1024
"""The most worker threads one stage may have (``workers=``).

A thread costs a stack and a start-up; past a few hundred, more threads add
contention rather than throughput. The cap keeps a typo (``workers=10**9``)
from exhausting memory before anything runs.
"""


class StageOptions(TypedDict, total=False):
    """The per-stage options of :meth:`Pipeline.add`, ``map``, ``filter``, ``flat_map``, ``each``.

    >>> options: StageOptions = {"workers": 4, "ordered": False, "on_error": "skip"}
    >>> sorted(Pipeline[int]().map(abs, **options).run([-2, 1]).outputs)
    [1, 2]

    Attributes:
        workers: threads running the stage (default 1, at most
            :data:`MAX_WORKERS`).
        name: the stage's name (thread names are ``"<name>-<n>"``); defaults to
            the stage's own name or the function's name.
        ordered: with several workers, emit in input order (default ``True``)
            through a bounded reorder window; ``False`` emits as items finish.
        maxsize: the bound of the stage's *input* queue, in items (default:
            the pipeline's ``maxsize``; if that is ``None`` too, set from the
            size of the first item, see :data:`DEFAULT_QUEUE_BYTES`).
        on_error: ``"raise"`` (fail-fast, default) or ``"skip"`` (dead letter).
        retry: a :class:`~pipeline.Retry` policy applied before ``on_error``.
        executor: where ``process()`` runs: ``"thread"`` (default: in the
            stage's worker threads), ``"process"`` (each worker in a process
            of its own, for CPU-bound pure-Python stages; the stage and its
            function must pickle), a Dask cluster (a ``distributed.Client``,
            ``"dask://HOST:PORT"`` or :class:`~pipeline.Dask`: ``workers``
            batches in flight on the cluster; the hooks run once per cluster
            worker process) or a ``concurrent.futures.Executor`` (``workers``
            batches in flight in it; no ``on_start``/``on_stop``).
    """

    workers: int
    name: str | None
    ordered: bool
    maxsize: int | None
    on_error: OnError
    retry: Retry | None
    executor: str | Executor | Dask | Client


_STAGE_OPTIONS = tuple(StageOptions.__annotations__)


@dataclass(frozen=True, slots=True)
class RunResult(Generic[T]):
    """What :meth:`Pipeline.run` returns: the outputs, in order, and the report.

    >>> result = Pipeline[int]().map(lambda x: x * 10).run([1, 2])
    >>> result.outputs, result.report.outputs
    ([10, 20], 2)
    """

    outputs: list[T]
    report: PipelineReport


class _StreamState:
    # Shared by a Stream and its generator, so the generator never refers to
    # the Stream: no cycle, and dropping the Stream closes the run at once.
    __slots__ = ("report", "run", "started")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.started = False  # the generator has begun: it will set the report
        self.report: PipelineReport | None = None


class Stream(Generic[T]):
    """The lazy outputs of :meth:`Pipeline.stream`: an iterator you can close.

    Threads start at the first ``next()``. Closing the stream (``close()``, the
    end of a ``with`` block, or breaking out of a ``for`` loop over it, which
    drops it) cancels the run, stops reading the source and joins every
    thread before returning. ``close()`` from another thread while the
    consumer waits in ``next()`` cancels the run; that ``next()`` then ends
    the stream (``StopIteration``) once the threads are joined. ``report`` is
    set once the run has ended.

    >>> from pipeline import Pipeline
    >>> with Pipeline[int]().map(lambda x: x + 1).stream(range(10**9)) as outputs:
    ...     first = [next(outputs) for _ in range(3)]
    >>> first, outputs.report.status
    ([1, 2, 3], 'closed')
    """

    def __init__(self, outputs: Iterator[T], state: _StreamState) -> None:
        self._outputs = outputs
        self._state = state
        self._closing = False  # close() is closing the generator in its thread

    @property
    def report(self) -> PipelineReport | None:
        """The run's report once it has ended, else ``None``."""
        return self._state.report

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        try:
            return next(self._outputs)
        except ValueError as exc:
            # A next() that arrives while another thread's close() runs the
            # generator's cleanup (a real window on a free-threaded build)
            # finds it "already executing": the stream is ending, so end it.
            if self._closing and "already executing" in str(exc):
                raise StopIteration from None
            raise

    def close(self) -> None:
        """Stop the run; from the consuming thread, also join its threads. Idempotent."""
        outputs = self._outputs
        state = self._state
        if getattr(outputs, "gi_running", False):
            self._close_from_another_thread()
            return
        self._closing = True
        try:
            getattr(outputs, "close", lambda: None)()
        except ValueError:  # "generator already executing": it started meanwhile
            self._close_from_another_thread()
            return
        if not state.started and state.report is None:
            # Closed before its first next(): a run that read nothing.
            state.run.cancel("closed", PipelineCancelled("the stream was closed"))
            state.report = state.run.report()

    def _close_from_another_thread(self) -> None:
        # The consumer is inside next(): cancel the run, and let that next()
        # join the threads and end the stream.
        self._state.run.cancel("closed", PipelineCancelled("the stream was closed"))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _status_of(exc: BaseException) -> RunStatus:
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


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
    queue), ``on_error``, ``retry`` and ``executor`` (threads, worker
    processes, or a ``concurrent.futures.Executor``).

    With ``workers > 1`` each worker after the first gets its own shallow copy
    of the stage object (``copy.copy``): attributes a worker assigns, in
    ``on_start`` or in ``process``, are its own, so a counter kept in
    ``self.n += 1`` counts only that worker's items. State shared by all
    workers must be an object created in ``__init__`` (which the copies
    share), guarded by a lock.

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

    if not TYPE_CHECKING and not RUNTIME_DEFAULTS:  # a bare Python 3.11/3.12: see _compat

        def __class_getitem__(cls, params: Any) -> Any:
            return super().__class_getitem__(fill_defaults(cls, params))

    def __init__(self, *, maxsize: int | None = None) -> None:
        self._maxsize = None if maxsize is None else check_int("maxsize", maxsize, 1)
        self._specs: list[StageSpec] = []
        self._frozen = False
        self._closed = False
        # The runs going on and the streams open, changed by the threads that
        # run and read by cancel() and close() from any thread: guarded by
        # their own lock, held only to change or copy them.
        self._registry = threading.Lock()
        self._runs: set[Run] = set()
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
        self._append("add", stage, options)
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
        self._append("map", MapStage(fn), options)
        return self  # type: ignore[return-value]

    def filter(
        self,
        predicate: Callable[[Out], object] | None,
        **options: Unpack[StageOptions],
    ) -> Pipeline[In, Out]:
        """Add a stage that keeps the items for which ``predicate`` is true.

        ``None`` keeps the items that are true themselves, as the built-in
        ``filter(None, ...)`` does.

        >>> Pipeline[int]().filter(lambda x: x > 1).run([1, 2, 3]).outputs
        [2, 3]
        >>> Pipeline[int]().filter(None).run([0, 1, 2, 0, 3]).outputs
        [1, 2, 3]
        """
        name = "filter" if predicate is None else _function_name(predicate)
        self._append("filter", FilterStage(predicate, name=name), options)
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
        self._append("flat_map", FlatMapStage(fn), options)
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
        self._append("each", EachStage(fn), options)
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
        size = check_int("size", size, 1)
        max_wait = check_seconds("max_wait", max_wait)
        self._check_open()
        stage = _BatchStage(name=name or "batch")
        spec = StageSpec(
            stage=stage,
            name=self._unique(name or "batch"),
            workers=1,
            ordered=True,
            maxsize=self._maxsize if maxsize is None else check_int("maxsize", maxsize, 1),
            on_error="raise",
            retry=None,
            kind=StageKind.BATCH,
            batch_size=size,
            max_wait=max_wait,
        )
        self._specs.append(spec)
        return self  # type: ignore[return-value]

    def _append(self, method: str, stage: PipelineStage[Any, Any], options: StageOptions) -> None:
        unknown = sorted(set(options) - set(_STAGE_OPTIONS))
        if unknown:
            close = get_close_matches(unknown[0], _STAGE_OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"Pipeline.{method}() got an unknown option {unknown[0]!r}{hint}; "
                f"the options are {', '.join(_STAGE_OPTIONS)}"
            )
        workers = check_int("workers", options.get("workers", 1), 1, MAX_WORKERS)
        name = options.get("name")
        ordered = options.get("ordered", True)
        maxsize = options.get("maxsize")
        on_error = options.get("on_error", "raise")
        retry = options.get("retry")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"'name' must be a str, not {type(name).__name__}")
        if not isinstance(ordered, bool):
            raise TypeError(f"'ordered' must be a bool, not {type(ordered).__name__}")
        maxsize = self._maxsize if maxsize is None else check_int("maxsize", maxsize, 1)
        on_error = check_on_error(on_error)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"'retry' must be a Retry or None, not {type(retry).__name__}")
        self._check_open()
        base = name or getattr(stage, "name", None) or type(stage).__name__
        if workers > 1 and stage.single_worker:
            raise ValueError(
                f"stage {base!r} keeps state for the whole run and must run in one worker; "
                f"got 'workers'={workers}"
            )
        kind, _ = kind_of(stage)
        executor = check_executor(options.get("executor", "thread"), stage, base)
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
                executor=executor,
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
        observers: Iterable[Observer],
        trace: str | os.PathLike[str] | None,
        progress: bool,
        *,
        final_maxsize: int | None,
    ) -> Run:
        if self._closed:
            raise PipelineStateError("the pipeline is closed")
        check_seconds("timeout", timeout)
        watchers = check_observers(observers)
        trace_path = check_trace(trace)
        if not isinstance(progress, bool):
            raise TypeError(f"'progress' must be True or False, not {type(progress).__name__}")
        if trace_path is not None:
            watchers += (TraceFile(trace_path),)
        if progress:
            watchers += (Progress(),)
        specs = tuple(self._specs)
        if isinstance(source, SafeQueue):
            run = Run(specs, final_maxsize, source, observers=watchers)
        else:
            try:
                iterator = iter(source)
            except TypeError:
                message = f"'source' must be iterable, not {type(source).__name__}"
                raise TypeError(message) from None
            # A collection in memory can be read in chunks; anything else may
            # block between items.
            in_memory = is_in_memory(source)
            # A list, tuple or range (not a subclass, which may slice
            # differently) is read by slicing it.
            sequence = source if type(source) in {list, tuple, range} else None
            run = Run(
                specs,
                final_maxsize,
                iterator,
                in_memory=in_memory,
                sequence=sequence,  # type: ignore[arg-type]
                expected=_length(source) if in_memory else None,
                observers=watchers,
            )
        self._frozen = True
        return run

    def _register(self, run: Run) -> None:
        with self._registry:
            if self._closed:
                raise PipelineStateError("the pipeline is closed")
            self._runs.add(run)

    def _unregister(self, run: Run) -> None:
        with self._registry:
            self._runs.discard(run)

    def run(
        self,
        source: Iterable[In] | SafeQueue[In],
        *,
        timeout: float | None = None,
        observers: Iterable[Observer] = (),
        trace: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> RunResult[Out]:
        """Feed ``source`` through the stages; return every output and the report.

        Blocks until the source is exhausted and every item has gone through,
        or until the run fails or is cancelled. Every thread of the run has
        ended when it returns or raises (a source blocked inside its
        ``next()`` aside, see ``timeout``).

        >>> result = Pipeline[int]().map(lambda x: x + 1).run([1, 2, 3])
        >>> result.outputs, result.report.status
        ([2, 3, 4], 'completed')

        Args:
            source: any iterable, read by a thread of the run (a collection in
                memory in chunks, anything else item by item so that no item
                waits while the source blocks); or a :class:`SafeQueue`, which
                the first stage consumes directly until it is shut down (its
                last producer closes). A cancelled run shuts a queue source
                down too, leaving in it the items not yet taken, and closes a
                generator source it stopped reading early (its ``finally``
                blocks run before ``run()`` returns).
            timeout: seconds after which the run is cancelled and raises
                :class:`~pipeline.PipelineTimeout`, whatever is left (``0``:
                at once). The workers then finish the items in hand, so
                ``run()`` returns that much later; a source blocked inside its
                own ``next()`` is not waited for beyond a quarter of a second
                (its thread is named in the error and ends when ``next()``
                returns).
            observers: :class:`~pipeline.Observer` objects that receive the
                run's events (workers started and stopped, every batch with
                its counts and duration, retries, dead letters, failures, the
                final report), for progress, traces or metrics.
            trace: a file to write the run's timeline to, in the Chrome Trace
                Event format that https://ui.perfetto.dev opens (see
                :class:`~pipeline.TraceFile`).
            progress: show live progress on stderr every second, a line per
                stage (see :class:`~pipeline.Progress`).

        Raises:
            StageError: a stage, a hook or the source raised (fail-fast); the
                original exception is its ``__cause__``.
            PipelineTimeout: ``timeout`` elapsed.
            PipelineCancelled: :meth:`cancel` or :meth:`close` was called.
            PipelineInterrupted: Ctrl-C; a ``KeyboardInterrupt``, raised after
                the run was cancelled and joined (see :mod:`pipeline` docs).
        """
        run = self._new_run(source, timeout, observers, trace, progress, final_maxsize=0)
        guarded = _interrupt.guard(run)
        try:
            deadline = None if timeout is None else monotonic() + timeout
            self._register(run)
            outputs: list[Out] = []
            raised: BaseException | None = None
            try:
                try:
                    run.start()
                    outputs = run.collect(deadline)
                except BaseException as exc:  # noqa: BLE001 (raised below, once joined and reported)
                    run.cancel(_status_of(exc), exc)
                    raised = exc
                finally:
                    run.join()
            finally:
                self._unregister(run)
            error = run.outcome_error()
            if raised is not None and not isinstance(error, PipelineInterrupted):
                error = raised  # as it came: the program's own KeyboardInterrupt, a MemoryError
            if error is not None:
                run.undeliver()  # raised instead of returned: the caller gets none of them
            report = run.final_report()
            if error is None and run.interrupts:
                # A Ctrl-C after the last output, while the report was being
                # made: it stops the program all the same, and the caller
                # gets none of the outputs.
                error = run.outcome_error()
                run.undeliver()
                report = run.report()
            error = run.observer_escape(error)
            if error is not None:
                run.attach(error, report)
                raise error
            return RunResult(outputs, report)
        finally:
            if guarded:
                _interrupt.release(run)

    def stream(
        self,
        source: Iterable[In] | SafeQueue[In],
        *,
        timeout: float | None = None,
        observers: Iterable[Observer] = (),
        trace: str | os.PathLike[str] | None = None,
        progress: bool = False,
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

        Ctrl-C while the stream is open cancels the run; the ``next()`` that
        follows raises :class:`~pipeline.PipelineInterrupted` once the threads
        are joined, so the body of a ``for`` loop over the stream is never
        interrupted halfway by the first Ctrl-C (a second one interrupts it).

        ``timeout``, ``observers``, ``trace`` and ``progress`` are as for
        :meth:`run`; the observers' ``run_started`` comes with the first
        ``next()``, their ``run_finished`` once the stream has ended or been
        closed.

        Raises:
            StageError, PipelineTimeout, PipelineCancelled, PipelineInterrupted:
                as :meth:`run`, from the ``next()`` call that reaches them.
        """
        run = self._new_run(
            source, timeout, observers, trace, progress, final_maxsize=self._maxsize
        )
        state = _StreamState(run)
        stream: Stream[Out] = Stream(self._iterate(run, timeout, state), state)
        with self._registry:
            self._streams.add(stream)
        return stream

    def _iterate(self, run: Run, timeout: float | None, state: _StreamState) -> Iterator[Out]:
        # The stream's generator.
        state.started = True
        guarded = _interrupt.guard(run)
        if guarded:
            run.sliced_waits = True  # a Ctrl-C may not wake an untimed wait (see SLICED_WAITS)
        try:
            deadline = None if timeout is None else monotonic() + timeout
            self._register(run)
            closing = False
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
                        left = length_hint(items)  # taken, never handed out
                        run.delivered -= left
                        run.undelivered += left
                        raise
            except GeneratorExit:
                closing = True
                run.cancel("closed", PipelineCancelled("the stream was closed"))
                raise
            except BaseException as exc:
                run.cancel(_status_of(exc), exc)
                raise
            finally:
                run.join()
                state.report = report = run.final_report()
                self._unregister(run)
                # A Ctrl-C taken but not yet raised comes out of close().
                error = run.observer_escape(run.outcome_error(closing=closing))
                if closing and error is not None:
                    run.attach(error, report)
                    raise error
            if error is not None:
                run.attach(error, report)
                raise error
        finally:
            if guarded:
                _interrupt.release(run)

    def cancel(self) -> None:
        """Cancel every run of this pipeline that is going on; safe from any thread.

        The runs raise :class:`~pipeline.PipelineCancelled` (with the partial
        report) in the threads that started them, once their threads ended.
        """
        with self._registry:
            runs = list(self._runs)
        for run in runs:
            run.cancel("cancelled", PipelineCancelled())

    def close(self) -> None:
        """Cancel the runs going on, close open streams, refuse new runs.

        Streams that no thread is reading at this moment are closed here, their
        threads joined before ``close`` returns; a run or a stream going on in
        another thread is cancelled, and that thread joins it. Safe from any
        thread.
        """
        with self._registry:
            self._closed = True
            runs = list(self._runs)
            streams = list(self._streams)
        for run in runs:
            run.cancel("cancelled", PipelineCancelled("the pipeline was closed"))
        for stream in streams:
            stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _BatchStage(PipelineStage[Any, list[Any]]):
    """Placeholder stage for ``Pipeline.batch``; the worker loop does the grouping."""

    def process(self, item: Any) -> list[Any]:
        return [item]


def _length(source: Any) -> int | None:
    # The length of a collection in memory, for the report's "Expected".
    try:
        return len(source)
    except BaseException:  # noqa: BLE001 (a hostile __len__ only loses the figure)
        return None


def _function_name(fn: object) -> str | None:
    return getattr(fn, "__name__", None)
