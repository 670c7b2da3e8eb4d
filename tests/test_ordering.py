"""The reorder window: a multi-worker stage's outputs leave in the order its batches came in."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import SafeQueue, ShutDown
from pipeline._ordering import ReorderWindow, Slot
from tests.helpers import WAIT
from tests.test_safequeue_contract import (
    TRIGGER_DELAY,
    ThreadCall,
    Trigger,
    do_blocking_test,
    promptly,
    results_of,
    run_in_thread,
    start_threads,
)


def window_over(
    items: list[Any], size: int = 8, downstream_maxsize: int = 0
) -> tuple[ReorderWindow, SafeQueue[Any]]:
    inbox = SafeQueue[Any]()
    inbox.put_many(items)
    downstream = SafeQueue[Any](downstream_maxsize)
    return ReorderWindow(inbox, downstream, size), downstream


def take(window: ReorderWindow, cap: int) -> tuple[Slot, list[Any]]:
    return window.take(cap)


def test_batches_given_out_of_order_come_out_in_the_order_taken() -> None:
    window, out = window_over(list("abcdef"))
    a, _ = take(window, 2)
    c, _ = take(window, 2)
    e, _ = take(window, 2)
    window.give(e, ["E", "F"])
    window.give(c, ["C", "D"])
    assert out.empty()  # both wait for the head of the line
    assert window.held() == 4
    window.give(a, ["A", "B"])
    assert out.get_many(10, timeout=0) == list("ABCDEF")
    assert window.held() == 0
    assert out.stats().puts == 6


def test_an_empty_batch_still_takes_its_turn() -> None:
    window, out = window_over([1, 2])
    first, _ = take(window, 1)
    second, _ = take(window, 1)
    window.give(second, ["b"])
    window.give(first, [])
    assert out.get_many(10, timeout=0) == ["b"]


def test_a_full_window_makes_the_next_take_wait_until_the_head_is_handed_on() -> None:
    window, out = window_over([1, 2, 3], size=2)
    head, _ = take(window, 1)
    second, _ = take(window, 1)
    window.give(second, ["two"])  # still in line behind the head: no room yet
    fired = Trigger()
    waiter = ThreadCall(lambda: take(window, 1), name="taker", trigger=fired).start()
    waiter.thread.join(TRIGGER_DELAY)
    assert waiter.thread.is_alive(), "took a third batch with two slots open and a window of 2"
    fired.fire()
    window.give(head, ["one"])
    _, batch = waiter.result()
    assert batch == [3]
    assert out.get_many(10, timeout=0) == ["one", "two"]


def test_close_wakes_a_taker_waiting_for_room_with_shutdown() -> None:
    window, _ = window_over([1, 2], size=1)
    take(window, 1)
    with pytest.raises(ShutDown):
        do_blocking_test(SafeQueue[int](), lambda: take(window, 1), window.close, "other")


def test_a_take_ends_with_shutdown_once_the_input_ends() -> None:
    window, _ = window_over([1])
    window._inbox.shutdown()
    assert take(window, 5)[1] == [1]
    with pytest.raises(ShutDown):
        run_in_thread(lambda: take(window, 5))


def test_outputs_given_after_the_downstream_shut_down_are_counted_as_refused() -> None:
    window, out = window_over([1, 2, 3])
    first, _ = take(window, 1)
    second, _ = take(window, 1)
    window.give(second, ["b"])
    out.shutdown(immediate=True)
    window.give(first, ["a"])
    assert out._books() == (2, 0, 0)  # refused, discarded, left
    assert window.held() == 0


def test_a_drainer_waiting_for_room_downstream_holds_up_no_other_worker() -> None:
    window, out = window_over(list("abc"), downstream_maxsize=1)
    a, _ = take(window, 1)
    b, _ = take(window, 1)
    c, _ = take(window, 1)
    out.put("x")  # the downstream queue is full
    window.give(b, ["B"])
    drained: list[str] = []
    drainer = ThreadCall(lambda: window.give(a, ["A"]), name="drainer").start()
    # The head's worker now waits for room; another worker's give returns.
    giver = ThreadCall(lambda: window.give(c, ["C"]), name="giver").start()
    giver.result(WAIT)
    assert drainer.thread.is_alive()
    while len(drained) < 4:
        drained += promptly(lambda: out.get_many(4, timeout=WAIT))
    drainer.result(WAIT)
    assert drained == ["x", "A", "B", "C"]


def test_several_workers_hand_their_batches_on_in_input_order() -> None:
    window, out = window_over(list(range(2000)), size=8, downstream_maxsize=16)
    window._inbox.shutdown()

    def worker() -> int:
        batches = 0
        while True:
            try:
                slot, batch = window.take(7)
            except ShutDown:
                return batches
            window.give(slot, [x * 2 for x in batch])
            batches += 1

    workers = start_threads([worker] * 4, "worker")
    got: list[int] = []
    while len(got) < 2000:
        got += promptly(lambda: out.get_many(100, timeout=WAIT))
    assert sum(results_of(workers)) >= 2000 // 7
    assert got == [x * 2 for x in range(2000)]
    assert window.held() == 0
