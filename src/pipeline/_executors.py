"""Where a stage's batches are processed: the ``executor=`` option of a stage.

Every worker of a stage is a thread of the pipeline's process running the
loop of :mod:`pipeline._worker`; what differs is its *handle*, which runs
``on_start``, processes batches and runs ``on_stop`` somewhere:

``"thread"`` (the default)
    In the worker thread itself: :func:`~pipeline._batch.process_batch` is a
    plain call. Right for I/O, for code that releases the GIL, and for any
    stage on a free-threaded Python.
``"process"``
    In a worker process of its own, one per worker (see
    :mod:`pipeline._process`): for pure-Python CPU-bound stages on a Python
    with a GIL. The hooks run in that process, once.
a Dask cluster (a ``distributed.Client``, ``"dask://ADDRESS"`` or :class:`~pipeline.Dask`)
    Each batch is a task on the cluster's workers (see :mod:`pipeline._dask`):
    ``workers`` batches in flight there; the hooks run once per cluster
    worker process.
a ``concurrent.futures.Executor``
    Each batch is submitted to it and the worker waits for the result, so
    ``workers`` is the number of batches in flight. An executor runs no code
    once per worker of ours, so a stage with ``on_start``/``on_stop`` is
    refused there.

Batches bound for another process carry more items (they aim at
:data:`REMOTE_BATCH_TARGET_SECONDS` of work rather than 2 ms), so the cost
of pickling and of the round trip is paid per batch, not per item.
"""

from __future__ import annotations

import pickle
from concurrent.futures import CancelledError, Executor, ProcessPoolExecutor
from difflib import get_close_matches
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ._batch import BatchAbandoned, BatchOutcome, batch_function, process_batch
from ._dask import ClusterStage, Dask, dumps_for_cluster, is_dask_client
from ._stage import BATCH_TARGET_NS, ExecutorChoice, PipelineStage, StageSpec, Supervisor, kind_of

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = [
    "EXECUTOR_NAMES",
    "REMOTE_BATCH_TARGET_SECONDS",
    "FuturesWorker",
    "ThreadWorker",
    "WorkerHandle",
    "check_executor",
    "executor_name",
    "has_hooks",
    "worker_handle",
]

EXECUTOR_NAMES = ("thread", "process")
"""The executors a stage can name; any ``concurrent.futures.Executor`` works too."""

REMOTE_BATCH_TARGET_SECONDS = 0.01
"""The work per batch a stage aims at when its batches travel to another process."""

_REMOTE_TARGET_NS = round(REMOTE_BATCH_TARGET_SECONDS * 1e9)

_POLL = 0.05  # how often a worker waiting on an executor looks for a cancellation


class WorkerHandle(Protocol):
    """How one worker of a stage runs the stage: its hooks and its batches."""

    batch_target_ns: int
    """How long one batch should take, in nanoseconds (see next_batch_cap)."""

    def start(self) -> None:
        """Run ``on_start`` wherever the stage runs; raise what it raised."""

    def process(self, batch: list[Any]) -> BatchOutcome:
        """Process ``batch``; raise BatchAbandoned if the run was cancelled meanwhile."""

    def stop(self) -> None:
        """Run ``on_stop`` wherever the stage runs; raise what it raised."""


class ThreadWorker:
    """Runs the stage in the worker thread itself."""

    __slots__ = ("process", "stage")

    batch_target_ns = BATCH_TARGET_NS

    def __init__(self, stage: PipelineStage[Any, Any]) -> None:
        self.stage = stage
        kind, call = kind_of(stage)
        # The kind's own function, straight: one call less per batch.
        self.process = partial(batch_function(kind), call)

    def start(self) -> None:
        self.stage.on_start()

    def stop(self) -> None:
        self.stage.on_stop()


class FuturesWorker:
    """Submits each batch to a ``concurrent.futures.Executor`` and waits for it."""

    __slots__ = ("_call", "_executor", "_kind", "_supervisor")

    batch_target_ns = _REMOTE_TARGET_NS

    def __init__(
        self, executor: Executor, stage: PipelineStage[Any, Any], supervisor: Supervisor
    ) -> None:
        self._kind, self._call = kind_of(stage)
        self._executor = executor
        self._supervisor = supervisor

    def start(self) -> None:
        pass  # a stage with hooks is refused at add()

    def stop(self) -> None:
        pass

    def process(self, batch: list[Any]) -> BatchOutcome:
        outcome = self._one(batch)
        if outcome is not None:
            return outcome
        # The executor failed the batch as a whole (a broken pool, an item
        # that does not pickle): each item alone, so that the error lands on
        # the item(s) it belongs to.
        return _one_by_one(self._one, batch)

    def _one(self, batch: list[Any]) -> BatchOutcome | None:
        # The batch's outcome; for a batch of one, the executor's own error as
        # the item's. None if the executor failed a batch of several.
        try:
            future = self._executor.submit(process_batch, self._kind, self._call, batch)
        except BaseException as exc:  # noqa: BLE001 (a shut down or hostile executor)
            return _failed(exc) if len(batch) == 1 else None
        while True:
            try:
                # exception() rather than result(): a TimeoutError that a
                # stage raised must not read as this wait's timeout.
                error = future.exception(_POLL)
            except TimeoutError:
                if self._supervisor.cancelled and future.cancel():
                    raise BatchAbandoned from None
                continue
            except CancelledError:  # the executor was shut down with cancel_futures
                raise BatchAbandoned from None
            if error is None:
                outcome: BatchOutcome = future.result()
                return outcome
            return _failed(error) if len(batch) == 1 else None


def _failed(error: BaseException) -> BatchOutcome:
    return [], 0, 0, error, 0


def _one_by_one(
    process_one: Any,
    batch: list[Any],
) -> BatchOutcome:
    # Process the items one at a time, until one fails; `process_one` returns
    # an outcome for a batch of one.
    out: list[Any] = []
    completed = dropped = nanoseconds = 0
    for item in batch:
        outputs, done, empty, error, took = process_one([item])
        out += outputs
        completed += done
        dropped += empty
        nanoseconds += took
        if error is not None:
            return out, completed, dropped, error, nanoseconds
    return out, completed, dropped, None, nanoseconds


def has_hooks(stage: PipelineStage[Any, Any]) -> bool:
    """Whether ``stage`` overrides ``on_start`` or ``on_stop``."""
    cls = type(stage)
    return cls.on_start is not PipelineStage.on_start or cls.on_stop is not PipelineStage.on_stop


def executor_name(executor: object) -> str:
    """``"thread"``, ``"process"``, ``"dask"`` or the executor's class name (for reports)."""
    if isinstance(executor, str):
        return executor
    return "dask" if isinstance(executor, Dask) else type(executor).__name__


def check_executor(executor: object, stage: PipelineStage[Any, Any], name: str) -> ExecutorChoice:
    """Return ``executor`` if stage ``name`` can run there, else raise naming the option.

    A Dask cluster, however given, comes back as a :class:`~pipeline.Dask`.
    """
    if is_dask_client(executor) or (isinstance(executor, str) and executor.startswith("dask://")):
        executor = Dask(executor)  # type: ignore[arg-type]  # a Client or an address
    if isinstance(executor, Dask):
        dumps_for_cluster(stage, name)
        return executor
    if isinstance(executor, str):
        if executor == "thread":
            return "thread"
        if executor == "process":
            from ._process import dumps_stage  # noqa: PLC0415 (multiprocessing on demand)

            dumps_stage(stage, name)
            return "process"
        close = get_close_matches(executor, EXECUTOR_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"'executor' must be 'thread', 'process', 'dask://ADDRESS', a Dask client or a "
            f"concurrent.futures.Executor, got {executor!r}{hint}"
        )
    if not isinstance(executor, Executor):
        raise TypeError(
            "'executor' must be 'thread', 'process', 'dask://ADDRESS', a Dask client or a "
            f"concurrent.futures.Executor, not {type(executor).__name__}"
        )
    if has_hooks(stage):
        raise ValueError(
            f"stage {name!r} has on_start/on_stop, which a concurrent.futures.Executor "
            "cannot run once per worker: use executor='process' (the hooks run in each "
            "worker process) or 'thread', or set up inside process()"
        )
    if isinstance(executor, ProcessPoolExecutor):
        _, call = kind_of(stage)
        try:
            pickle.dumps(call)
        except Exception as exc:  # noqa: BLE001 (any pickling failure, reported as such)
            raise TypeError(
                f"stage {name!r} cannot be sent to a ProcessPoolExecutor, which pickles it "
                f"with pickle: {exc}. Use a function defined at module level, or "
                "executor='process' (which uses cloudpickle when it is installed)"
            ) from None
    return executor


def worker_handle(
    spec: StageSpec,
    stage: PipelineStage[Any, Any] | bytes | ClusterStage,
    supervisor: Supervisor,
    number: int,
    processes: list[BaseProcess],
) -> WorkerHandle:
    """The handle worker ``number`` of ``spec`` runs its stage through.

    ``stage`` is the worker's copy of the stage; for a process stage, the
    stage pickled; for a Dask stage, the run's
    :class:`~pipeline._dask.ClusterStage`. ``processes`` collects every
    process started, for the run to end.
    """
    executor = spec.executor
    if executor == "process":
        from ._process import ProcessWorker, stage_modules  # noqa: PLC0415 (on demand)

        if not isinstance(stage, bytes):
            raise TypeError("a process stage's worker takes the stage pickled")
        modules = stage_modules(spec.stage)
        return ProcessWorker(spec.name, number, stage, supervisor, processes, modules)
    if isinstance(stage, bytes):
        raise TypeError("only a process stage's worker takes the stage pickled")
    if isinstance(stage, ClusterStage):
        return stage.worker(supervisor)
    if isinstance(executor, Executor):
        return FuturesWorker(executor, stage, supervisor)
    return ThreadWorker(stage)
