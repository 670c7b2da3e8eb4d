"""The ordered hand-off of a multi-worker stage: a bounded window of results in flight.

A stage with several workers and ``ordered=True`` hands its outputs on in
input order, although its workers finish their batches in any order. The run
gives each such stage one :class:`ReorderWindow`, between the stage's input
queue and its output queue (the ``stream`` pattern of sourcegraph/conc):

* a worker takes a batch through the window, which opens a one-slot result
  for it at the back of a FIFO: the slots are in the order the batches left
  the queue;
* when the batch is processed (in the worker's thread, a worker process or an
  executor: the window does not care), the worker fills its slot; whoever
  fills the slot at the head of the FIFO hands on every filled slot from the
  head, in one put, so outputs leave in input order and none waits for a
  thread to come and fetch it;
* at most ``size`` slots are open: a worker wanting a batch while the window
  is full waits, so one slow batch applies backpressure instead of letting
  finished results pile up behind it.

The queues stay plain queues, and a queue source shared by two runs is
numbered by each run on its own.

Locks (the window's own, as the queue module's are the queue's):
``_taking`` makes "take a batch, open its slot" one step; only takers wait on
it, also while one of them waits for input. ``_lock`` guards the FIFO and the
``_draining`` flag; it is never held while waiting for a queue. One thread at
a time drains (the flag), without the lock, so a drainer blocked on a full
downstream queue holds up no worker that only fills its slot.
"""

from __future__ import annotations

import threading
from collections import deque
from time import perf_counter
from typing import Any

from ._exceptions import ShutDown
from ._safequeue import SafeQueue, add_thread_waits

__all__ = ["ReorderWindow", "Slot"]


class Slot:
    """The place of one batch in line: empty until its worker fills it."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Any] | None = None


class ReorderWindow:
    """Numbers the batches a stage takes and hands their outputs on in that order.

    ``take(cap)`` returns a batch of at most ``cap`` items from ``inbox``
    with its :class:`Slot`; ``give(slot, outputs)`` fills it (an empty list
    when the batch produced nothing: it still takes its turn). Outputs reach
    ``downstream`` in the order the batches were taken. ``close()`` wakes a
    worker waiting for room, which then gets ``ShutDown``; ``held()`` counts
    the outputs still waiting for an earlier slot, for the run's books.
    """

    __slots__ = ("_closed", "_draining", "_inbox", "_lock", "_put", "_room", "_size",
                 "_slots", "_taking", "room_seconds", "take_seconds")  # fmt: skip

    def __init__(self, inbox: SafeQueue[Any], downstream: SafeQueue[Any], size: int) -> None:
        self._inbox = inbox
        self._put = downstream._put_batch  # counts what a shut-down queue refuses
        self._size = size
        self._slots: deque[Slot] = deque()
        self._taking = threading.Lock()
        self._lock = threading.Lock()
        # room: a slot left the FIFO (or the window closed); takers wait.
        self._room = threading.Condition(self._lock)
        self._draining = False
        self._closed = False
        # Time the workers spent in take(), summed, and the part of it spent
        # waiting for room in line; the rest was waiting for input. Written
        # under _lock, read by the run's report once the workers are joined.
        self.take_seconds = 0.0
        self.room_seconds = 0.0

    def take(self, cap: int) -> tuple[Slot, list[Any]]:
        """Wait for room and for input; return a new slot and up to ``cap`` items.

        Raises ``ShutDown`` when the input ended or the window was closed.
        """
        started = perf_counter()
        with self._taking:
            # Waiting here is waiting for input: another worker is taking.
            # (An uncontended lock takes well under the 10 µs let through.)
            if (waited := perf_counter() - started) > 1e-5:
                add_thread_waits(get=waited)
            with self._lock:
                # Only takers add slots, and this one holds _taking: the room
                # seen here can only grow until the slot below is added.
                if len(self._slots) >= self._size:
                    self._wait_for_room()
            batch = self._inbox._get_batch(cap)
            slot = Slot()
            with self._lock:
                self._slots.append(slot)
                self.take_seconds += perf_counter() - started
            return slot, batch

    def _wait_for_room(self) -> None:
        # Called with _lock held, the window full.
        started = perf_counter()
        try:
            while len(self._slots) >= self._size:
                if self._closed:
                    raise ShutDown("the run is ending")
                self._room.wait()
        finally:
            waited = perf_counter() - started
            self.room_seconds += waited
            add_thread_waits(put=waited)

    def give(self, slot: Slot, items: list[Any]) -> None:
        """Fill ``slot``; hand on the head of the line if it is now complete."""
        with self._lock:
            slot.items = items
            if self._draining:
                return  # the thread draining will see it
            count, ready = self._ready()
            if not count:
                return
            self._draining = True
        try:
            while count:
                if ready:
                    self._put(ready)
                with self._lock:
                    # The slots leave the line only once handed on, so the
                    # window bounds what is between the two queues.
                    for _ in range(count):
                        self._slots.popleft()
                    self._room.notify_all()
                    count, ready = self._ready()
                    if not count:
                        self._draining = False
        except BaseException:
            with self._lock:
                self._draining = False
            raise

    def _ready(self) -> tuple[int, list[Any]]:
        # How many slots at the head are filled, and their outputs in order.
        # Called with _lock held.
        ready: list[Any] = []
        count = 0
        for slot in self._slots:
            items = slot.items
            if items is None:
                break
            ready += items
            count += 1
        return count, ready

    def close(self) -> None:
        """The run is ending: wake the takers waiting for room (they get ``ShutDown``)."""
        with self._lock:
            self._closed = True
            self._room.notify_all()

    def held(self) -> int:
        """Outputs filled in but not handed on (an earlier slot is still empty)."""
        with self._lock:
            return sum(len(slot.items) for slot in self._slots if slot.items is not None)
