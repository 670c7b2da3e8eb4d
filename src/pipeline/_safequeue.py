"""SafeQueue: a bounded, thread-safe FIFO built on one lock and its conditions.

Items move between threads only through a :class:`SafeQueue`. The few other
locks of the library each guard one small thing where it lives: a run's
outcome and a pipeline's registry of runs (:mod:`pipeline._run`,
:mod:`pipeline._pipeline`), the line of a multi-worker ordered stage
(:mod:`pipeline._ordering`), and the start of the worker-process machinery
(:mod:`pipeline._process`).

Compared with ``queue.Queue`` it adds what pipelines need: producer handles
whose last close ends the stream, batch ``put_many`` / ``get_many``, and cheap
always-on statistics. The single-item methods keep ``queue.Queue``'s exact
semantics (CPython 3.13's, ``shutdown()`` included) on every supported Python.

Past 400 lines because ``queue.Queue``'s whole contract is here (every
method, ``shutdown()``, the subclass hooks, a wake-up that is never lost
whatever interrupts a notify), plus the producers, the batch methods and the
statistics; the runner's batch hand-off (``_get_batch``, ``_put_batch``) is
the queue's own fast path. The ordered hand-off of multi-worker stages is
not here: it is :mod:`pipeline._ordering`.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from itertools import repeat, starmap
from queue import Empty, Full  # the standard library's own, so `except queue.Empty` works
from time import monotonic
from typing import Any, Generic, TypeVar

from ._exceptions import ProducerError, ShutDown
from ._validate import check_int

__all__ = ["Empty", "Full", "Producer", "QueueStats", "SafeQueue"]

T = TypeVar("T")

_PUT_ON_SHUT_DOWN = "put on a queue that is shut down"
_GET_ON_SHUT_DOWN = "get from a queue that is shut down and empty"


# What the current thread waited, in seconds, summed over every queue: for
# gets (no item) and for puts (no room). Only a call that really waited
# touches it. A worker reads its own at its end (thread_waits).
_this_thread = threading.local()


def thread_waits() -> tuple[float, float]:
    """Seconds the calling thread waited in every queue so far: (for items, for room)."""
    return getattr(_this_thread, "get_waited", 0.0), getattr(_this_thread, "put_waited", 0.0)


def add_thread_waits(*, get: float = 0.0, put: float = 0.0) -> None:
    """Count waits of the calling thread outside a queue (the reorder window's)."""
    _this_thread.get_waited = getattr(_this_thread, "get_waited", 0.0) + get
    _this_thread.put_waited = getattr(_this_thread, "put_waited", 0.0) + put


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A consistent snapshot of a :class:`SafeQueue`, taken under its lock.

    >>> q = SafeQueue[int](maxsize=4)
    >>> q.put_many([1, 2, 3])
    >>> _ = q.get()
    >>> s = q.stats()
    >>> (s.size, s.maxsize, s.peak_size, s.puts, s.gets)
    (2, 4, 3, 3, 1)

    Attributes:
        size: items in the queue now.
        maxsize: the bound (``0`` or less means unbounded).
        peak_size: the largest ``size`` ever reached.
        puts: items ever put (``put_many`` counts each item).
        gets: items ever taken (``get_many`` counts each item).
        discarded: items dropped by ``shutdown(immediate=True)``.
        producers: producer handles open now.
        putters_waiting: threads blocked in a put right now.
        getters_waiting: threads blocked in a get right now.
        put_blocked_seconds: total seconds producers spent blocked on a full
            queue (waits that have ended).
        get_blocked_seconds: total seconds consumers spent blocked on an empty
            queue (waits that have ended).
        is_shutdown: whether ``shutdown()`` was called (or the last producer closed).
    """

    size: int
    maxsize: int
    peak_size: int
    puts: int
    gets: int
    discarded: int
    producers: int
    putters_waiting: int
    getters_waiting: int
    put_blocked_seconds: float
    get_blocked_seconds: float
    is_shutdown: bool


def _waiter_list(condition: threading.Condition) -> Sized:
    """What says whether a thread waits on ``condition``: its own waiter list.

    A read-only look at ``Condition._waiters`` (CPython and PyPy keep the
    waiting threads' locks there, changed only under the condition's lock),
    so that a put with nobody waiting skips the notify, which costs more
    than the rest of the put. The list is never changed here: waiting and
    notifying go through the public ``wait()`` and ``notify()``. Where the
    attribute is missing or not a deque, a stand-in that is never empty
    makes every put notify, as ``queue.Queue`` does.
    """
    waiters = getattr(condition, "_waiters", None) if _WAITER_LISTS_STAY else None
    return waiters if isinstance(waiters, deque) else _SOMEONE_MAY_WAIT


_SOMEONE_MAY_WAIT: Sized = (None,)


def _waiter_lists_stay() -> bool:
    # The queue keeps a reference to each condition's waiter list: check once
    # that wait() and notify() change that list in place, not replace it.
    condition = threading.Condition(threading.Lock())
    waiters = getattr(condition, "_waiters", None)
    if not isinstance(waiters, deque):
        return False
    with condition:
        condition.wait(0)
        condition.notify_all()
    return getattr(condition, "_waiters", None) is waiters and not waiters


_WAITER_LISTS_STAY = _waiter_lists_stay()


class SafeQueue(Generic[T]):
    """A bounded FIFO queue for threads: a drop-in for ``queue.Queue``.

    >>> q = SafeQueue[str](maxsize=2)
    >>> q.put("a")
    >>> q.put("b")
    >>> q.full()
    True
    >>> q.get(), q.get()
    ('a', 'b')

    End of stream is counted, not guessed: every producer takes a handle and
    the queue shuts down when the last one closes. Consumers, however many,
    drain what is left and then stop:

    >>> q = SafeQueue[int]()
    >>> with q.producer() as p:
    ...     p.put_many(range(3))
    >>> list(q)
    [0, 1, 2]

    ``maxsize <= 0`` means unbounded. ``put``/``get`` raise the standard
    library's ``queue.Full`` / ``queue.Empty`` and :class:`~pipeline.ShutDown`
    exactly as ``queue.Queue`` does on Python 3.13. Subclasses may override
    ``_init``, ``_qsize``, ``_put`` and ``_get`` as with ``queue.Queue``; they
    are called with the lock held.

    Cost: one lock acquisition per call. Statistics are plain integer updates
    under that lock, and waiting threads are counted, so a call with nobody
    waiting on the other side does not touch the condition variables at all.
    The conditions are used only through their public ``wait()`` and
    ``notify()``, so a thread may wait on ``q.not_empty`` itself, as with
    ``queue.Queue``.
    """

    # Not slotted: the standard library's attribute names (mutex, not_empty,
    # queue, ...) are part of the drop-in contract and code reads them.

    def __init__(self, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"'maxsize' must be an int, not {type(maxsize).__name__}")
        self.maxsize = maxsize  # any int: <= 0 means unbounded, as in queue.Queue
        self._init(maxsize)

        # `mutex` is held whenever the queue or any statistic changes, and every
        # field below is read and written only under it: nothing here relies on
        # the GIL, so the queue is correct on free-threaded builds too. The
        # conditions share it:
        self.mutex = threading.Lock()
        # not_empty: an item was added (or the queue shut down); getters wait.
        self.not_empty = threading.Condition(self.mutex)
        # not_full: an item was removed (or the queue shut down); putters wait.
        self.not_full = threading.Condition(self.mutex)
        # all_tasks_done: unfinished_tasks reached zero; join() waits.
        self.all_tasks_done = threading.Condition(self.mutex)
        # shut: the queue shut down; _wait_for_shutdown waits.
        self._shut = threading.Condition(self.mutex)
        self.unfinished_tasks = 0
        self.is_shutdown = False

        # Threads blocked in a put or a get, counted for stats(). Whether to
        # notify is decided by the conditions' waiter lists (see _waiter_list):
        # they also see a thread that waits on not_empty itself, and they
        # leave out a waiter already notified but not yet running.
        self._putters_waiting = 0
        self._getters_waiting = 0
        self._sleeping_getters = _waiter_list(self.not_empty)
        self._sleeping_putters = _waiter_list(self.not_full)
        self._producers = 0
        self._peak = 0
        self._puts = 0
        self._gets = 0
        self._discarded = 0
        # Items a runner offered (_put_batch) after the
        # queue shut down: the queue never took them, and a run's books count
        # them here, where they stopped.
        self._refused = 0
        self._put_blocked = 0.0
        self._get_blocked = 0.0
        # The time-weighted mean of the size, for a run's report: the area
        # under size over time since _track_depth() was called. Off for a
        # queue of your own, which then pays nothing for it.
        self._tracking = False
        self._tracked_since = 0.0
        self._size_since = 0.0
        self._size_area = 0.0
        # Set by _fit_maxsize_to_first_item: the bytes that maxsize items of
        # the first item's size should come to (0: maxsize stays as it is).
        self._fit_bytes = 0
        self._fit_least = 1
        cls = type(self)
        self._plain_deque = (
            cls._init is SafeQueue._init
            and cls._put is SafeQueue._put
            and cls._get is SafeQueue._get
            and cls._qsize is SafeQueue._qsize
        )

    def __repr__(self) -> str:
        with self.mutex:
            size = self._qsize()
            state = " shutdown" if self.is_shutdown else ""
        return f"<{type(self).__name__} size={size} maxsize={self.maxsize}{state}>"

    # -- the queue.Queue interface ----------------------------------------------

    def task_done(self) -> None:
        """Mark one formerly gotten item as processed, for :meth:`join`.

        Raises:
            ValueError: called more times than items were put.
        """
        with self.mutex:
            unfinished = self.unfinished_tasks - 1
            if unfinished <= 0:
                if unfinished < 0:
                    raise ValueError("task_done() called too many times")
                self.all_tasks_done.notify_all()
            self.unfinished_tasks = unfinished

    def join(self) -> None:
        """Block until every item put has been marked with :meth:`task_done`.

        ``shutdown(immediate=True)`` marks the items it discards as done.
        """
        with self.mutex:
            while self.unfinished_tasks:
                self.all_tasks_done.wait()

    def qsize(self) -> int:
        """Return the number of items in the queue (stale as soon as it returns)."""
        with self.mutex:
            return self._qsize()

    def empty(self) -> bool:
        """Return whether the queue is empty (stale as soon as it returns)."""
        with self.mutex:
            return not self._qsize()

    def full(self) -> bool:
        """Return whether the queue is full (stale as soon as it returns)."""
        with self.mutex:
            return 0 < self.maxsize <= self._qsize()

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` at the back of the queue.

        With ``block`` true and ``timeout`` None, wait as long as it takes for
        a free slot; with a non-negative ``timeout``, wait at most that long and
        raise ``queue.Full``. With ``block`` false, raise ``queue.Full`` at once
        if there is no room (``timeout`` is then ignored).

        >>> q = SafeQueue[int](maxsize=1)
        >>> q.put(1)
        >>> q.put(2, timeout=0.01)
        Traceback (most recent call last):
        ...
        queue.Full

        Raises:
            ShutDown: the queue was shut down (checked first, and again after
                every wait).
            queue.Full: no room in time.
            ValueError: a negative ``timeout`` on a bounded queue, as in
                ``queue.Queue``.
        """
        with self.mutex:
            if self.is_shutdown:
                raise ShutDown(_PUT_ON_SHUT_DOWN)
            if self._fit_bytes:
                self._fit_maxsize_locked(item)
            # The plain-deque fast path inlines _qsize/_put: a third of the
            # cost of a put with nobody waiting.
            items = self.queue if self._plain_deque else None
            maxsize = self.maxsize
            if maxsize > 0:
                size = len(items) if items is not None else self._qsize()
                if not block:
                    if size >= maxsize:
                        raise Full
                elif timeout is not None and timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                elif size >= maxsize and not self._wait_for_room(
                    None if timeout is None else monotonic() + timeout
                ):
                    raise ShutDown(_PUT_ON_SHUT_DOWN)
            if self._tracking:
                self._note_size_locked()
            if items is not None:
                items.append(item)
                size = len(items)
            else:
                self._put(item)
                size = self._qsize()
            self.unfinished_tasks += 1
            self._puts += 1
            if size > self._peak:  # noqa: PLR1730 (max() costs a call per put)
                self._peak = size
            if self._sleeping_getters:
                self.not_empty.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return the item at the front of the queue.

        With ``block`` true and ``timeout`` None, wait as long as it takes for
        an item; with a non-negative ``timeout``, wait at most that long and
        raise ``queue.Empty``. With ``block`` false, raise ``queue.Empty`` at
        once if there is no item.

        >>> q = SafeQueue[int]()
        >>> q.get(timeout=0.01)
        Traceback (most recent call last):
        ...
        queue.Empty

        Raises:
            ShutDown: the queue was shut down and is empty (after a graceful
                shutdown the remaining items are returned first).
            queue.Empty: no item in time.
            ValueError: a blocking call with a negative ``timeout``.
        """
        with self.mutex:
            items = self.queue if self._plain_deque else None
            if not (items if items is not None else self._qsize()):
                if self.is_shutdown:
                    raise ShutDown(_GET_ON_SHUT_DOWN)
                if not block:
                    raise Empty
                _check_timeout(timeout)
                self._wait_for_items(None if timeout is None else monotonic() + timeout)
            elif block and timeout is not None and timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            if self._tracking:
                self._note_size_locked()
            item: T = items.popleft() if items is not None else self._get()
            self._gets += 1
            if self._sleeping_putters:
                self.not_full.notify()
            return item

    def put_nowait(self, item: T) -> None:
        """Put ``item`` only if a slot is free now; else raise ``queue.Full``."""
        self.put(item, block=False)

    def get_nowait(self) -> T:
        """Return an item only if one is there now; else raise ``queue.Empty``."""
        return self.get(block=False)

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down; puts raise :class:`~pipeline.ShutDown` from now on.

        Graceful (the default): gets return the remaining items, then raise
        ``ShutDown``. Immediate: the remaining items are discarded (counted in
        ``stats().discarded`` and marked done for :meth:`join`), and gets raise
        at once. Either way every blocked ``put``/``get`` wakes up. Calling it
        again is harmless; a later immediate call still discards.

        >>> q = SafeQueue[int]()
        >>> q.put(1)
        >>> q.shutdown()
        >>> q.get()
        1
        >>> q.get()
        Traceback (most recent call last):
        ...
        ShutDown
        """
        with self.mutex:
            self._shutdown_locked(immediate=immediate)

    # -- pipeline additions ------------------------------------------------------

    def put_many(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Put every item of ``items``, in order, as room appears.

        More items than there is room for are put as consumers make room, so a
        ``put_many`` larger than ``maxsize`` works and keeps its order (other
        producers' items may interleave). ``timeout`` bounds the whole call.

        >>> q = SafeQueue[int]()
        >>> q.put_many([1, 2, 3])
        >>> q.get_many(10)
        [1, 2, 3]

        Raises:
            ShutDown: the queue was or became shut down; the items before the
                one that could not be put are in the queue.
            queue.Full: ``timeout`` elapsed; likewise the earlier items are in.
            ValueError: a negative ``timeout``.
        """
        _check_timeout(timeout)
        pending = items if isinstance(items, list | tuple) else list(items)
        with self.mutex:
            deadline = None if timeout is None else monotonic() + timeout
            if self.is_shutdown or self._put_many_locked(pending, deadline) < len(pending):
                raise ShutDown(_PUT_ON_SHUT_DOWN)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait for at least one item, then return all there are, up to ``max_items``.

        The items are taken in one lock acquisition, so a consumer that fell
        behind catches up in one call instead of ``max_items`` calls. Nothing
        waits for a batch to fill: a lone item is returned at once.

        >>> q = SafeQueue[int]()
        >>> q.put_many(range(5))
        >>> q.get_many(3), q.get_many(3)
        ([0, 1, 2], [3, 4])

        Args:
            max_items: the most items to return (at least 1).
            timeout: seconds to wait for the first item; ``None`` waits as long
                as it takes, ``0`` does not wait.

        Raises:
            ShutDown: the queue was shut down and is empty.
            queue.Empty: no item within ``timeout``.
            TypeError: ``max_items`` is not an int.
            ValueError: ``max_items < 1`` or a negative ``timeout``.
        """
        check_int("max_items", max_items, 1)
        _check_timeout(timeout)
        with self.mutex:
            if not self._qsize():
                if self.is_shutdown:
                    raise ShutDown(_GET_ON_SHUT_DOWN)
                self._wait_for_items(None if timeout is None else monotonic() + timeout)
            return self._take_locked(max_items)

    def producer(self) -> Producer[T]:
        """Register a producer and return its handle.

        The queue shuts down gracefully when the last open handle closes, so
        every consumer sees end of stream exactly once, after the last item,
        whatever the number of producers and consumers. Take every handle
        before starting the producers: a fast producer that closes before the
        others registered would end the stream early.

        >>> q = SafeQueue[int]()
        >>> a, b = q.producer(), q.producer()
        >>> a.put(1)
        >>> a.close()
        >>> q.is_shutdown
        False
        >>> b.close()
        >>> q.is_shutdown
        True

        Raises:
            ProducerError: the queue is already shut down.
        """
        with self.mutex:
            if self.is_shutdown:
                raise ProducerError("cannot register a producer on a queue that is shut down")
            self._producers += 1
        return Producer(self)

    def stats(self) -> QueueStats:
        """Return a :class:`QueueStats` snapshot, consistent as of one instant."""
        with self.mutex:
            return QueueStats(
                size=self._qsize(),
                maxsize=self.maxsize,
                peak_size=self._peak,
                puts=self._puts,
                gets=self._gets,
                discarded=self._discarded,
                producers=self._producers,
                putters_waiting=self._putters_waiting,
                getters_waiting=self._getters_waiting,
                put_blocked_seconds=self._put_blocked,
                get_blocked_seconds=self._get_blocked,
                is_shutdown=self.is_shutdown,
            )

    def __iter__(self) -> Iterator[T]:
        """Yield items until the queue is shut down and drained.

        >>> q = SafeQueue[int]()
        >>> q.put_many([1, 2])
        >>> q.shutdown()
        >>> [x for x in q]
        [1, 2]
        """
        while True:
            try:
                yield self.get()
            except ShutDown:
                return

    # -- the runner's batch hand-off: arguments already validated --------------
    # A runner never sees ShutDown from a put: what a shut-down queue did not
    # take is counted in _refused (the run's books read it), and the runner
    # learns of the cancellation from the run itself.

    def _get_batch(self, max_items: int, deadline: float | None = None) -> list[T]:
        # get_many() without the argument checks, with a deadline instead of a
        # timeout: a lone item's latency through a pipeline pays for every
        # call on this path.
        with self.mutex:
            if not (self.queue if self._plain_deque else self._qsize()):
                if self.is_shutdown:
                    raise ShutDown(_GET_ON_SHUT_DOWN)
                self._wait_for_items(deadline)
            return self._take_locked(max_items)

    def _put_batch(self, items: list[T]) -> None:
        # put_many(items) for a list, without the argument checks and without
        # ShutDown: items the queue could not take are counted as refused.
        n = len(items)
        if not n:
            return  # a batch that produced no output: nothing to wake anyone for
        with self.mutex:
            taken = self._put_many_locked(items, None)
            if taken < n:
                self._refused += n - taken

    def _books(self) -> tuple[int, int, int]:
        # (refused, discarded, left in the queue), consistent as of one instant.
        with self.mutex:
            return self._refused, self._discarded, self._qsize()

    def _track_depth(self) -> None:
        # From now on, keep the time-weighted mean of the size (a run's queues).
        with self.mutex:
            self._tracking = True
            self._tracked_since = self._size_since = monotonic()

    def _mean_size(self) -> float:
        # The time-weighted mean size since _track_depth(); 0.0 if not tracked.
        with self.mutex:
            if not self._tracking:
                return 0.0
            now = monotonic()
            area = self._size_area + self._qsize() * (now - self._size_since)
            span = now - self._tracked_since
            return area / span if span > 0 else float(self._qsize())

    def _note_size_locked(self) -> None:
        # The size is about to change: add the time it had its current value.
        now = monotonic()
        self._size_area += self._qsize() * (now - self._size_since)
        self._size_since = now

    def _fit_maxsize_to_first_item(self, budget_bytes: int, least: int) -> None:
        # Let the first item put lower maxsize to about `budget_bytes` worth
        # of items of its size (sys.getsizeof, which is shallow), but not
        # below `least`. A pipeline's queues without an explicit bound use
        # this: small items get a long queue, which means fewer hand-offs
        # between threads; big ones a short one, which bounds the memory.
        with self.mutex:
            if not self._puts:
                self._fit_bytes = budget_bytes
                self._fit_least = least

    def _wait_for_shutdown(self, deadline: float | None) -> bool:
        # Wait, without counting as a getter (so puts do not wake us), until
        # the queue is shut down; False if the deadline passed first. Lets a
        # consumer that wants everything at the end skip a wake-up per batch.
        with self.mutex:
            while not self.is_shutdown:
                if deadline is None:
                    self._shut.wait()
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0.0:
                        return False
                    self._shut.wait(remaining)
            return True

    # -- internals: called with the mutex held ----------------------------------

    def _fit_maxsize_locked(self, item: object) -> None:
        budget, self._fit_bytes = self._fit_bytes, 0
        try:
            size = sys.getsizeof(item)
        except BaseException:  # noqa: BLE001 (a hostile __sizeof__: keep the bound; PyPy raises)
            return
        fitted = budget // max(size, 1)
        if fitted < self.maxsize:
            self.maxsize = max(fitted, self._fit_least)

    def _take_locked(self, max_items: int) -> list[T]:
        if self._tracking:
            self._note_size_locked()
        if self._plain_deque:
            # Inlined bookkeeping: this runs once per batch on every hop.
            items = self.queue
            n = len(items)
            if n <= max_items:
                taken = list(items)
                items.clear()
            else:
                n = max_items
                # starmap calls popleft n times from C: about 3x faster than
                # a comprehension.
                taken = list(starmap(items.popleft, repeat((), n)))
            self._gets += n
            if self._sleeping_putters:
                self.not_full.notify(n)
            return taken
        taken = []
        try:
            for _ in range(min(max_items, self._qsize())):
                taken.append(self._get())
        finally:
            # A subclass hook that raises has still taken the items before it.
            self._count_get_locked(len(taken))
        return taken

    def _count_get_locked(self, n: int) -> None:
        self._gets += n
        if n and self._sleeping_putters:
            self.not_full.notify(n)

    def _put_many_locked(self, items: list[T] | tuple[T, ...], deadline: float | None) -> int:
        # Put the items in order as room appears; return how many went in,
        # fewer than all only if the queue is (or became) shut down. Raises
        # Full at the deadline, with the earlier items in.
        if self.is_shutdown:
            return 0
        if self._tracking:
            self._note_size_locked()
        if self._fit_bytes and items:
            self._fit_maxsize_locked(items[0])
        total = len(items)
        maxsize = self.maxsize
        if self._plain_deque:
            queue = self.queue
            if maxsize <= 0 or len(queue) + total <= maxsize:
                # The common case, inlined: everything fits at once.
                queue.extend(items)
                self.unfinished_tasks += total
                self._puts += total
                size = len(queue)
                if size > self._peak:  # noqa: PLR1730 (max() costs a call per batch)
                    self._peak = size
                if self._sleeping_getters:
                    self.not_empty.notify(total)
                return total
        done = 0
        while done < total:
            room = total - done if maxsize <= 0 else maxsize - self._qsize()
            if room <= 0:
                if not self._wait_for_room(deadline):
                    return done
                continue
            chunk = items[done : done + room]
            n = 0
            if self._tracking:
                self._note_size_locked()  # it may have waited for room: the size moved
            try:
                if self._plain_deque:
                    self.queue.extend(chunk)
                    n = len(chunk)
                else:
                    for item in chunk:
                        self._put(item)
                        n += 1
            finally:
                # A subclass hook that raises leaves the items before it in
                # the queue: count them, as successive put() calls would.
                done += n
                self._count_put_locked(n)
        return done

    def _count_put_locked(self, n: int) -> None:
        self.unfinished_tasks += n
        self._puts += n
        size = self._qsize()
        if size > self._peak:  # noqa: PLR1730 (max() costs a call per batch)
            self._peak = size
        if n and self._sleeping_getters:
            self.not_empty.notify(n)

    def _wait_for_room(self, deadline: float | None) -> bool:
        # Wait until a slot is free: True when there is room, False if the
        # queue shut down meanwhile; raise Full at the deadline.
        limit = self.maxsize - 1
        self._putters_waiting += 1
        started = monotonic()
        try:
            while self._qsize() > limit:
                if deadline is None:
                    self.not_full.wait()
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0.0:
                        raise Full
                    self.not_full.wait(remaining)
                if self.is_shutdown:
                    return False
            return True
        except BaseException:
            # A notified waiter that leaves without using its wake-up (timeout,
            # KeyboardInterrupt) passes it on, so no room is left unclaimed
            # while another putter sleeps.
            if self._putters_waiting > 1 and self._qsize() <= limit:
                self.not_full.notify()
            raise
        finally:
            self._putters_waiting -= 1
            waited = monotonic() - started
            self._put_blocked += waited
            _this_thread.put_waited = getattr(_this_thread, "put_waited", 0.0) + waited

    def _wait_for_items(self, deadline: float | None) -> None:
        # Wait until an item is available; raise Empty at the deadline and
        # ShutDown if the queue is shut down and empty.
        # A C call for the size where the hooks are the plain deque's: the
        # thread pays for every call here between waking and handing on.
        size = self.queue.__len__ if self._plain_deque else self._qsize
        self._getters_waiting += 1
        started = monotonic()
        try:
            while not size():
                if deadline is None:
                    self.not_empty.wait()
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0.0:
                        raise Empty
                    self.not_empty.wait(remaining)
                if self.is_shutdown and not size():
                    raise ShutDown(_GET_ON_SHUT_DOWN)
        except BaseException:
            if self._getters_waiting > 1 and self._qsize():
                self.not_empty.notify()
            raise
        finally:
            self._getters_waiting -= 1
            waited = monotonic() - started
            self._get_blocked += waited
            _this_thread.get_waited = getattr(_this_thread, "get_waited", 0.0) + waited

    def _shutdown_locked(self, *, immediate: bool) -> None:
        self.is_shutdown = True
        if immediate:
            if self._tracking:
                self._note_size_locked()
            while self._qsize():
                self._get()
                self._discarded += 1
                if self.unfinished_tasks > 0:
                    self.unfinished_tasks -= 1
            self.all_tasks_done.notify_all()
        self.not_empty.notify_all()
        self.not_full.notify_all()
        self._shut.notify_all()

    def _release_producer(self, handle: Producer[T]) -> None:
        with self.mutex:
            if handle._closed:
                return
            handle._closed = True
            self._producers -= 1
            if self._producers == 0 and not self.is_shutdown:
                self._shutdown_locked(immediate=False)

    # Override these to implement other queue organisations, as with queue.Queue.
    # They are only called with the mutex held.

    def _init(self, maxsize: int) -> None:
        self.queue: Any = deque()

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: T) -> None:
        self.queue.append(item)

    def _get(self) -> T:
        item: T = self.queue.popleft()
        return item


class Producer(Generic[T]):
    """One producer's handle on a :class:`SafeQueue`; made by :meth:`SafeQueue.producer`.

    Closing the last open handle shuts the queue down gracefully, which is the
    end-of-stream signal consumers see. ``close()`` is idempotent, so a handle
    can never be counted twice: closing "more producers than registered" is
    impossible by construction. Use it as a context manager so it closes on
    every path.

    >>> q = SafeQueue[str]()
    >>> with q.producer() as p:
    ...     p.put("x")
    >>> p.closed, q.is_shutdown
    (True, True)
    >>> p.put("y")
    Traceback (most recent call last):
    ...
    pipeline.ProducerError: put through a closed producer handle
    """

    __slots__ = ("_closed", "_queue")

    def __init__(self, queue: SafeQueue[T]) -> None:
        self._queue = queue
        self._closed = False

    @property
    def queue(self) -> SafeQueue[T]:
        """The queue this handle feeds."""
        return self._queue

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put one item, as :meth:`SafeQueue.put`.

        Raises:
            ProducerError: the handle is closed.
        """
        if self._closed:
            raise ProducerError("put through a closed producer handle")
        self._queue.put(item, block, timeout)

    def put_many(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Put several items, as :meth:`SafeQueue.put_many`.

        Raises:
            ProducerError: the handle is closed.
        """
        if self._closed:
            raise ProducerError("put through a closed producer handle")
        self._queue.put_many(items, timeout)

    def close(self) -> None:
        """Close this handle; the last one to close shuts the queue down. Idempotent."""
        self._queue._release_producer(self)

    def __enter__(self) -> Producer[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Producer {state} on {self._queue!r}>"
