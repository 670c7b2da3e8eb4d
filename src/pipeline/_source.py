"""Reading a run's source: collections in chunks, anything else item by item.

A ``SafeQueue`` source needs none of this: it is the first stage's input
queue itself. Any other source is read through a :class:`SourceReader`, which
counts every item as it is taken from the source (the run's ``items_read``).
An in-memory collection cannot block, so it is read in chunks: by the first
stage's worker itself when that stage has one worker, else by the feeder
thread. Anything else (a generator, a file, a socket reader) is read by the
feeder thread one item at a time, each handed on before the next is asked
for, so no item waits inside the pipeline while the source blocks.

This module starts no thread; the runner runs :func:`feed` in one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MappingView, Sequence, Set
from itertools import islice
from time import perf_counter_ns
from types import GeneratorType
from typing import Any

from ._exceptions import ShutDown, StageError
from ._safequeue import SafeQueue
from ._stage import Supervisor, next_batch_cap

__all__ = ["SourceReader", "feed", "is_in_memory"]

logger = logging.getLogger("pipeline")


def is_in_memory(source: object) -> bool:
    """Whether ``source`` is a collection held in memory, safe to read in chunks.

    Sequences, sets, mappings and their views: types that say so by
    inheritance or registration, not merely by having ``__len__`` (a database
    cursor may have one and still block between rows).
    """
    return isinstance(source, Sequence | Set | Mapping | MappingView)


class SourceReader:
    """Takes items from the source for whoever reads it; counts each one.

    Only one thread reads: the feeder, or a lone first worker, for which this
    is the inbox. An exception from the source fails the run, attributed to
    the source; the items read before it are handed out, and the next call
    ends the stream.
    """

    __slots__ = ("exhausted", "maxsize", "position", "read", "sequence", "source", "supervisor")

    def __init__(
        self,
        source: Iterator[Any],
        supervisor: Supervisor,
        maxsize: int,
        sequence: list[Any] | tuple[Any, ...] | range | None = None,
    ) -> None:
        self.source = source
        self.supervisor = supervisor
        self.maxsize = maxsize
        self.sequence = sequence  # read by slicing instead, when given
        self.position = 0
        self.exhausted = False
        self.read = 0  # items taken from the source: the run's items_read

    def _get_batch(self, max_items: int, deadline: float | None = None) -> list[Any]:
        del deadline  # only one thread reads, and an in-memory source never blocks
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
                chunk.extend(islice(self.source, max_items))  # keeps what came before an error
        except BaseException as exc:  # noqa: BLE001 (reported, then raised by the runner)
            self.exhausted = True
            self.read += len(chunk)
            self.supervisor.fail(StageError("source", exc, where="source"))
            if not chunk:
                raise ShutDown from None
            return chunk
        self.read += len(chunk)
        if len(chunk) < max_items:
            self.exhausted = True  # islice stopped early: nothing more to read
            if not chunk:
                raise ShutDown
        return chunk


def feed(
    reader: SourceReader, queue: SafeQueue[Any], supervisor: Supervisor, *, chunks: bool
) -> None:
    """Read the source into ``queue`` until it ends or the run is cancelled.

    What the queue refuses once the run is cancelled is counted there.
    """
    if chunks:
        cap = 1
        try:
            while not supervisor.cancelled:
                started = perf_counter_ns()
                chunk = reader._get_batch(cap)  # the reader caps it at its maxsize
                queue._put_batch(chunk)
                cap = next_batch_cap(perf_counter_ns() - started, len(chunk))
        except ShutDown:
            return
        return
    put = queue._put_batch
    source = reader.source
    try:
        while not supervisor.cancelled:
            try:
                item = next(source)
            except StopIteration:
                return
            except BaseException as exc:  # noqa: BLE001 (a ShutDown from the source too: an error)
                supervisor.fail(StageError("source", exc, where="source"))
                return
            reader.read += 1
            put([item])
    finally:
        # Closing a generator that ended or raised does nothing: only one the
        # run stopped reading early has cleanup left to run.
        if isinstance(source, GeneratorType):
            _close_generator(source)


def _close_generator(source: GeneratorType[Any, Any, Any]) -> None:
    # The run stopped reading early (a failure, a cancellation): close the
    # generator here, on the thread that ran it, so that its ``finally``
    # blocks and ``with`` statements (a database cursor, a file) run now,
    # before the run returns, and not whenever garbage collection gets to it.
    # The run has already ended (cancelled or failed) by the time this runs,
    # so an error from the generator's cleanup cannot be the run's outcome:
    # it is logged, as an observer's error is, rather than lost.
    try:
        source.close()
    except BaseException:  # logged: the run's outcome is decided
        logger.exception("closing the source generator raised; the run had ended")
