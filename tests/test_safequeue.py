"""What SafeQueue adds to queue.Queue.

Producer handles, ``put_many`` / ``get_many``, ``stats()``, iteration, the repr
and the ordered hand-off used by multi-worker ordered stages. The queue.Queue
contract itself is in ``test_safequeue_contract.py``, whose helpers prove that
a call blocked before the test unblocks it.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from time import monotonic
from typing import Any

import pytest

import pipeline
from pipeline import (
    Empty,
    Full,
    PipelineError,
    Producer,
    ProducerError,
    QueueStats,
    SafeQueue,
    ShutDown,
)
from tests.helpers import WAIT
from tests.test_safequeue_contract import (
    SHORT,
    HookFailedError,
    LifoSafeQueue,
    ThreadCall,
    Trigger,
    do_blocking_test,
    promptly,
    results_of,
    run_in_thread,
    start_blocked,
    start_threads,
    wait_for,
)


def test_maxsize_must_be_an_int() -> None:
    for maxsize in (2.0, "3", None, True):
        with pytest.raises(TypeError, match="'maxsize' must be an int"):
            SafeQueue(maxsize)  # type: ignore[arg-type]


# -- producer handles --------------------------------------------------------------


def test_closing_the_last_producer_shuts_the_queue_down_gracefully() -> None:
    q = SafeQueue[int]()
    a, b = q.producer(), q.producer()
    a.put(1)
    b.put(2)
    a.close()
    assert not q.stats().is_shutdown
    b.close()
    assert q.stats().is_shutdown
    assert [q.get_nowait(), q.get_nowait()] == [1, 2]  # graceful: the items stay
    with pytest.raises(ShutDown):
        q.get_nowait()


def test_every_consumer_sees_end_of_stream_once_after_the_last_item() -> None:
    n_producers, n_consumers, per_producer = 3, 4, 200
    q = SafeQueue[int](maxsize=4)
    handles = [q.producer() for _ in range(n_producers)]  # all taken before any starts

    def produce(p: int, handle: Producer[int]) -> None:
        with handle:
            for i in range(per_producer):
                promptly(partial(handle.put, p * per_producer + i, timeout=WAIT))

    def consume() -> tuple[list[int], QueueStats]:
        received = []
        while True:
            try:
                received.append(promptly(lambda: q.get(timeout=WAIT)))
            except ShutDown:
                return received, q.stats()

    consumers = start_threads([consume] * n_consumers, "consumer")
    producers = start_threads(
        [partial(produce, p, handle) for p, handle in enumerate(handles)], "producer"
    )
    results_of(producers)
    outcomes = results_of(consumers)

    assert len(outcomes) == n_consumers  # each consumer's loop ended on one ShutDown
    received = [item for chunk, _ in outcomes for item in chunk]
    assert Counter(received) == Counter(range(n_producers * per_producer))
    for _, at_the_end in outcomes:  # the end came after the last close and the last item
        assert at_the_end.is_shutdown
        assert at_the_end.producers == 0
        assert at_the_end.size == 0
        assert at_the_end.puts == n_producers * per_producer
    with pytest.raises(ShutDown):  # and it stays the end
        q.get(timeout=WAIT)


def test_a_single_consumer_gets_every_item_before_the_end_of_stream() -> None:
    q = SafeQueue[int](maxsize=2)
    handles = [q.producer() for _ in range(3)]

    def produce(p: int, handle: Producer[int]) -> None:
        with handle:
            handle.put_many(range(p * 50, p * 50 + 50), timeout=WAIT)

    producers = start_threads([partial(produce, p, h) for p, h in enumerate(handles)], "producer")
    received = run_in_thread(lambda: list(q))
    results_of(producers)
    assert sorted(received) == list(range(150))


def test_closing_a_handle_again_does_not_count_as_another_producer() -> None:
    q = SafeQueue[int]()
    a, b = q.producer(), q.producer()
    a.close()
    a.close()
    assert a.closed
    stats = q.stats()
    assert (stats.producers, stats.is_shutdown) == (1, False)
    b.close()
    b.close()
    stats = q.stats()
    assert (stats.producers, stats.is_shutdown) == (0, True)


@pytest.mark.parametrize("how", ["shutdown", "shutdown-immediate", "last-close"])
def test_producer_on_a_shut_down_queue_raises_producer_error(how: str) -> None:
    q = SafeQueue[int]()
    if how == "last-close":
        q.producer().close()
    else:
        q.shutdown(immediate=how == "shutdown-immediate")
    with pytest.raises(ProducerError, match="shut down"):
        q.producer()
    assert q.stats().producers == 0


def test_putting_through_a_closed_handle_raises_producer_error() -> None:
    q = SafeQueue[int]()
    keep_open = q.producer()
    closed = q.producer()
    closed.close()
    with pytest.raises(ProducerError, match="closed producer handle"):
        closed.put(1)
    with pytest.raises(ProducerError, match="closed producer handle"):
        closed.put_many([1, 2])
    assert q.empty()
    assert not q.is_shutdown  # the queue itself still takes items
    keep_open.put(3)
    assert q.get_nowait() == 3
    keep_open.close()


def test_producer_error_is_a_pipeline_error() -> None:
    assert issubclass(ProducerError, PipelineError)


def test_a_with_block_closes_the_handle_when_it_raises() -> None:
    q = SafeQueue[int]()
    p = q.producer()

    def produce_then_fail() -> None:
        with p:
            p.put(1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        produce_then_fail()
    assert p.closed
    assert q.is_shutdown
    assert q.get_nowait() == 1


def test_a_producer_puts_as_the_queue_does() -> None:
    q = SafeQueue[int](maxsize=2)
    with q.producer() as p:
        assert p.queue is q
        p.put(1)
        p.put_many([2])
        with pytest.raises(Full):
            p.put(3, block=False)
        with pytest.raises(Full):
            p.put(3, timeout=SHORT)
        with pytest.raises(Full):
            p.put_many([3], timeout=0)
    assert run_in_thread(lambda: list(q)) == [1, 2]


def test_closing_handles_after_an_explicit_shutdown_is_harmless() -> None:
    q = SafeQueue[int]()
    a, b = q.producer(), q.producer()
    q.shutdown()
    with pytest.raises(ShutDown):
        a.put(1)
    a.close()
    b.close()
    assert q.stats().producers == 0
    assert q.is_shutdown


# -- put_many ------------------------------------------------------------------------


def test_put_many_puts_the_items_in_order_and_counts_each() -> None:
    q = SafeQueue[int](maxsize=10)
    q.put_many([1, 2, 3])
    q.put_many((4, 5))
    assert list(q.queue) == [1, 2, 3, 4, 5]
    assert q.unfinished_tasks == 5
    assert q.stats().puts == 5


def test_put_many_takes_any_iterable() -> None:
    q = SafeQueue[int]()

    def generate() -> Iterator[int]:
        yield from (1, 2)

    q.put_many(generate())
    q.put_many(range(3, 5))
    q.put_many({5: "five"}.keys())
    assert list(q.queue) == [1, 2, 3, 4, 5]


def test_put_many_of_nothing_changes_nothing() -> None:
    q = SafeQueue[int](maxsize=1)
    q.put_nowait(0)
    q.put_many([], timeout=0)  # even on a full queue
    assert list(q.queue) == [0]
    assert q.stats().puts == 1


def test_put_many_larger_than_maxsize_completes_as_a_consumer_drains() -> None:
    q = SafeQueue[int](maxsize=2)
    drained: list[int] = []

    def drain() -> None:
        while len(drained) < 10:
            drained.extend(q.get_many(3, timeout=WAIT))

    do_blocking_test(q, lambda: q.put_many(range(10), timeout=WAIT), drain, waiting="put")
    assert drained == list(range(10))
    assert q.stats().peak_size == 2


def test_put_many_that_times_out_raises_full_with_the_earlier_items_in() -> None:
    q = SafeQueue[str](maxsize=3)
    q.put_nowait("x")
    with pytest.raises(Full):
        q.put_many(["a", "b", "c", "d"], timeout=SHORT)
    assert list(q.queue) == ["x", "a", "b"]
    assert q.unfinished_tasks == 3
    assert q.stats().puts == 3
    assert q.stats().put_blocked_seconds >= SHORT


def test_put_many_with_timeout_zero_puts_what_fits_without_waiting() -> None:
    q = SafeQueue[int](maxsize=2)
    start = monotonic()
    with pytest.raises(Full):
        q.put_many([1, 2, 3], timeout=0)
    assert monotonic() - start < WAIT / 2
    assert list(q.queue) == [1, 2]
    with pytest.raises(Full):
        q.put_many([4], timeout=0)


def test_put_many_that_times_out_after_some_room_appeared_keeps_what_it_put() -> None:
    q = SafeQueue[int](maxsize=1)
    taken: list[int] = []
    with pytest.raises(Full):
        do_blocking_test(
            q,
            lambda: q.put_many([0, 1, 2], timeout=SHORT * 10),
            lambda: taken.append(q.get(timeout=WAIT)),
            "put",
        )
    assert taken == [0]
    assert list(q.queue) == [1]
    assert q.unfinished_tasks == 2


@pytest.mark.parametrize("immediate", [False, True])
def test_put_many_on_a_shut_down_queue_raises_shutdown_and_puts_nothing(immediate: bool) -> None:
    q = SafeQueue[int]()
    q.put_nowait(0)
    q.shutdown(immediate=immediate)
    with pytest.raises(ShutDown):
        q.put_many([1, 2])
    with pytest.raises(ShutDown):
        q.put_many([])
    assert list(q.queue) == ([] if immediate else [0])
    assert q.stats().puts == 1


def test_put_many_cut_short_by_shutdown_leaves_the_earlier_items_in() -> None:
    q = SafeQueue[int](maxsize=2)
    with pytest.raises(ShutDown):
        do_blocking_test(q, lambda: q.put_many(range(5), timeout=WAIT), q.shutdown, "put")
    assert q.get_many(10, timeout=0) == [0, 1]
    with pytest.raises(ShutDown):
        q.get_many(10, timeout=0)


def test_put_many_with_a_negative_timeout_raises_value_error() -> None:
    q = SafeQueue[int]()
    with pytest.raises(ValueError, match="'timeout'"):
        q.put_many([1], timeout=-1)
    assert q.empty()


def test_put_many_wakes_as_many_blocked_getters_as_it_puts_items() -> None:
    q = SafeQueue[str]()
    getters = start_blocked(
        q, [lambda: q.get(timeout=WAIT)] * 3, lambda: q.put_many("xyz"), waiting="get"
    )
    assert sorted(results_of(getters)) == ["x", "y", "z"]


def test_put_many_uses_the_subclass_hooks() -> None:
    q = LifoSafeQueue(maxsize=3)
    with pytest.raises(Full):
        q.put_many([1, 2, 3, 4], timeout=0)
    assert q.queue == [1, 2, 3]
    assert [q.get_nowait() for _ in range(3)] == [3, 2, 1]


def test_put_many_counts_the_items_it_put_before_a_subclass_put_raises() -> None:
    # Like successive put() calls: every item that went in is an unfinished
    # task and a counted put, even though a later one failed.
    class FailsOnTwo(SafeQueue[int]):
        def _put(self, item: int) -> None:
            if item == 2:
                raise HookFailedError
            super()._put(item)

    q = FailsOnTwo()
    with pytest.raises(HookFailedError):
        q.put_many([1, 2, 3])
    assert list(q.queue) == [1]
    assert q.unfinished_tasks == 1
    assert q.stats().puts == 1
    assert q.get_nowait() == 1
    q.task_done()
    run_in_thread(q.join)


# -- get_many ------------------------------------------------------------------------


def test_get_many_returns_at_most_max_items_in_order() -> None:
    q = SafeQueue[int]()
    q.put_many(range(7))
    assert q.get_many(3, timeout=0) == [0, 1, 2]
    assert q.get_many(3, timeout=WAIT) == [3, 4, 5]
    assert q.get_many(3, timeout=WAIT) == [6]
    assert q.stats().gets == 7


def test_get_many_of_one_takes_a_single_item() -> None:
    q = SafeQueue[int]()
    q.put_many([1, 2])
    assert q.get_many(1, timeout=0) == [1]
    assert list(q.queue) == [2]


def test_get_many_blocks_until_an_item_arrives() -> None:
    q = SafeQueue[int]()
    got = do_blocking_test(q, lambda: q.get_many(5, timeout=WAIT), lambda: q.put(1), "get")
    assert got == [1]


def test_get_many_returns_a_lone_item_without_waiting_for_more() -> None:
    q = SafeQueue[int]()
    q.put(1)
    start = monotonic()
    assert q.get_many(10, timeout=WAIT) == [1]
    assert monotonic() - start < WAIT / 2  # it did not wait for the batch to fill
    # Nor when the item arrives while it waits: result() fails a call that
    # returned only near its own timeout.
    assert do_blocking_test(q, lambda: q.get_many(10, timeout=WAIT), lambda: q.put(2), "get") == [2]


def test_get_many_with_timeout_zero_does_not_wait() -> None:
    q = SafeQueue[int]()
    start = monotonic()
    with pytest.raises(Empty):
        q.get_many(5, timeout=0)
    assert monotonic() - start < WAIT / 2
    q.put(1)
    assert q.get_many(5, timeout=0) == [1]
    assert q.stats().getters_waiting == 0


def test_get_many_that_times_out_raises_empty() -> None:
    q = SafeQueue[int]()
    with pytest.raises(Empty):
        q.get_many(5, timeout=SHORT)
    assert q.stats().get_blocked_seconds >= SHORT


def test_get_many_after_graceful_shutdown_drains_then_raises_shutdown() -> None:
    q = SafeQueue[int]()
    q.put_many(range(5))
    q.shutdown()
    assert q.get_many(3, timeout=WAIT) == [0, 1, 2]
    assert run_in_thread(lambda: q.get_many(3)) == [3, 4]
    for call in (lambda: q.get_many(3), lambda: q.get_many(3, timeout=0)):
        with pytest.raises(ShutDown):
            run_in_thread(call)


def test_get_many_after_immediate_shutdown_raises_shutdown() -> None:
    q = SafeQueue[int]()
    q.put_many(range(5))
    q.shutdown(immediate=True)
    with pytest.raises(ShutDown):
        run_in_thread(lambda: q.get_many(3))


@pytest.mark.parametrize("immediate", [False, True])
@pytest.mark.parametrize("timeout", [None, WAIT])
def test_shutdown_wakes_a_blocked_get_many_with_shutdown(
    immediate: bool, timeout: float | None
) -> None:
    q = SafeQueue[int]()
    with pytest.raises(ShutDown):
        do_blocking_test(
            q, lambda: q.get_many(4, timeout), lambda: q.shutdown(immediate=immediate), "get"
        )


@pytest.mark.parametrize("max_items", ["3", 2.0, None, True, False])
def test_get_many_rejects_a_max_items_that_is_not_an_int(max_items: Any) -> None:
    q = SafeQueue[int]()
    q.put(1)
    with pytest.raises(TypeError, match="'max_items' must be an int"):
        q.get_many(max_items)
    assert list(q.queue) == [1]


@pytest.mark.parametrize("max_items", [0, -1])
def test_get_many_rejects_max_items_below_one(max_items: int) -> None:
    q = SafeQueue[int]()
    q.put(1)
    with pytest.raises(ValueError, match="'max_items' must be at least 1"):
        q.get_many(max_items)
    assert list(q.queue) == [1]


def test_get_many_rejects_a_negative_timeout() -> None:
    q = SafeQueue[int]()
    q.put(1)
    with pytest.raises(ValueError, match="'timeout'"):
        q.get_many(1, timeout=-1)
    assert list(q.queue) == [1]


def test_get_many_checks_its_arguments_before_the_shutdown() -> None:
    q = SafeQueue[int]()
    q.shutdown()
    with pytest.raises(ValueError, match="'max_items'"):
        q.get_many(0)


def test_get_many_wakes_as_many_blocked_putters_as_it_takes_items() -> None:
    q = SafeQueue[str](maxsize=3)
    q.put_many("abc")
    taken: list[str] = []
    putters = start_blocked(
        q,
        [partial(q.put, item, timeout=WAIT) for item in "xyz"],
        lambda: taken.extend(q.get_many(3, timeout=0)),
        waiting="put",
    )
    results_of(putters)
    assert taken == ["a", "b", "c"]
    assert sorted(q.queue) == ["x", "y", "z"]


def test_get_many_uses_the_subclass_hooks() -> None:
    q = LifoSafeQueue()
    q.put_many([1, 2, 3, 4])
    assert q.get_many(3, timeout=0) == [4, 3, 2]
    assert q.get_many(3, timeout=0) == [1]


def test_get_many_lets_go_of_the_items_it_returns() -> None:
    class Item:
        pass

    q = SafeQueue[Item]()
    q.put_many([Item(), Item()])
    refs = [weakref.ref(item) for item in q.get_many(2, timeout=0)]
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_get_many_keeps_gets_plus_size_equal_to_puts_when_a_subclass_get_raises() -> None:
    class SecondGetFails(SafeQueue[int]):
        calls = 0

        def _get(self) -> int:
            self.calls += 1
            if self.calls == 2:
                raise HookFailedError
            return super()._get()

    q = SecondGetFails()
    q.put_many([1, 2, 3])
    with pytest.raises(HookFailedError):
        q.get_many(3, timeout=0)
    stats = q.stats()
    # Every item put is either still in the queue or counted as taken.
    assert stats.gets + stats.size == stats.puts


# -- stats -----------------------------------------------------------------------------


def test_stats_of_a_new_queue() -> None:
    assert SafeQueue[int](maxsize=4).stats() == QueueStats(
        size=0,
        maxsize=4,
        peak_size=0,
        puts=0,
        gets=0,
        discarded=0,
        producers=0,
        putters_waiting=0,
        getters_waiting=0,
        put_blocked_seconds=0.0,
        get_blocked_seconds=0.0,
        is_shutdown=False,
    )


def test_stats_count_puts_gets_and_the_size() -> None:
    q = SafeQueue[int]()
    q.put(1)
    q.put_nowait(2)
    q.put_many([3, 4, 5])
    q.get(timeout=WAIT)
    q.get_many(2, timeout=WAIT)
    stats = q.stats()
    assert (stats.size, stats.puts, stats.gets) == (2, 5, 3)


def test_stats_peak_size_is_the_largest_size_ever_reached() -> None:
    q = SafeQueue[int]()
    q.put_many(range(4))
    q.get_many(3, timeout=0)
    q.put(9)
    stats = q.stats()
    assert (stats.size, stats.peak_size) == (2, 4)


def test_stats_discarded_counts_only_what_immediate_shutdown_dropped() -> None:
    q = SafeQueue[int]()
    q.put_many(range(5))
    q.get_nowait()
    q.shutdown()
    assert q.stats().discarded == 0
    q.get_nowait()
    q.shutdown(immediate=True)
    stats = q.stats()
    assert (stats.discarded, stats.size, stats.is_shutdown) == (3, 0, True)


def test_stats_producers_counts_the_open_handles() -> None:
    q = SafeQueue[int]()
    a, b = q.producer(), q.producer()
    assert q.stats().producers == 2
    a.close()
    assert q.stats().producers == 1
    b.close()
    assert q.stats().producers == 0


def test_stats_is_a_frozen_snapshot() -> None:
    q = SafeQueue[int]()
    before = q.stats()
    q.put(1)
    assert before.size == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.size = 1  # type: ignore[misc]


def test_stats_count_the_threads_waiting_to_get() -> None:
    q = SafeQueue[int]()
    seen: list[QueueStats] = []

    def look_then_feed() -> None:
        seen.append(q.stats())
        q.put_many([1, 2])

    getters = start_blocked(
        q, [lambda: q.get(timeout=WAIT), lambda: q.get_many(1, timeout=WAIT)], look_then_feed, "get"
    )
    results_of(getters)
    assert seen[0].getters_waiting == 2
    assert seen[0].get_blocked_seconds == 0.0  # only waits that have ended count
    after = q.stats()
    assert after.getters_waiting == 0
    assert after.get_blocked_seconds > 0.0


def test_stats_count_the_threads_waiting_to_put() -> None:
    q = SafeQueue[int](maxsize=1)
    q.put(0)
    seen: list[QueueStats] = []

    def look_then_drain() -> None:
        seen.append(q.stats())
        for _ in range(3):
            q.get(timeout=WAIT)

    putters = start_blocked(
        q,
        [lambda: q.put(1, timeout=WAIT), lambda: q.put_many([2], timeout=WAIT)],
        look_then_drain,
        "put",
    )
    results_of(putters)
    assert seen[0].putters_waiting == 2
    assert seen[0].put_blocked_seconds == 0.0
    after = q.stats()
    assert after.putters_waiting == 0
    assert after.put_blocked_seconds > 0.0


def test_blocked_seconds_grow_only_when_a_thread_really_blocked() -> None:
    q = SafeQueue[int](maxsize=1)
    q.put_nowait(1)  # none of these wait
    q.get_nowait()
    q.put(1, timeout=WAIT)
    q.get(timeout=WAIT)
    with pytest.raises(Empty):
        q.get_nowait()
    q.put(1)
    with pytest.raises(Full):
        q.put_nowait(2)
    stats = q.stats()
    assert (stats.put_blocked_seconds, stats.get_blocked_seconds) == (0.0, 0.0)

    with pytest.raises(Full):
        q.put(2, timeout=SHORT)
    assert q.stats().put_blocked_seconds >= SHORT
    assert q.stats().get_blocked_seconds == 0.0
    q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=SHORT)
    assert q.stats().get_blocked_seconds >= SHORT


# -- the public conditions -----------------------------------------------------------


def test_the_public_conditions_are_threading_conditions_on_the_queue_mutex() -> None:
    q = SafeQueue[int]()
    for condition in (q.not_empty, q.not_full, q.all_tasks_done):
        assert isinstance(condition, threading.Condition)
        with condition:
            assert q.mutex.locked()  # the one lock, shared


def test_a_put_wakes_a_thread_waiting_on_the_public_not_empty_condition() -> None:
    # Code written for queue.Queue may wait on q.not_empty itself; the queue's
    # own cheaper notify must reach that waiter too.
    q = SafeQueue[int]()

    def wait_for_an_item() -> int:
        with q.not_empty:
            while not q.queue:
                assert q.not_empty.wait(WAIT), "not woken by the put"
            return len(q.queue)

    [waiter] = start_blocked(q, [wait_for_an_item], partial(q.put, 1), "other")
    assert promptly(partial(waiter.result, WAIT)) == 1


def test_a_public_notify_wakes_a_blocked_get() -> None:
    q = SafeQueue[int]()

    def add_behind_the_queues_back() -> None:
        with q.mutex:
            q.queue.append(7)
            q.not_empty.notify()

    [getter] = start_blocked(q, [partial(q.get, timeout=WAIT)], add_behind_the_queues_back, "get")
    assert promptly(partial(getter.result, WAIT)) == 7


def test_a_get_that_timed_out_leaves_no_waiter_behind() -> None:
    q = SafeQueue[int]()
    with pytest.raises(Empty):
        q.get(timeout=SHORT)
    with pytest.raises(Full):
        SafeQueue[int](maxsize=1).put_many([1, 2], timeout=SHORT)
    with q.mutex:
        assert not q.not_empty._waiters  # type: ignore[attr-defined]


# -- iteration and repr ------------------------------------------------------------------


def test_iterating_yields_the_items_until_shutdown_and_drained() -> None:
    q = SafeQueue[int]()
    q.put_many([1, 2, 3])
    q.shutdown()
    assert run_in_thread(lambda: list(q)) == [1, 2, 3]
    assert run_in_thread(lambda: list(q)) == []


def test_iterating_waits_for_more_items_until_the_queue_shuts_down() -> None:
    q = SafeQueue[int](maxsize=2)
    fired = Trigger()
    consumer = ThreadCall(lambda: list(q), name="consumer", trigger=fired).start()
    for item in range(5):
        q.put(item, timeout=WAIT)
    wait_for(lambda: q.stats().getters_waiting == 1, "the consumer to wait for more")
    assert consumer.thread.is_alive(), "iteration ended before the queue shut down"
    fired.fire()
    q.shutdown()
    assert consumer.result() == [0, 1, 2, 3, 4]


def test_iteration_ends_at_once_after_immediate_shutdown() -> None:
    q = SafeQueue[int]()
    q.put_many([1, 2])
    q.shutdown(immediate=True)
    assert run_in_thread(lambda: list(q)) == []


def test_iteration_ends_when_the_last_producer_closes() -> None:
    q = SafeQueue[str]()
    p = q.producer()
    p.put("a")
    assert do_blocking_test(q, lambda: list(q), p.close, waiting="get") == ["a"]


def test_repr_shows_the_size_the_maxsize_and_shutdown() -> None:
    q = SafeQueue[int](maxsize=3)
    assert repr(q) == "<SafeQueue size=0 maxsize=3>"
    q.put(1)
    q.shutdown()
    assert repr(q) == "<SafeQueue size=1 maxsize=3 shutdown>"


def test_repr_names_the_subclass() -> None:
    assert repr(LifoSafeQueue()) == "<LifoSafeQueue size=0 maxsize=0>"


def test_producer_repr_says_whether_it_is_open() -> None:
    q = SafeQueue[int]()
    p = q.producer()
    assert repr(p) == "<Producer open on <SafeQueue size=0 maxsize=0>>"
    p.close()
    assert repr(p) == "<Producer closed on <SafeQueue size=0 maxsize=0 shutdown>>"


# -- the runner's batch hand-off ----------------------------------------------------------


def test_put_batch_counts_what_a_shut_down_queue_did_not_take() -> None:
    q = SafeQueue[int](maxsize=2)
    q._put_batch([1])
    do_blocking_test(q, lambda: q._put_batch([2, 3, 4]), q.shutdown, "put")
    assert list(q.queue) == [1, 2]
    assert q._books() == (2, 0, 2)


# -- a wake-up is never lost, whatever interrupts a notify -----------------------------


class _Injected(Exception):
    """Raised inside put() by a trace function, as a signal handler's exception could be."""


def _put_traced(q: SafeQueue[int], inject_at: int | None = None) -> int:
    """``q.put(1)``, counting the lines of the notify protocol it runs.

    With ``inject_at``, raise :class:`_Injected` at that line (1-based)
    instead, as a signal handler's exception could; return the lines run.
    """
    seen = 0

    def tracer(frame: Any, event: str, arg: object) -> Any:
        if not _library_frame(frame):
            return None

        def local(frame: Any, event: str, arg: object) -> Any:
            nonlocal seen
            if event == "line":
                seen += 1
                if seen == inject_at:
                    sys.settrace(None)
                    raise _Injected
            return local

        return local

    sys.settrace(tracer)
    try:
        q.put(1)
    except _Injected:
        pass
    finally:
        sys.settrace(None)
    return seen


def _library_frame(frame: Any) -> bool:
    # The notify protocol: threading's Condition code, or any notify of the
    # queue's own. (An exception between a `with` block and its __exit__,
    # which 3.11 and 3.12 allow, leaks any lock, queue.Queue's too: the
    # library keeps asynchronous KeyboardInterrupts out of its code instead.)
    code = frame.f_code
    return code.co_filename.endswith("threading.py") or "notify" in code.co_name


def _blocked_getter() -> tuple[SafeQueue[int], threading.Thread, list[object]]:
    q = SafeQueue[int]()
    got: list[object] = []
    getter = threading.Thread(target=lambda: got.append(_get_or_shutdown(q)), name="getter")
    getter.start()
    deadline = time.monotonic() + WAIT
    while q.stats().getters_waiting != 1:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return q, getter, got


def test_an_exception_at_any_line_of_a_waking_put_loses_no_wake_up() -> None:
    # For every line of the notify protocol that a put() waking a getter runs,
    # raise there once: a later put, or an immediate shutdown, must still wake
    # the blocked getter. (A notify that removes a waiter before releasing it,
    # as the queue's own did and CPython's did before gh-92530, fails.)
    q, getter, _ = _blocked_getter()
    total = _put_traced(q)
    getter.join(WAIT)
    assert total > 5
    for target in range(1, total + 1):
        q, getter, got = _blocked_getter()
        _put_traced(q, inject_at=target)
        try:
            q.put(2)
        except ShutDown:
            pass
        q.shutdown(immediate=True)
        getter.join(WAIT)
        assert not getter.is_alive(), f"the getter was never woken (injected at line {target})"
        assert got
        assert got[0] in (1, 2, "shut down")


def _get_or_shutdown(q: SafeQueue[int]) -> object:
    # Untimed: only a wake-up ends this wait (a timed one would hide a lost one).
    try:
        return q.get()
    except ShutDown:
        return "shut down"


def test_the_library_uses_no_private_threading_api_but_the_documented_waiter_look() -> None:
    # Private attributes of threading's objects buy microseconds and cost
    # correctness; the one read-only look at Condition._waiters is checked
    # at import (see _waiter_list).
    source = Path(pipeline.__file__).resolve().parent
    private = re.compile(r"\._(started|tstate_lock|is_owned|release_save|acquire_restore|handle)\b")
    found: list[str] = []
    for path in sorted(source.rglob("*.py")):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if private.search(text) or ("_waiters" in text and path.name != "_safequeue.py"):
                found.append(f"{path.name}:{number}: {text.strip()}")
    assert found == []
    lines = (source / "_safequeue.py").read_text(encoding="utf-8").splitlines()
    waiters = [t for t in lines if "._waiters" in t and "``" not in t]
    assert waiters == []  # read only through getattr in _waiter_list


def test_shutdown_says_what_happened() -> None:
    q = SafeQueue[int]()
    q.shutdown()
    with pytest.raises(ShutDown, match="put on a queue that is shut down"):
        q.put(1)
    with pytest.raises(ShutDown, match="get from a queue that is shut down and empty"):
        q.get()
