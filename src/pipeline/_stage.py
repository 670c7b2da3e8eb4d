"""PipelineStage, how a stage is called, and what a worker needs to run it.

This module holds the stage's public face (:class:`PipelineStage`), the
kinds of callables a stage reduces to (:func:`kind_of`), a stage as added to
a pipeline (:class:`StageSpec`) and the small protocols between a worker and
its run. The worker loop is in :mod:`pipeline._worker`; processing a batch,
wherever it runs, in :mod:`pipeline._batch`.

Smart batching: a worker takes everything available from its input queue, up
to a cap, in one lock acquisition. The cap adapts to the measured cost per
item so that one batch takes about :data:`BATCH_TARGET_SECONDS` (longer for
stages whose batches travel to another process, see
:mod:`pipeline._executors`): trivial stages move up to :data:`MAX_BATCH`
items per queue operation, slow stages one item at a time, which keeps the
work spread over all workers of a stage.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeAlias

from ._compat import RUNTIME_DEFAULTS, TypeVar, fill_defaults
from ._policy import OnError, Retry

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ._dask import Dask
    from ._exceptions import StageError

ExecutorChoice: TypeAlias = "str | Executor | Dask"
"""A stage's executor once checked: "thread", "process", an Executor or a Dask cluster."""

__all__ = [
    "BATCH_TARGET_NS",
    "BATCH_TARGET_SECONDS",
    "MAX_BATCH",
    "ExecutorChoice",
    "Inbox",
    "PipelineStage",
    "StageKind",
    "StageSpec",
    "Supervisor",
    "WorkerState",
    "kind_of",
    "next_batch_cap",
]

In = TypeVar("In", default=Any)
Out = TypeVar("Out", default=In)

MAX_BATCH = 8192
"""The most items a worker takes from its input queue at once."""

BATCH_TARGET_SECONDS = 0.002
"""The processing time per batch the adaptive cap aims for."""

BATCH_TARGET_NS = round(BATCH_TARGET_SECONDS * 1e9)


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

    With ``executor="process"`` each worker is a process of its own, which
    receives the stage pickled (its own copy, also the first) and calls
    :meth:`on_start` and :meth:`on_stop` there, once; nothing it assigns
    comes back to the object you added, so a stage that aggregates over the
    run stays on threads. See :class:`~pipeline.StageOptions`.

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

        Called in one of the stage's workers (a thread, or a worker process
        with ``executor="process"``), one item at a time per worker. An
        exception applies the stage's error policy.
        """

    def on_start(self) -> None:
        """Prepare a worker; called in each worker (thread or process) before its first item.

        An exception here fails the pipeline (hooks are not items, so the
        ``on_error`` policy does not apply).
        """

    def on_stop(self) -> None:
        """Clean up a worker; called in each worker (thread or process) after its last item.

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
    executor: ExecutorChoice = "thread"  # "thread", "process", an Executor or Dask


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


def next_batch_cap(nanoseconds: int, count: int, target_ns: int = BATCH_TARGET_NS) -> int:
    """Size the next batch so that it takes about ``target_ns`` nanoseconds.

    ``count`` items took ``nanoseconds`` (as ``perf_counter_ns()`` measures).

    >>> next_batch_cap(10_000_000, 2)  # 5 ms an item: one at a time
    1
    """
    # Integer comparisons rather than min(), max() and int(): this runs once
    # per batch, on the path of a lone item, where each builtin call shows.
    if nanoseconds * MAX_BATCH <= target_ns * count:
        return MAX_BATCH  # also when the clock did not advance
    cap: int = target_ns * count // nanoseconds
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
