"""Hypothesis tests for SafeQueue.

1. A state machine drives a SafeQueue and a plain model (a deque, the bound,
   a shutdown flag, the unfinished-task count and the statistics) through the
   same random single-threaded calls, and checks after every step that the
   results, the exceptions, the contents and ``stats()`` agree. Every call
   is made so that it cannot block: ``block=False``, ``timeout=0``, or a
   blocking call only when it can complete at once.
2. Random schedules of producers and consumers (counts, bound, put versus
   put_many, get versus get_many): the items received are exactly the items
   sent, and each consumer sees each producer's items in the order sent.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import cycle
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from pipeline import Empty, Full, Producer, ProducerError, SafeQueue, ShutDown
from tests.helpers import WAIT
from tests.test_safequeue_contract import promptly, results_of, start_threads

# -- 1. the state machine ------------------------------------------------------------

Failure = type[Exception] | None


def attempt(call: Callable[[], Any]) -> tuple[Any, Failure]:
    """Return ``(result, None)``, or ``(None, type of the exception)``."""
    try:
        return call(), None
    except (Empty, Full, ShutDown, ProducerError, ValueError, TypeError) as exc:
        return None, type(exc)


@dataclass
class Model:
    """What a SafeQueue should hold and report, kept the simplest way."""

    maxsize: int
    items: deque[int] = field(default_factory=deque)
    shut: bool = False
    unfinished: int = 0
    puts: int = 0
    gets: int = 0
    discarded: int = 0
    peak: int = 0
    producers: int = 0

    @property
    def bounded(self) -> bool:
        return self.maxsize > 0

    @property
    def full(self) -> bool:
        return self.bounded and len(self.items) >= self.maxsize

    def add(self, item: int) -> None:
        self.items.append(item)
        self.unfinished += 1
        self.puts += 1
        self.peak = max(self.peak, len(self.items))

    def take(self) -> int:
        self.gets += 1
        return self.items.popleft()

    def shutdown(self, *, immediate: bool) -> None:
        self.shut = True
        if immediate:
            while self.items:
                self.items.popleft()
                self.discarded += 1
                if self.unfinished > 0:
                    self.unfinished -= 1

    # The expected failure of each call, in the order queue.Queue checks.

    def put_fails(self, block: bool, timeout: float | None) -> Failure:
        if self.shut:
            return ShutDown
        if self.bounded:
            if not block:
                return Full if self.full else None
            if timeout is not None and timeout < 0:
                return ValueError
            if self.full:
                return Full
        return None

    def get_fails(self, block: bool, timeout: float | None) -> Failure:
        if not self.items:
            if self.shut:
                return ShutDown
            if not block:
                return Empty
            if timeout is not None and timeout < 0:
                return ValueError
            return Empty
        if block and timeout is not None and timeout < 0:
            return ValueError
        return None


TIMEOUTS = st.sampled_from([None, 0, 0.0, -1, -0.5])


class SafeQueueMachine(RuleBasedStateMachine):
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.q = SafeQueue[int]()
        self.model = Model(maxsize=0)
        self.open_handles: set[int] = set()
        self.counter = 0

    def fresh(self) -> int:
        self.counter += 1
        return self.counter

    @initialize(maxsize=st.integers(-1, 5))
    def create(self, maxsize: int) -> None:
        self.q = SafeQueue[int](maxsize)
        self.model = Model(maxsize=maxsize)

    # -- the queue.Queue interface

    @rule(block=st.booleans(), timeout=TIMEOUTS)
    def put(self, block: bool, timeout: float | None) -> None:
        if block and timeout is None and self.model.full and not self.model.shut:
            timeout = 0  # would block forever in a single thread
        item = self.fresh()
        expected = self.model.put_fails(block, timeout)
        _, failure = attempt(lambda: self.q.put(item, block, timeout))
        assert failure == expected
        if expected is None:
            self.model.add(item)

    @rule()
    def put_nowait(self) -> None:
        item = self.fresh()
        expected = self.model.put_fails(block=False, timeout=None)
        _, failure = attempt(lambda: self.q.put_nowait(item))
        assert failure == expected
        if expected is None:
            self.model.add(item)

    @rule(block=st.booleans(), timeout=TIMEOUTS)
    def get(self, block: bool, timeout: float | None) -> None:
        if block and timeout is None and not self.model.items and not self.model.shut:
            timeout = 0
        expected = self.model.get_fails(block, timeout)
        result, failure = attempt(lambda: self.q.get(block, timeout))
        assert failure == expected
        if expected is None:
            assert result == self.model.take()

    @rule()
    def get_nowait(self) -> None:
        expected = self.model.get_fails(block=False, timeout=None)
        result, failure = attempt(self.q.get_nowait)
        assert failure == expected
        if expected is None:
            assert result == self.model.take()

    @rule()
    def task_done(self) -> None:
        _, failure = attempt(self.q.task_done)
        if self.model.unfinished == 0:
            assert failure is ValueError
        else:
            assert failure is None
            self.model.unfinished -= 1

    @rule(immediate=st.booleans())
    def shutdown(self, immediate: bool) -> None:
        self.q.shutdown(immediate=immediate)
        self.model.shutdown(immediate=immediate)

    # -- the additions

    @rule(count=st.integers(0, 7), timeout=st.sampled_from([None, 0, -1]))
    def put_many(self, count: int, timeout: float | None) -> None:
        items = [self.fresh() for _ in range(count)]
        model = self.model
        room = model.maxsize - len(model.items) if model.bounded else count
        if timeout is None and count > room:
            timeout = 0  # would block forever in a single thread
        if timeout is not None and timeout < 0:
            expected: Failure = ValueError
        elif model.shut:
            expected = ShutDown
        elif count > room:
            expected = Full
        else:
            expected = None
        _, failure = attempt(lambda: self.q.put_many(items, timeout))
        assert failure == expected
        if expected in (None, Full):  # Full leaves the items that fitted
            for item in items[: max(0, room)]:
                model.add(item)

    @rule(
        max_items=st.one_of(st.integers(-1, 6), st.booleans()),
        timeout=st.sampled_from([None, 0, -1]),
    )
    def get_many(self, max_items: int, timeout: float | None) -> None:
        model = self.model
        if timeout is None and not model.items:
            timeout = 0
        if isinstance(max_items, bool):
            expected: Failure = TypeError
        elif max_items < 1 or (timeout is not None and timeout < 0):
            expected = ValueError
        elif not model.items:
            expected = ShutDown if model.shut else Empty
        else:
            expected = None
        result, failure = attempt(lambda: self.q.get_many(max_items, timeout))
        assert failure == expected
        if expected is None:
            taken = min(max_items, len(model.items))
            assert result == [model.take() for _ in range(taken)]

    # -- producer handles

    @rule(target=handles)
    def open_producer(self) -> Any:
        handle, failure = attempt(self.q.producer)
        if self.model.shut:
            assert failure is ProducerError
            return multiple()
        assert failure is None
        self.model.producers += 1
        self.open_handles.add(id(handle))
        return handle

    @rule(handle=handles)
    def close_producer(self, handle: Producer[int]) -> None:
        handle.close()
        if id(handle) in self.open_handles:
            self.open_handles.discard(id(handle))
            self.model.producers -= 1
            if self.model.producers == 0 and not self.model.shut:
                self.model.shutdown(immediate=False)
        assert handle.closed

    @rule(handle=handles)
    def put_through_a_handle(self, handle: Producer[int]) -> None:
        item = self.fresh()
        if id(handle) in self.open_handles:
            expected = self.model.put_fails(block=False, timeout=None)
        else:
            expected = ProducerError
        _, failure = attempt(lambda: handle.put(item, block=False))
        assert failure == expected
        if expected is None:
            self.model.add(item)

    # -- after every step

    @invariant()
    def agrees_with_the_model(self) -> None:
        q, model = self.q, self.model
        assert list(q.queue) == list(model.items)
        assert q.qsize() == len(model.items)
        assert q.empty() == (not model.items)
        assert q.full() == model.full
        assert q.unfinished_tasks == model.unfinished
        assert q.is_shutdown == model.shut
        stats = q.stats()
        assert (stats.size, stats.maxsize, stats.peak_size) == (
            len(model.items),
            model.maxsize,
            model.peak,
        )
        assert (stats.puts, stats.gets, stats.discarded) == (
            model.puts,
            model.gets,
            model.discarded,
        )
        assert stats.producers == model.producers
        assert (stats.putters_waiting, stats.getters_waiting) == (0, 0)
        assert stats.is_shutdown == model.shut


TestSafeQueueAgreesWithTheModel = SafeQueueMachine.TestCase


# -- 2. many producers, many consumers --------------------------------------------------

# A producer's plan: each step puts one item (0) or put_many()s that many (1-5).
PRODUCER_PLAN = st.lists(st.integers(0, 5), max_size=12)
# A consumer's plan, repeated until the end of stream: get() (0) or get_many(k).
CONSUMER_PLAN = st.lists(st.integers(0, 5), min_size=1, max_size=4)

Tag = tuple[int, int]  # (producer, sequence number)


def produce(handle: Producer[Tag], producer: int, plan: list[int]) -> list[Tag]:
    sent: list[Tag] = []
    with handle:
        for step in plan:
            batch = [(producer, len(sent) + i) for i in range(max(step, 1))]
            if step == 0:
                promptly(partial(handle.put, batch[0], timeout=WAIT))
            else:
                promptly(partial(handle.put_many, batch, timeout=WAIT))
            sent.extend(batch)
    return sent


def consume(q: SafeQueue[Tag], plan: list[int]) -> list[Tag]:
    received: list[Tag] = []
    for step in cycle(plan):
        try:
            if step == 0:
                received.append(promptly(partial(q.get, timeout=WAIT)))
            else:
                batch = promptly(partial(q.get_many, step, timeout=WAIT))
                assert 1 <= len(batch) <= step
                received.extend(batch)
        except ShutDown:
            return received
    raise AssertionError("unreachable: cycle() never ends")


@given(
    producer_plans=st.lists(PRODUCER_PLAN, min_size=1, max_size=6),
    consumer_plans=st.lists(CONSUMER_PLAN, min_size=1, max_size=6),
    maxsize=st.integers(0, 16),
)
def test_every_item_sent_is_received_once_and_in_each_producers_order(
    producer_plans: list[list[int]], consumer_plans: list[list[int]], maxsize: int
) -> None:
    q = SafeQueue[Tag](maxsize)
    handles = [q.producer() for _ in producer_plans]  # all taken before any starts
    consumers = start_threads([partial(consume, q, plan) for plan in consumer_plans], "consumer")
    producers = start_threads(
        [
            partial(produce, handle, p, plan)
            for p, (handle, plan) in enumerate(zip(handles, producer_plans, strict=True))
        ],
        "producer",
    )
    sent = [tag for tags in results_of(producers) for tag in tags]
    received = results_of(consumers)

    assert Counter(tag for tags in received for tag in tags) == Counter(sent)
    for tags in received:
        for p in range(len(producer_plans)):
            sequence = [n for producer, n in tags if producer == p]
            assert sequence == sorted(sequence), f"producer {p}'s items out of order"
    stats = q.stats()
    assert stats.puts == stats.gets == len(sent)
    assert (stats.size, stats.producers, stats.is_shutdown) == (0, 0, True)
    assert (stats.putters_waiting, stats.getters_waiting) == (0, 0)
    if maxsize > 0:
        assert stats.peak_size <= maxsize
