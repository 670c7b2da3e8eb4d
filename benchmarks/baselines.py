"""The baselines, written here as a user would write them without the library.

- :func:`sequential`: a plain loop calling three plain functions per item.
- :func:`queue_pipeline`: the classic tutorial's pipeline: ``queue.Queue``
  between stages, one item per queue operation, a dispatcher thread, N
  threads per stage, a collector thread, one poison pill per consumer, and a
  coordinator that joins stage by stage.
- :class:`QueueRoundTrip`: three ``queue.Queue`` threads passing one item at a
  time, for the latency scenario.
- :func:`pypeln_pipeline`: pypeln's thread stages, when pypeln is installed.
- :func:`bare_threads`: start and join N threads that do nothing.
"""

from __future__ import annotations

import importlib
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Final

from pipeline import DEFAULT_MAXSIZE

__all__ = [
    "MAXSIZE",
    "PYPELN_MISSING",
    "HandStage",
    "MigrationShape",
    "QueueRoundTrip",
    "add10",
    "arithmetic_stages",
    "bare_threads",
    "double",
    "identity",
    "is_even",
    "load_pypeln",
    "pypeln_pipeline",
    "queue_pipeline",
    "sequential",
]

MAXSIZE: Final = DEFAULT_MAXSIZE
"""The bound of every queue in every variant: the library's default."""

PYPELN_MISSING: Final = "pypeln not installed (pip install .[bench])"


# -- the work ----------------------------------------------------------------------


def double(x: int) -> int:
    """Return ``x * 2``."""
    return x * 2


def add10(x: int) -> int:
    """Return ``x + 10``."""
    return x + 10


def is_even(x: int) -> bool:
    """Return whether ``x`` is even."""
    return x % 2 == 0


def identity(x: Any) -> Any:
    """Return ``x``: an idle stage."""
    return x


class MigrationShape:
    """The file migration's shape: items sleep 2-5 ms in stage A, then 10-20 ms in B.

    The sleeps are drawn once, from a fixed seed, so every variant of a
    scenario sleeps the same. ``bound`` is the ideal makespan of the ``n``
    items with ``workers_a`` and ``workers_b`` workers: the busier stage's
    total sleep over its workers.
    """

    def __init__(self, n: int, workers_a: int = 3, workers_b: int = 2) -> None:
        rng = random.Random(20240601)
        self.n, self.workers_a, self.workers_b = n, workers_a, workers_b
        self.sleep_a = {item: rng.uniform(0.002, 0.005) for item in range(n)}
        self.sleep_b = {item: rng.uniform(0.010, 0.020) for item in range(n)}
        self.bound = max(
            sum(self.sleep_a.values()) / workers_a, sum(self.sleep_b.values()) / workers_b
        )

    def copy_to_s3(self, item: int) -> int:
        """Stage A: sleep this item's 2-5 ms."""
        time.sleep(self.sleep_a[item])
        return item

    def upload_to_api(self, item: int) -> int:
        """Stage B: sleep this item's 10-20 ms."""
        time.sleep(self.sleep_b[item])
        return item


def sequential(source: Iterable[int]) -> list[int]:
    """The plain loop: double, add 10, keep the even results."""
    out: list[int] = []
    for x in source:
        y = add10(double(x))
        if is_even(y):
            out.append(y)
    return out


# -- the tutorial's hand-written pipeline---------------------------------------


class _Pill:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<poison pill>"


_PILL: Final = _Pill()


@dataclass(frozen=True, slots=True)
class HandStage:
    """One stage of :func:`queue_pipeline`: a function, its threads, map or filter."""

    fn: Callable[[Any], Any]
    workers: int = 1
    keep: bool = False
    """True: a filter (``fn`` is a predicate); False: a map."""


def _mapper(fn: Callable[[Any], Any], inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
    while True:
        item = inbox.get()
        if item is _PILL:
            return
        outbox.put(fn(item))


def _filterer(
    predicate: Callable[[Any], Any], inbox: queue.Queue[Any], outbox: queue.Queue[Any]
) -> None:
    while True:
        item = inbox.get()
        if item is _PILL:
            return
        if predicate(item):
            outbox.put(item)


def queue_pipeline(source: Iterable[Any], stages: Sequence[HandStage]) -> list[Any]:
    """Run ``source`` through ``stages`` the way the classic tutorial does; return the outputs.

    Output order follows completion order (as in the tutorial), which with one
    worker per stage is input order.
    """
    queues: list[queue.Queue[Any]] = [queue.Queue(MAXSIZE) for _ in range(len(stages) + 1)]
    results: list[Any] = []

    def dispatcher() -> None:
        first = queues[0]
        for item in source:
            first.put(item)

    def collector() -> None:
        last = queues[-1]
        while True:
            item = last.get()
            if item is _PILL:
                return
            results.append(item)

    dispatch = threading.Thread(target=dispatcher, name="dispatcher")
    groups: list[list[threading.Thread]] = []
    for index, stage in enumerate(stages):
        target = _filterer if stage.keep else _mapper
        args = (stage.fn, queues[index], queues[index + 1])
        groups.append(
            [
                threading.Thread(target=target, args=args, name=f"stage{index}-{n}")
                for n in range(stage.workers)
            ]
        )
    collect = threading.Thread(target=collector, name="collector")
    everyone = [dispatch, *(t for group in groups for t in group), collect]
    for thread in everyone:
        thread.start()

    # The coordinator: wait for a stage to finish, then send one pill per
    # consumer of the next one.
    dispatch.join()
    for index, group in enumerate(groups):
        for _ in group:
            queues[index].put(_PILL)
        for thread in group:
            thread.join()
    queues[-1].put(_PILL)
    collect.join()
    return results


def arithmetic_stages(workers: int) -> list[HandStage]:
    """The demo's stages: double, add 10, keep even; ``workers`` threads each."""
    return [
        HandStage(double, workers),
        HandStage(add10, workers),
        HandStage(is_even, workers, keep=True),
    ]


# -- latency: one item at a time through three idle threads -------------------------


def _relay(inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
    while True:
        item = inbox.get()
        outbox.put(item)  # the pill is passed on too
        if item is _PILL:
            return


class QueueRoundTrip:
    """Three ``queue.Queue`` threads in a row; :meth:`send` waits for the item back.

    Use it as a context manager: the threads start on entry and are joined on
    exit (a pill travels through all three).
    """

    def __init__(self, stages: int = 3) -> None:
        self._queues: list[queue.Queue[Any]] = [queue.Queue(MAXSIZE) for _ in range(stages + 1)]
        self._threads = [
            threading.Thread(
                target=_relay, args=(self._queues[i], self._queues[i + 1]), name=f"relay-{i}"
            )
            for i in range(stages)
        ]

    def __enter__(self) -> QueueRoundTrip:
        for thread in self._threads:
            thread.start()
        return self

    def send(self, item: Any) -> Any:
        """Put ``item`` in the first queue; return what comes out of the last."""
        self._queues[0].put(item)
        return self._queues[-1].get()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._queues[0].put(_PILL)
        for thread in self._threads:
            thread.join()


# -- pypeln and bare threads ----------------------------------------------------------


def load_pypeln() -> ModuleType | None:
    """Return the pypeln module, or ``None`` when it is not installed."""
    try:
        return importlib.import_module("pypeln")
    except ImportError:
        return None


def pypeln_pipeline(pl: ModuleType, source: Iterable[int], workers: int) -> list[int]:
    """Double, add 10, keep even with pypeln thread stages (unordered)."""
    stage = pl.thread.map(double, source, workers=workers, maxsize=MAXSIZE)
    stage = pl.thread.map(add10, stage, workers=workers, maxsize=MAXSIZE)
    stage = pl.thread.filter(is_even, stage, workers=workers, maxsize=MAXSIZE)
    return list(stage)


def _noop() -> None:
    pass


def bare_threads(count: int) -> None:
    """Start ``count`` threads that do nothing, then join them all."""
    threads = [threading.Thread(target=_noop) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
