"""The queue.Queue contract, run against queue.Queue and SafeQueue alike.

SafeQueue promises CPython 3.13's ``queue.Queue`` semantics on every supported
Python. Each test here takes the ``make_queue`` fixture, which gives both
implementations, so a difference between them fails a test instead of
surprising a user. Modelled on CPython's ``Lib/test/test_queue.py``.

The shutdown contract takes ``make_shutdown_queue`` instead: ``queue.Queue``
has ``shutdown()`` only from Python 3.13, so before that it runs against
SafeQueue alone.

Proving that a call blocked: ``do_blocking_test`` runs the call in its own
thread, waits until it is blocked, then performs the unblocking action (the
trigger) and checks that the call returned only after the trigger fired. A
SafeQueue counts its waiting threads, so blocking is observed in ``stats()``;
for ``queue.Queue`` (and for waits SafeQueue does not count, such as ``join``)
the trigger fires after CPython's short head start instead. The helpers are
imported by the other SafeQueue test modules.
"""

from __future__ import annotations

import gc
import queue
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from itertools import product
from time import monotonic
from typing import Any, Generic, Literal, Protocol, TypeVar

import pytest

import pipeline
from pipeline import SafeQueue, ShutDown
from tests.helpers import WAIT

R = TypeVar("R")
T = TypeVar("T")

QUEUE_SIZE = 5
# The head start a trigger gives a call it cannot observe blocking (CPython's
# test_queue uses the same 0.1 s). Only used where no counter exists.
TRIGGER_DELAY = 0.1
# A timeout for calls that are meant to time out.
SHORT = 0.05
HAS_STDLIB_SHUTDOWN = sys.version_info >= (3, 13)

Waiting = Literal["get", "put", "other"]


# -- the two implementations, seen through one interface ------------------------


class QueueLike(Protocol[T]):
    """What the contract tests use: queue.Queue's public and conventional API."""

    maxsize: int
    mutex: threading.Lock
    not_empty: threading.Condition
    not_full: threading.Condition
    all_tasks_done: threading.Condition
    unfinished_tasks: int
    queue: Any

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> T: ...
    def put_nowait(self, item: T) -> None: ...
    def get_nowait(self) -> T: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    def task_done(self) -> None: ...
    def join(self) -> None: ...


class ShutdownQueueLike(QueueLike[T], Protocol[T]):
    """A queue with CPython 3.13's ``shutdown()``."""

    is_shutdown: bool

    def shutdown(self, immediate: bool = False) -> None: ...


class QueueFactory(Protocol):
    def __call__(self, maxsize: int = 0) -> QueueLike[Any]: ...


class ShutdownQueueFactory(Protocol):
    def __call__(self, maxsize: int = 0) -> ShutdownQueueLike[Any]: ...


IMPLEMENTATIONS = [
    pytest.param(queue.Queue, id="queue.Queue"),
    pytest.param(SafeQueue, id="SafeQueue"),
]
# queue.Queue.shutdown() exists from Python 3.13 only.
SHUTDOWN_IMPLEMENTATIONS = [
    *([pytest.param(queue.Queue, id="queue.Queue")] if HAS_STDLIB_SHUTDOWN else []),
    pytest.param(SafeQueue, id="SafeQueue"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def make_queue(request: pytest.FixtureRequest) -> QueueFactory:
    factory: QueueFactory = request.param
    return factory


@pytest.fixture(params=SHUTDOWN_IMPLEMENTATIONS)
def make_shutdown_queue(request: pytest.FixtureRequest) -> ShutdownQueueFactory:
    factory: ShutdownQueueFactory = request.param
    return factory


# -- helpers: threads that must end, calls that must block -----------------------


class Trigger:
    """The moment the unblocking action of a blocking test fires."""

    def __init__(self) -> None:
        self._fired = threading.Event()
        self.fired_at = 0.0

    def fire(self) -> None:
        self.fired_at = monotonic()
        self._fired.set()

    def has_fired(self) -> bool:
        return self._fired.is_set()


class ThreadCall(Generic[R]):
    """Run ``fn`` in its own thread and keep its result or exception.

    With ``trigger``, the call is one that must block until the trigger fires:
    ``result()`` fails if it returned before the trigger fired, and also if it
    returned only near its own timeout (WAIT): it was then not woken by the
    trigger, its timeout rescued it (a lost wake-up).
    """

    def __init__(self, fn: Callable[[], R], *, name: str, trigger: Trigger | None = None) -> None:
        self._fn = fn
        self._trigger = trigger
        self._value: list[R] = []
        self._error: BaseException | None = None
        self.ended_before_trigger = False
        self.ended_at = 0.0
        self.done = threading.Event()
        # Daemon: a deadlocked call must not keep the test process alive.
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ThreadCall[R]:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self._value.append(self._fn())
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc
        finally:
            self.ended_at = monotonic()
            if self._trigger is not None and not self._trigger.has_fired():
                self.ended_before_trigger = True
            self.done.set()

    def result(self, timeout: float = WAIT) -> R:
        """Join the thread (at most ``timeout`` s); return or raise what the call did."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} still running after {timeout} s"
        assert not self.ended_before_trigger, (
            f"{self.thread.name} returned before the trigger fired: it did not block"
        )
        if self._trigger is not None:
            late = self.ended_at - self._trigger.fired_at
            assert late < WAIT / 2, (
                f"{self.thread.name} returned {late:.1f} s after the trigger: not woken by it"
            )
        if self._error is not None:
            raise self._error
        return self._value[0]


def promptly(call: Callable[[], R]) -> R:
    """Make a blocking call that has a WAIT timeout; fail if it needed most of it.

    No thread in these tests waits long for another, so a call that returns
    only near its own timeout was not woken when it should have been (a lost
    wake-up) and its timeout rescued it.
    """
    start = monotonic()
    try:
        return call()
    finally:
        waited = monotonic() - start
        assert waited < WAIT / 2, f"a call waited {waited:.1f} s: a lost wake-up?"


def run_in_thread(fn: Callable[[], R], timeout: float = WAIT) -> R:
    """Call ``fn`` in a thread and wait at most ``timeout`` s for it (for untimed calls)."""
    return ThreadCall(fn, name="run_in_thread").start().result(timeout)


def start_threads(fns: Sequence[Callable[[], R]], prefix: str) -> list[ThreadCall[R]]:
    return [ThreadCall(fn, name=f"{prefix}_{n}").start() for n, fn in enumerate(fns)]


def results_of(calls: Sequence[ThreadCall[R]]) -> list[R]:
    """Join every call (each within WAIT), then return their results in order.

    All threads are joined before the first error is raised, so no thread
    outlives a failing test.
    """
    for call in calls:
        call.thread.join(WAIT)
    return [call.result(timeout=0) for call in calls]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` s."""
    deadline = monotonic() + timeout
    while not predicate():
        assert monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.001)


def waiting_threads(q: SafeQueue[Any], waiting: Waiting) -> int:
    stats = q.stats()
    return stats.getters_waiting if waiting == "get" else stats.putters_waiting


def wait_until_blocked(
    q: QueueLike[Any], calls: Sequence[ThreadCall[Any]], waiting: Waiting
) -> None:
    """Return once every call is blocked in ``q``; fail at once if one returned instead."""

    def returned() -> list[str]:
        return [call.thread.name for call in calls if call.done.is_set()]

    if isinstance(q, SafeQueue) and waiting != "other":
        deadline = monotonic() + WAIT
        while waiting_threads(q, waiting) < len(calls):
            assert not returned(), f"returned without blocking: {returned()}"
            assert monotonic() < deadline, f"the calls did not block within {WAIT} s"
            time.sleep(0.001)
        assert waiting_threads(q, waiting) == len(calls)
    else:
        time.sleep(TRIGGER_DELAY)  # CPython's head start: the call cannot be observed
    assert not returned(), f"returned without blocking: {returned()}"


def start_blocked(
    q: QueueLike[Any],
    fns: Sequence[Callable[[], R]],
    trigger: Callable[[], object],
    waiting: Waiting,
) -> list[ThreadCall[R]]:
    """Start every call, wait until all are blocked, then run ``trigger``.

    ``waiting`` says what the calls block in: ``"get"`` and ``"put"`` are
    observed through SafeQueue's counters, ``"other"`` (join, a condition)
    gets the head start. Call ``result()`` on each returned call.
    """
    fired = Trigger()
    calls = [ThreadCall(fn, name=f"blocked_{n}", trigger=fired).start() for n, fn in enumerate(fns)]
    try:
        wait_until_blocked(q, calls, waiting)
    except BaseException:
        fired.fire()
        trigger()
        for call in calls:
            call.thread.join(WAIT)
        raise
    fired.fire()
    trigger()
    return calls


def do_blocking_test(
    q: QueueLike[Any], fn: Callable[[], R], trigger: Callable[[], object], waiting: Waiting
) -> R:
    """Check that ``fn`` blocks until ``trigger`` runs; return (or raise) what ``fn`` did."""
    return start_blocked(q, [fn], trigger, waiting=waiting)[0].result()


# -- subclasses written for queue.Queue, and the same for SafeQueue --------------


class LifoStdQueue(queue.Queue[Any]):
    """queue.LifoQueue's recipe: override the four hooks."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.pop()


class LifoSafeQueue(SafeQueue[Any]):
    """The same recipe, unchanged, on SafeQueue."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.pop()


class HookFailedError(Exception):
    pass


class FailingStdQueue(queue.Queue[Any]):
    """CPython's FailingQueue: a hook that raises when told to."""

    fail_next_put = False
    fail_next_get = False

    def _put(self, item: Any) -> None:
        if self.fail_next_put:
            self.fail_next_put = False
            raise HookFailedError
        super()._put(item)

    def _get(self) -> Any:
        if self.fail_next_get:
            self.fail_next_get = False
            raise HookFailedError
        return super()._get()


class FailingSafeQueue(SafeQueue[Any]):
    fail_next_put = False
    fail_next_get = False

    def _put(self, item: Any) -> None:
        if self.fail_next_put:
            self.fail_next_put = False
            raise HookFailedError
        super()._put(item)

    def _get(self) -> Any:
        if self.fail_next_get:
            self.fail_next_get = False
            raise HookFailedError
        return super()._get()


# -- exceptions -------------------------------------------------------------------


def test_empty_and_full_are_the_standard_librarys_exceptions() -> None:
    assert pipeline.Empty is queue.Empty
    assert pipeline.Full is queue.Full


def test_shutdown_is_queue_shutdown_where_the_standard_library_has_one() -> None:
    stdlib_shutdown = getattr(queue, "ShutDown", None)
    if HAS_STDLIB_SHUTDOWN:
        assert pipeline.ShutDown is stdlib_shutdown
    else:
        assert stdlib_shutdown is None
        assert issubclass(pipeline.ShutDown, Exception)
        assert not issubclass(pipeline.ShutDown, (queue.Empty, queue.Full))


# -- order, size, bounds -------------------------------------------------------------


def test_items_come_out_in_the_order_they_were_put(make_queue: QueueFactory) -> None:
    q = make_queue(QUEUE_SIZE)
    for item in (111, 333, 222):
        q.put(item)
    assert [q.get(timeout=WAIT) for _ in range(3)] == [111, 333, 222]
    q.put_nowait("x")
    q.put("y", timeout=WAIT)
    assert [q.get_nowait(), q.get(block=False)] == ["x", "y"]


def test_qsize_empty_and_full_follow_the_contents(make_queue: QueueFactory) -> None:
    q = make_queue(3)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    q.put_nowait("a")
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)
    q.put_nowait("b")
    q.put_nowait("c")
    assert (q.qsize(), q.empty(), q.full()) == (3, False, True)
    q.get_nowait()
    assert (q.qsize(), q.empty(), q.full()) == (2, False, False)


@pytest.mark.parametrize("maxsize", [0, -1])
def test_maxsize_zero_or_negative_means_unbounded(make_queue: QueueFactory, maxsize: int) -> None:
    q = make_queue(maxsize)
    for i in range(1000):
        q.put_nowait(i)
    q.put(1000, timeout=0)
    assert q.qsize() == 1001
    assert not q.full()
    assert q.maxsize == maxsize


def test_a_shrunk_maxsize_is_honoured(make_queue: QueueFactory) -> None:
    # CPython issue 10110: maxsize may be lowered on a live queue.
    q = make_queue(3)
    for item in (1, 2, 3):
        q.put_nowait(item)
    q.maxsize = 2
    with pytest.raises(queue.Full):
        q.put_nowait(4)
    assert q.full()
    q.get_nowait()
    with pytest.raises(queue.Full):
        q.put_nowait(4)
    q.get_nowait()
    q.put_nowait(4)
    assert list(q.queue) == [3, 4]


# -- Full and Empty -----------------------------------------------------------------


def test_put_nowait_on_a_full_queue_raises_full(make_queue: QueueFactory) -> None:
    q = make_queue(QUEUE_SIZE)
    for _ in range(QUEUE_SIZE):
        q.put_nowait(1)
    with pytest.raises(queue.Full):
        q.put_nowait(1)
    assert q.qsize() == QUEUE_SIZE


def test_get_nowait_on_an_empty_queue_raises_empty(make_queue: QueueFactory) -> None:
    q = make_queue(QUEUE_SIZE)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait(1)
    assert q.get_nowait() == 1
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_put_without_blocking_raises_full_at_once_ignoring_the_timeout(
    make_queue: QueueFactory,
) -> None:
    q = make_queue(1)
    q.put_nowait("a")
    start = monotonic()
    with pytest.raises(queue.Full):
        q.put("b", block=False, timeout=WAIT)
    assert monotonic() - start < WAIT / 2


def test_get_without_blocking_raises_empty_at_once_ignoring_the_timeout(
    make_queue: QueueFactory,
) -> None:
    q = make_queue()
    start = monotonic()
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=WAIT)
    assert monotonic() - start < WAIT / 2


def test_put_with_a_timeout_raises_full_once_the_timeout_has_passed(
    make_queue: QueueFactory,
) -> None:
    q = make_queue(1)
    q.put_nowait("a")
    start = monotonic()
    with pytest.raises(queue.Full):
        q.put("b", timeout=SHORT)
    assert monotonic() - start >= SHORT
    assert list(q.queue) == ["a"]


def test_get_with_a_timeout_raises_empty_once_the_timeout_has_passed(
    make_queue: QueueFactory,
) -> None:
    q = make_queue()
    start = monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=SHORT)
    assert monotonic() - start >= SHORT


def test_put_with_timeout_zero_puts_if_there_is_room_else_raises_full(
    make_queue: QueueFactory,
) -> None:
    q = make_queue(1)
    q.put("a", timeout=0)
    with pytest.raises(queue.Full):
        q.put("b", timeout=0)
    assert list(q.queue) == ["a"]


def test_get_with_timeout_zero_gets_if_there_is_an_item_else_raises_empty(
    make_queue: QueueFactory,
) -> None:
    q = make_queue()
    q.put_nowait("a")
    assert q.get(timeout=0) == "a"
    with pytest.raises(queue.Empty):
        q.get(timeout=0)


# -- negative timeouts: a ValueError exactly where queue.Queue raises one -----------


@pytest.mark.parametrize("filled", [0, 1, 2])
def test_put_with_a_negative_timeout_raises_value_error_on_a_bounded_queue(
    make_queue: QueueFactory, filled: int
) -> None:
    q = make_queue(2)
    for i in range(filled):
        q.put_nowait(i)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put("new", timeout=-1)
    assert list(q.queue) == list(range(filled))
    assert q.unfinished_tasks == filled


@pytest.mark.parametrize("maxsize", [0, -1])
def test_put_with_a_negative_timeout_is_accepted_on_an_unbounded_queue(
    make_queue: QueueFactory, maxsize: int
) -> None:
    q = make_queue(maxsize)
    q.put("new", timeout=-1)
    assert list(q.queue) == ["new"]


def test_put_without_blocking_ignores_a_negative_timeout(make_queue: QueueFactory) -> None:
    q = make_queue(1)
    q.put("a", block=False, timeout=-1)
    with pytest.raises(queue.Full):
        q.put("b", block=False, timeout=-1)
    assert list(q.queue) == ["a"]


@pytest.mark.parametrize("filled", [0, 1])
def test_get_with_a_negative_timeout_raises_value_error_when_blocking(
    make_queue: QueueFactory, filled: int
) -> None:
    q = make_queue()
    for i in range(filled):
        q.put_nowait(i)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)
    assert q.qsize() == filled  # nothing was taken


def test_get_without_blocking_ignores_a_negative_timeout(make_queue: QueueFactory) -> None:
    q = make_queue()
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=-1)
    q.put_nowait("a")
    assert q.get(block=False, timeout=-1) == "a"


Outcome = tuple[tuple[str, object], list[Any], int]


def _outcome(q: QueueLike[Any], call: Callable[[QueueLike[Any]], object]) -> Outcome:
    try:
        result: tuple[str, object] = ("returned", call(q))
    except (queue.Empty, queue.Full, ShutDown, ValueError) as exc:
        result = ("raised", type(exc).__name__)
    return result, list(q.queue), q.unfinished_tasks


SHUT_STATES = ["open", "graceful", "immediate"] if HAS_STDLIB_SHUTDOWN else ["open"]


@pytest.mark.parametrize("state", SHUT_STATES)
@pytest.mark.parametrize("method", ["put", "get"])
def test_every_block_and_timeout_combination_behaves_as_queue_queue(
    method: str, state: str
) -> None:
    # Compare the two directly: bounded and unbounded, empty, part-filled and
    # full, block true and false, timeout None, 0 and negative. Combinations
    # that would block forever are left out (the blocking tests cover them).
    mismatches = []
    for maxsize, filled, block, timeout in product((0, 2), (0, 1, 2), (True, False), (None, 0, -1)):
        bounded_and_full = 0 < maxsize <= filled
        blocks_forever = (method == "put" and bounded_and_full) or (method == "get" and not filled)
        if state == "open" and block and timeout is None and blocks_forever:
            continue

        def call(q: QueueLike[Any], block: bool = block, timeout: float | None = timeout) -> object:
            if method == "put":
                q.put("new", block, timeout)
                return None
            return q.get(block, timeout)

        outcomes = []
        for factory in (queue.Queue, SafeQueue):
            q: Any = factory(maxsize)
            for i in range(filled):
                q.put_nowait(i)
            if state != "open":
                q.shutdown(immediate=state == "immediate")
            outcomes.append(_outcome(q, call))
        if outcomes[0] != outcomes[1]:
            case = f"maxsize={maxsize} filled={filled} block={block} timeout={timeout}"
            mismatches.append(f"{case}: queue.Queue {outcomes[0]} != SafeQueue {outcomes[1]}")
    assert not mismatches, "\n".join(mismatches)


# -- blocking -----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, WAIT])
def test_get_blocks_until_an_item_is_put(make_queue: QueueFactory, timeout: float | None) -> None:
    q = make_queue(QUEUE_SIZE)
    got = do_blocking_test(q, lambda: q.get(True, timeout), lambda: q.put("item"), waiting="get")
    assert got == "item"
    assert q.empty()


@pytest.mark.parametrize("timeout", [None, WAIT])
def test_put_blocks_until_a_slot_is_freed(make_queue: QueueFactory, timeout: float | None) -> None:
    q = make_queue(2)
    q.put_nowait("a")
    q.put_nowait("b")
    taken: list[Any] = []
    do_blocking_test(
        q, lambda: q.put("c", True, timeout), lambda: taken.append(q.get_nowait()), waiting="put"
    )
    assert taken == ["a"]
    assert list(q.queue) == ["b", "c"]


def test_each_put_wakes_one_blocked_getter(make_queue: QueueFactory) -> None:
    q = make_queue()

    def put_three() -> None:
        for item in ("x", "y", "z"):
            q.put(item)

    getters = start_blocked(q, [lambda: q.get(timeout=WAIT)] * 3, put_three, waiting="get")
    assert sorted(call.result() for call in getters) == ["x", "y", "z"]


def test_each_get_wakes_one_blocked_putter(make_queue: QueueFactory) -> None:
    q = make_queue(1)
    q.put_nowait("first")
    got: list[Any] = []

    def get_four() -> None:
        for _ in range(4):
            got.append(q.get(timeout=WAIT))

    putters = start_blocked(
        q, [partial(q.put, n, timeout=WAIT) for n in range(3)], get_four, waiting="put"
    )
    results_of(putters)
    assert got[0] == "first"
    assert sorted(got[1:]) == [0, 1, 2]


# -- task_done and join ---------------------------------------------------------------


def test_task_done_on_a_fresh_queue_raises_value_error(make_queue: QueueFactory) -> None:
    q = make_queue()
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()


def test_task_done_more_times_than_items_put_raises_value_error(make_queue: QueueFactory) -> None:
    q = make_queue()
    q.put_nowait(1)
    q.put_nowait(2)
    q.get_nowait()
    q.get_nowait()
    q.task_done()
    q.task_done()
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()
    assert q.unfinished_tasks == 0


def test_join_returns_at_once_when_no_task_is_unfinished(make_queue: QueueFactory) -> None:
    q = make_queue()
    run_in_thread(q.join)
    q.put_nowait(1)
    q.get_nowait()
    q.task_done()
    run_in_thread(q.join)


def test_join_blocks_until_every_item_is_marked_done(make_queue: QueueFactory) -> None:
    q = make_queue()
    q.put_nowait(1)
    q.put_nowait(2)
    q.get_nowait()
    q.get_nowait()
    q.task_done()
    assert q.unfinished_tasks == 1
    do_blocking_test(q, q.join, q.task_done, waiting="other")
    assert q.unfinished_tasks == 0


def test_the_stdlib_worker_pattern_with_task_done_and_join_works(make_queue: QueueFactory) -> None:
    # CPython's queue_join_test, done twice on the same queue.
    q = make_queue()
    lock = threading.Lock()
    total = [0]

    def worker() -> None:
        while True:
            x = promptly(lambda: q.get(timeout=WAIT))
            if x < 0:
                q.task_done()
                return
            with lock:
                total[0] += x
            q.task_done()

    for _ in range(2):
        total[0] = 0
        workers = start_threads([worker, worker], "worker")
        for i in range(100):
            q.put(i)
        run_in_thread(q.join)
        assert total[0] == sum(range(100)), "join() returned before every task was done"
        for _ in workers:
            q.put(-1)
        run_in_thread(q.join)  # joining twice is fine
        results_of(workers)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()


def test_the_join_with_a_timeout_recipe_works(make_queue: QueueFactory) -> None:
    # A common recipe for a join() with a timeout: wait on all_tasks_done directly.
    q = make_queue()

    def join_within(timeout: float) -> bool:
        deadline = monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(remaining)
        return True

    q.put_nowait("job")
    assert not join_within(SHORT)
    q.get_nowait()
    assert do_blocking_test(q, lambda: join_within(WAIT), q.task_done, waiting="other")


# -- code written for queue.Queue ------------------------------------------------------


def test_clearing_under_the_mutex_empties_the_queue(make_queue: QueueFactory) -> None:
    q = make_queue(3)
    for item in (1, 2, 3):
        q.put_nowait(item)
    with q.mutex:
        q.queue.clear()
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    assert q.unfinished_tasks == 3  # clearing by hand does not mark tasks done
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait(4)
    assert q.get_nowait() == 4


def test_a_thread_waiting_on_not_empty_is_woken_by_put(make_queue: QueueFactory) -> None:
    # A "peek" recipe written for queue.Queue: wait on the not_empty condition
    # (which put() notifies) and look at the head without taking it.
    q = make_queue()

    def peek(timeout: float) -> tuple[bool, Any]:
        # Returns whether a notify() woke it, and the head item.
        deadline = monotonic() + timeout
        notified = False
        with q.not_empty:
            while not q.queue:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                notified = q.not_empty.wait(remaining)
            return notified, q.queue[0] if q.queue else None

    assert do_blocking_test(q, lambda: peek(2.0), lambda: q.put("head"), waiting="other") == (
        True,
        "head",
    ), "put() did not notify not_empty"
    assert q.get_nowait() == "head"


@pytest.mark.parametrize(
    "lifo",
    [pytest.param(LifoStdQueue, id="queue.Queue"), pytest.param(LifoSafeQueue, id="SafeQueue")],
)
def test_overriding_the_hooks_makes_a_lifo_queue(lifo: QueueFactory) -> None:
    q = lifo(3)
    for item in (111, 333, 222):
        q.put(item, timeout=WAIT)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(0)
    assert [q.get(timeout=WAIT) for _ in range(3)] == [222, 333, 111]
    assert q.empty()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert isinstance(q.queue, list)


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(FailingStdQueue, id="queue.Queue"),
        pytest.param(FailingSafeQueue, id="SafeQueue"),
    ],
)
def test_a_failing_hook_propagates_and_leaves_the_queue_intact(failing: type[Any]) -> None:
    q = failing(QUEUE_SIZE)
    for i in range(QUEUE_SIZE - 1):
        q.put(i)
    q.fail_next_put = True
    with pytest.raises(HookFailedError):
        q.put("oops", block=False)
    q.fail_next_put = True
    with pytest.raises(HookFailedError):
        q.put("oops", timeout=SHORT)
    assert q.qsize() == QUEUE_SIZE - 1
    assert q.unfinished_tasks == QUEUE_SIZE - 1
    q.put("last")
    assert q.full()
    q.fail_next_get = True
    with pytest.raises(HookFailedError):
        q.get()
    q.fail_next_get = True
    with pytest.raises(HookFailedError):
        q.get(timeout=SHORT)
    assert q.qsize() == QUEUE_SIZE
    assert [q.get_nowait() for _ in range(QUEUE_SIZE)] == [*range(QUEUE_SIZE - 1), "last"]


def test_a_gotten_item_is_no_longer_referenced_by_the_queue(make_queue: QueueFactory) -> None:
    class Item:
        pass

    q = make_queue()
    q.put_nowait(Item())
    ref = weakref.ref(q.get_nowait())
    gc.collect()
    assert ref() is None


# -- many threads ---------------------------------------------------------------------


@pytest.mark.parametrize("consume_with", ["get", "get-with-timeout-loop"])
@pytest.mark.parametrize("maxsize", [0, 1, 8])
def test_many_producers_and_consumers_deliver_every_item_exactly_once(
    make_queue: QueueFactory, maxsize: int, consume_with: str
) -> None:
    n_producers, n_consumers, per_producer = 4, 3, 400
    q = make_queue(maxsize)
    done = None  # one per consumer, after the producers finished

    def produce(p: int) -> None:
        for i in range(per_producer):
            promptly(partial(q.put, p * per_producer + i, timeout=WAIT))

    def take() -> Any:
        if consume_with == "get":
            return promptly(lambda: q.get(timeout=WAIT))
        deadline = monotonic() + WAIT
        while True:
            try:
                return q.get(timeout=1e-4)
            except queue.Empty:
                assert monotonic() < deadline

    def consume() -> list[int]:
        received = []
        while (item := take()) is not done:
            received.append(item)
        return received

    consumers = start_threads([consume] * n_consumers, "consumer")
    producers = start_threads([partial(produce, p) for p in range(n_producers)], "producer")
    results_of(producers)
    for _ in range(n_consumers):
        q.put(done, timeout=WAIT)
    received = results_of(consumers)

    sent = list(range(n_producers * per_producer))
    everything = [item for chunk in received for item in chunk]
    assert sum(everything) == sum(sent)
    assert Counter(everything) == Counter(sent)
    for chunk in received:  # FIFO: a consumer sees each producer's items in order
        for p in range(n_producers):
            mine = [item for item in chunk if item // per_producer == p]
            assert mine == sorted(mine)
    assert q.empty()


# -- shutdown: graceful ----------------------------------------------------------------


def test_shutdown_sets_is_shutdown(make_shutdown_queue: ShutdownQueueFactory) -> None:
    q = make_shutdown_queue()
    assert not q.is_shutdown
    q.shutdown()
    assert q.is_shutdown


@pytest.mark.parametrize("immediate", [False, True])
def test_every_put_after_shutdown_raises_shutdown(
    make_shutdown_queue: ShutdownQueueFactory, immediate: bool
) -> None:
    q = make_shutdown_queue(2)
    q.put_nowait("a")
    q.shutdown(immediate=immediate)
    puts: list[Callable[[], None]] = [
        lambda: q.put("x"),
        lambda: q.put_nowait("x"),
        lambda: q.put("x", timeout=WAIT),
        lambda: q.put("x", timeout=0),
        lambda: q.put("x", block=False),
        lambda: q.put("x", timeout=-1),  # ShutDown is checked before the timeout
    ]
    for put in puts:
        with pytest.raises(ShutDown):
            run_in_thread(put)
    assert list(q.queue) == ([] if immediate else ["a"])


def test_put_on_a_full_shut_down_queue_raises_shutdown_not_full(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue(1)
    q.put_nowait("a")
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put_nowait("b")
    with pytest.raises(ShutDown):
        q.put("b", timeout=0)


def test_get_after_graceful_shutdown_returns_the_remaining_items_then_raises_shutdown(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue(3)
    for item in ("L", "O", "Y"):
        q.put_nowait(item)
    q.shutdown()
    assert q.get(timeout=WAIT) == "L"
    assert q.get_nowait() == "O"
    assert run_in_thread(q.get) == "Y"
    for _ in range(3):
        q.task_done()
    run_in_thread(q.join)
    gets: list[Callable[[], Any]] = [
        q.get,
        q.get_nowait,
        lambda: q.get(timeout=WAIT),
        lambda: q.get(True, 1.0),
        lambda: q.get(timeout=0),
        lambda: q.get(timeout=-1),  # ShutDown is checked before the timeout
    ]
    for get in gets:
        with pytest.raises(ShutDown):
            run_in_thread(get)


@pytest.mark.parametrize("timeout", [None, WAIT])
def test_graceful_shutdown_wakes_a_blocked_getter_with_shutdown(
    make_shutdown_queue: ShutdownQueueFactory, timeout: float | None
) -> None:
    q = make_shutdown_queue()
    with pytest.raises(ShutDown):
        do_blocking_test(q, lambda: q.get(True, timeout), q.shutdown, waiting="get")


def test_graceful_shutdown_wakes_every_blocked_getter(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    getters = start_blocked(q, [q.get, lambda: q.get(timeout=WAIT)] * 2, q.shutdown, waiting="get")
    for getter in getters:
        with pytest.raises(ShutDown):
            getter.result()


@pytest.mark.parametrize("timeout", [None, WAIT])
def test_graceful_shutdown_wakes_a_blocked_putter_with_shutdown(
    make_shutdown_queue: ShutdownQueueFactory, timeout: float | None
) -> None:
    q = make_shutdown_queue(2)
    q.put_nowait("a")
    q.put_nowait("b")
    with pytest.raises(ShutDown):
        do_blocking_test(q, lambda: q.put("c", True, timeout), q.shutdown, waiting="put")
    assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_graceful_shutdown_wakes_every_blocked_putter(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue(1)
    q.put_nowait("a")
    putters = start_blocked(
        q, [lambda: q.put("x"), lambda: q.put("y", timeout=WAIT)] * 2, q.shutdown, waiting="put"
    )
    for putter in putters:
        with pytest.raises(ShutDown):
            putter.result()
    assert list(q.queue) == ["a"]


def test_graceful_shutdown_leaves_join_waiting_for_the_tasks(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    q.put_nowait("task")
    joiner = ThreadCall(q.join, name="joiner").start()
    q.shutdown()
    joiner.thread.join(TRIGGER_DELAY)
    assert joiner.thread.is_alive(), "graceful shutdown released join() with a task unfinished"
    assert q.get_nowait() == "task"
    q.task_done()
    joiner.result()


def test_a_blocked_join_returns_once_the_remaining_items_are_done_after_graceful_shutdown(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    # CPython's test_shutdown_get_task_done_join, made deterministic.
    q = make_shutdown_queue(2)
    q.put_nowait("Y")
    q.put_nowait("D")

    def finish_the_tasks() -> None:
        q.shutdown()
        for _ in range(2):
            q.get_nowait()
            q.task_done()

    joiners = start_blocked(q, [q.join, q.join], finish_the_tasks, waiting="other")
    results_of(joiners)
    assert q.unfinished_tasks == 0


# -- shutdown: immediate -----------------------------------------------------------------


def test_immediate_shutdown_discards_the_items_and_gets_raise_at_once(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue(3)
    for item in (1, 2, 3):
        q.put_nowait(item)
    q.shutdown(immediate=True)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    with pytest.raises(ShutDown):
        q.get_nowait()
    with pytest.raises(ShutDown):  # ShutDown, not Empty after WAIT
        q.get(timeout=WAIT)
    with pytest.raises(ShutDown):
        run_in_thread(q.get)


def test_immediate_shutdown_marks_the_discarded_items_done(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    for item in (1, 2, 3):
        q.put_nowait(item)
    assert q.get_nowait() == 1  # taken but not yet done: still unfinished
    q.shutdown(immediate=True)
    assert q.unfinished_tasks == 1
    q.task_done()
    run_in_thread(q.join)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()


def test_immediate_shutdown_releases_every_blocked_join(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    q.put_nowait("Y")
    joiners = start_blocked(
        q, [q.join, q.join], lambda: q.shutdown(immediate=True), waiting="other"
    )
    results_of(joiners)
    assert q.unfinished_tasks == 0


def test_immediate_shutdown_wakes_every_blocked_getter(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    getters = start_blocked(
        q,
        [q.get, lambda: q.get(timeout=WAIT)] * 2,
        lambda: q.shutdown(immediate=True),
        waiting="get",
    )
    for getter in getters:
        with pytest.raises(ShutDown):
            getter.result()


def test_immediate_shutdown_wakes_every_blocked_putter(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue(2)
    q.put_nowait("a")
    q.put_nowait("b")
    putters = start_blocked(
        q,
        [lambda: q.put("x"), lambda: q.put("y", timeout=WAIT)] * 2,
        lambda: q.shutdown(immediate=True),
        waiting="put",
    )
    for putter in putters:
        with pytest.raises(ShutDown):
            putter.result()
    assert q.empty()
    assert q.unfinished_tasks == 0


def test_immediate_shutdown_lets_go_of_the_discarded_items(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    class Item:
        pass

    q = make_shutdown_queue()
    q.put_nowait(Item())
    ref = weakref.ref(q.queue[0])
    q.shutdown(immediate=True)
    gc.collect()
    assert ref() is None


# -- shutdown: transitions -------------------------------------------------------------


def test_graceful_shutdown_twice_is_harmless(make_shutdown_queue: ShutdownQueueFactory) -> None:
    q = make_shutdown_queue()
    q.put_nowait("a")
    q.shutdown()
    q.shutdown()
    assert q.is_shutdown
    assert q.get_nowait() == "a"
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_immediate_shutdown_twice_is_harmless(make_shutdown_queue: ShutdownQueueFactory) -> None:
    q = make_shutdown_queue()
    q.put_nowait("a")
    q.shutdown(immediate=True)
    q.shutdown(immediate=True)
    assert q.is_shutdown
    assert q.unfinished_tasks == 0
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_immediate_shutdown_after_graceful_discards_what_was_left(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    for item in (1, 2, 3):
        q.put_nowait(item)
    q.shutdown()
    assert q.get_nowait() == 1
    q.shutdown(immediate=True)
    assert q.empty()
    assert q.unfinished_tasks == 1  # the item taken before is still unfinished
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_graceful_shutdown_after_immediate_changes_nothing(
    make_shutdown_queue: ShutdownQueueFactory,
) -> None:
    q = make_shutdown_queue()
    q.put_nowait(1)
    q.shutdown(immediate=True)
    q.shutdown(immediate=False)
    assert q.is_shutdown
    assert q.empty()
    with pytest.raises(ShutDown):
        q.get_nowait()
    with pytest.raises(ShutDown):
        q.put_nowait(2)


# -- shutdown: many threads ------------------------------------------------------------


@pytest.mark.parametrize("immediate", [False, True])
def test_shutdown_under_load_ends_every_producer_and_consumer(
    make_shutdown_queue: ShutdownQueueFactory, immediate: bool
) -> None:
    # Writers put until ShutDown, readers get until ShutDown; the queue is shut
    # down while both are busy. Each thread sees ShutDown once and ends.
    q = make_shutdown_queue(8)
    busy = threading.Event()

    def write(w: int) -> list[int]:
        sent: list[int] = []
        for i in range(1_000_000):
            try:
                promptly(partial(q.put, w * 1_000_000 + i, timeout=WAIT))
            except ShutDown:
                return sent
            sent.append(w * 1_000_000 + i)
        raise AssertionError("the queue never shut down")

    def read() -> list[int]:
        received = []
        while True:
            try:
                received.append(promptly(lambda: q.get(timeout=WAIT)))
            except ShutDown:
                return received
            if len(received) == 200:
                busy.set()

    readers = start_threads([read] * 4, "reader")
    writers = start_threads([partial(write, w) for w in range(4)], "writer")
    assert busy.wait(WAIT)
    q.shutdown(immediate=immediate)
    sent = Counter(item for chunk in results_of(writers) for item in chunk)
    received = Counter(item for chunk in results_of(readers) for item in chunk)

    assert q.empty()
    if immediate:
        assert not received - sent  # nothing invented or duplicated
        # Discarded items were marked done; the received ones were not.
        assert q.unfinished_tasks == received.total()
    else:
        assert received == sent  # a graceful shutdown loses nothing
