"""Processing one batch: a plain function of (stage, batch) that returns an outcome.

:func:`process_batch` is where a stage's callable meets the items. It holds
no lock, touches no queue, records nothing and never sleeps, so it runs the
same in a worker thread, in a worker process or in any
``concurrent.futures.Executor``; its inputs and its :class:`BatchOutcome`
pickle. What to do with the outcome (retry, skip, fail, record, hand on) is
decided by the worker loop in :mod:`pipeline._worker`, in the pipeline's own
process, whatever ran the batch.

It stops at the first item that raises: the outcome carries the outputs of
the items before it and that item's exception. User code is hostile: what it
raises is caught whatever it is (``BaseException`` included), and a
``StopIteration`` is turned into a ``RuntimeError`` rather than silently
ending the batch (``map`` and ``filter`` take it for the end of their input).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from operator import length_hint
from time import perf_counter_ns
from typing import Any, TypeAlias

from ._stage import StageKind

__all__ = [
    "BatchAbandoned",
    "BatchOutcome",
    "batch_function",
    "process_batch",
    "stop_iteration_error",
]

BatchOutcome: TypeAlias = tuple[list[Any], int, int, BaseException | None, int]
"""What processing a batch came to: ``(outputs, completed, dropped, error, nanoseconds)``.

The first ``completed`` items of the batch finished, ``dropped`` of them
with no output, producing ``outputs`` in input order. If ``error`` is set,
the next item (``batch[completed]``) raised it and the items after it were
not tried. ``nanoseconds`` is the time spent in the stage's code. A plain
tuple, unpacked where it is used: a named one costs a lone item's latency
a Python call per stage.
"""


class BatchAbandoned(Exception):  # noqa: N818 (control flow, never seen by users)
    """Raised by a worker handle instead of an outcome: the run was cancelled meanwhile.

    The batch's items count as not processed.
    """


def stop_iteration_error() -> RuntimeError:
    """The error that stands for a ``StopIteration`` raised by a stage's callable."""
    return RuntimeError("process() raised StopIteration")


def process_batch(kind: StageKind, call: Callable[[Any], Any], batch: list[Any]) -> BatchOutcome:
    """Apply ``call`` (a stage of ``kind``) to each item of ``batch`` until one raises.

    >>> process_batch(StageKind.ONE, lambda x: 10 // x, [5, 2, 0, 1])
    ([2, 5], 2, 0, ZeroDivisionError('integer division or modulo by zero'), ...)
    """
    return batch_function(kind)(call, batch)


def batch_function(
    kind: StageKind,
) -> Callable[[Callable[[Any], Any], list[Any]], BatchOutcome]:
    """The function that processes a batch for a stage of ``kind``: ``fn(call, batch)``.

    Each has the common case (no failure) in one C call over the whole batch.
    """
    if kind is StageKind.ONE:
        return _one
    if kind is StageKind.FILTER:
        return _filter
    return _many


def _one(call: Callable[[Any], Any], batch: list[Any]) -> BatchOutcome:
    started = perf_counter_ns()
    out: list[Any] = []
    error: BaseException
    try:
        if len(batch) == 1:
            out.append(call(batch[0]))  # a lone item: cheaper than map()
        else:
            # list.extend keeps what map produced before an exception, so the
            # failing item is the one at len(out).
            out.extend(map(call, batch))
    except StopIteration:
        error = stop_iteration_error()  # as map() would have it, below
    except BaseException as exc:  # noqa: BLE001 (the worker's error policy decides)
        error = exc
    else:
        if len(out) == len(batch):
            return (out, len(out), 0, None, perf_counter_ns() - started)
        error = stop_iteration_error()  # map() ended early: the call raised StopIteration
    return (out, len(out), 0, error, perf_counter_ns() - started)


def _filter(call: Callable[[Any], Any], batch: list[Any]) -> BatchOutcome:
    started = perf_counter_ns()
    n = len(batch)
    # One pass with filter(), which tests each result's truth itself (so a
    # result whose __bool__ raises is that item's error). filter() takes a
    # StopIteration from the predicate for the end of its input, so the
    # batch is followed by a marker that notes whether it got past the end.
    out: list[Any] = []
    items = iter(batch)
    end = _EndMarker()
    error: BaseException
    try:
        out.extend(filter(call, chain(items, end)))
    except BaseException as exc:  # noqa: BLE001 (the worker's error policy decides)
        error = exc
    else:
        if end.reached:
            return (out, n, n - len(out), None, perf_counter_ns() - started)
        error = stop_iteration_error()
    completed = n - 1 - length_hint(items)  # the item filter() was calling
    return (out, completed, completed - len(out), error, perf_counter_ns() - started)


def _many(call: Callable[[Any], Any], batch: list[Any]) -> BatchOutcome:
    started = perf_counter_ns()
    out: list[Any] = []
    dropped = 0
    for index, item in enumerate(batch):
        mark = len(out)
        try:
            out.extend(call(item))
        except BaseException as exc:  # noqa: BLE001 (the worker's error policy decides)
            del out[mark:]  # a failing item emits none of its outputs
            if isinstance(exc, StopIteration):
                exc = stop_iteration_error()
            return (out, index, dropped, exc, perf_counter_ns() - started)
        if len(out) == mark:
            dropped += 1
    return (out, len(batch), dropped, None, perf_counter_ns() - started)


class _EndMarker:
    """Follows a batch in a chain(): notes whether the chain got past the batch."""

    __slots__ = ("reached",)

    def __init__(self) -> None:
        self.reached = False

    def __iter__(self) -> Any:
        self.reached = True
        return iter(())
