"""Per-stage statistics and the run report.

Every item event of a run passes through one :class:`StageRecorder`: batches
taken and finished, retries, dead letters, items left unfinished. Each worker
thread owns its own recorder, so recording needs no lock; the runner sums them
into a :class:`PipelineReport` after it has joined the workers. The recorders
are the run's default observer; :mod:`pipeline._observe` sends the same
events on to the observers a caller passes.

The books are counted, never derived. For each stage::

    arrived == completed + failed + not_processed

where ``arrived`` counts the items handed to the stage (read from the source,
or emitted by the stage before it: counted upstream), ``completed`` those
whose ``process()`` returned (including those that produced no output:
``dropped``), ``failed`` the dead letters and the item that failed a run, and
``not_processed`` the items a cancellation or a fail-fast error left
unfinished, each counted where it stopped: refused by or discarded from the
stage's input queue, or in a worker's hands. For the whole run::

    items_read + created == outputs + dropped + failed + not_processed

where ``created`` is the net number of items that fan-out (``flat_map``) and
fan-in (``batch``) stages added; it is zero when every stage maps one item to
at most one output. Since every term is counted on its own, ``balanced``
is a real check: an item lost anywhere makes it false.

Past 400 lines: the recorders (the write side, on the hot path) and the
report's frozen records (the read side: the stage and run reports, the
worker and item times, the dead letters) are one vocabulary, each read side
built from the other. The report's text is :mod:`pipeline._summary`, its
verdict :mod:`pipeline._verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from random import random
from statistics import quantiles
from typing import Any, Literal

from ._exceptions import _short_repr
from ._safequeue import QueueStats
from ._summary import stage_table, summary, time_table
from ._verdict import Verdict, judge

__all__ = [
    "ITEM_SAMPLE",
    "DeadLetter",
    "ItemTimes",
    "PipelineReport",
    "RunStatus",
    "StageRecorder",
    "StageReport",
    "WorkerTimes",
]

ITEM_SAMPLE = 4096
"""Batches per worker whose time per item the report keeps, for its percentiles."""

RunStatus = Literal["completed", "failed", "cancelled", "timed out", "interrupted", "closed"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item a stage gave up on under ``on_error="skip"``.

    >>> from pipeline import Pipeline
    >>> report = Pipeline[str]().map(int, on_error="skip").run(["1", "x"]).report
    >>> [(d.stage, d.item, type(d.exception).__name__, d.attempts) for d in report.dead_letters]
    [('int', 'x', 'ValueError', 1)]

    Attributes:
        stage: the stage's name.
        item: the item itself (kept, so it can be replayed).
        exception: the last exception ``process()`` raised for it.
        attempts: how many times it was tried (1 without a retry policy).
    """

    stage: str
    item: Any
    exception: BaseException
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the item and the exception as reprs)."""
        return {
            "stage": self.stage,
            "item": _short_repr(self.item),
            "exception": _short_repr(self.exception),
            "attempts": self.attempts,
        }


class StageRecorder:
    """The counters of one worker thread; the one place item events are recorded.

    Only the owning worker writes to it. Counts are updated once per batch, not
    once per item, so recording costs a handful of integer additions per
    batch. ``taken`` and ``in_hand`` are set by the worker loop itself as it
    takes a batch, before any user code runs, so no exception can hide an
    item from the books.
    """

    __slots__ = (
        "abandoned",
        "batches",
        "blocked_s",
        "busy_ns",
        "completed",
        "cpu_ns",
        "dead_letters",
        "dispatch_ns",
        "dropped",
        "emitted",
        "failed",
        "in_hand",
        "item_max_ns",
        "item_ns",
        "ready_ns",
        "retried",
        "starved_s",
        "taken",
    )

    def __init__(self) -> None:
        self.taken = 0  # items taken from the input (the queue, or the source)
        self.in_hand = 0  # of those, the batch being processed now
        self.completed = 0
        self.emitted = 0
        self.dropped = 0
        self.failed = 0  # dead letters and the item that failed the run
        self.abandoned = 0  # taken, then left unprocessed by a cancellation or an error
        self.retried = 0
        self.busy_ns = 0
        self.cpu_ns: int | None = None  # the worker thread's CPU time (thread stages)
        self.dispatch_ns = 0  # batches out on a cluster, outside process() (Dask stages)
        self.ready_ns = 0  # perf_counter_ns() when on_start returned (0: never)
        self.starved_s = 0.0  # the worker's waits for input, and for room downstream
        self.blocked_s = 0.0
        # Time per item (a batch's time over its size): a bounded uniform
        # sample of the batches (reservoir sampling), and the exact maximum.
        self.batches = 0
        self.item_ns: list[int] = []
        self.item_max_ns = 0
        self.dead_letters: list[DeadLetter] = []

    def worker_started(self) -> None:
        """The worker's ``on_start`` returned (an event for observers)."""

    def worker_stopped(self) -> None:
        """The worker ended (an event for observers)."""

    def batch_done(
        self, size: int, completed: int, emitted: int, dropped: int, nanoseconds: int
    ) -> None:
        """The batch in hand ended, all of it processed.

        Of its ``size`` items, ``completed`` finished (``dropped`` of those
        with no output), producing ``emitted`` outputs, in ``nanoseconds``.

        Items of the batch that became dead letters were recorded by
        :meth:`gave_up` as they happened.
        """
        self.completed += completed
        self.emitted += emitted
        self.dropped += dropped
        self.busy_ns += nanoseconds
        self.in_hand = 0
        if size:
            per_item = nanoseconds // size
            self.batches = seen = self.batches + 1
            if seen <= ITEM_SAMPLE:
                self.item_ns.append(per_item)
            elif (slot := int(random() * seen)) < ITEM_SAMPLE:
                self.item_ns[slot] = per_item
            if per_item > self.item_max_ns:  # noqa: PLR1730 (max() costs a call per batch)
                self.item_max_ns = per_item

    def batch_stopped(
        self,
        *,
        size: int,
        completed: int,
        emitted: int,
        dropped: int,
        failed: int,
        abandoned: int,
        nanoseconds: int,
    ) -> None:
        """The batch in hand stopped part way (an error, or a cancelled retry).

        Besides what finished, ``failed`` items failed the run (0 or 1) and
        ``abandoned`` were not processed.
        """
        StageRecorder.batch_done(self, size, completed, emitted, dropped, nanoseconds)
        self.failed += failed
        self.abandoned += abandoned

    def abandon_in_hand(self) -> None:
        """Count the batch in hand as not processed (the worker stops without it)."""
        self.abandoned += self.in_hand
        self.in_hand = 0

    def retrying(self, item: Any, error: Exception, attempt: int) -> None:
        """Try ``attempt`` of ``item`` raised ``error``; it will be tried again."""
        self.retried += 1

    def failing(self, item: Any, error: BaseException) -> None:
        """``item`` raised ``error``, which fails the run (an event for observers)."""

    def gave_up(self, letter: DeadLetter) -> None:
        """An item became a dead letter."""
        self.failed += 1
        self.dead_letters.append(letter)


@dataclass(frozen=True, slots=True)
class WorkerTimes:
    """Where one worker's time went: busy in ``process()``, starved, blocked.

    Attributes:
        name: the worker's name, ``"<stage>-<n>"``.
        busy_seconds: time in ``process()``.
        starved_seconds: time waiting for input.
        blocked_seconds: time waiting for room downstream (or, in an
            ordered stage, for an earlier batch to go on).
    """

    name: str
    busy_seconds: float
    starved_seconds: float
    blocked_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "busy_seconds": round(self.busy_seconds, 6),
            "starved_seconds": round(self.starved_seconds, 6),
            "blocked_seconds": round(self.blocked_seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class ItemTimes:
    """How long ``process()`` took per item in one stage: percentiles and the maximum.

    Each batch gives one figure, its time over its size: exact for items
    processed alone (a slow stage's usual case), the batch's mean for items
    batched together. The percentiles come from a uniform sample of up to
    :data:`ITEM_SAMPLE` batches per worker; ``max`` is exact.

    Attributes:
        p50, p95, p99: percentiles, in seconds.
        max: the longest, in seconds.
        batches: how many batches the percentiles were computed from.
    """

    p50: float
    p95: float
    p99: float
    max: float
    batches: int

    @classmethod
    def from_recorders(cls, recorders: Sequence[StageRecorder]) -> ItemTimes | None:
        """Merge the workers' samples; ``None`` when there is none."""
        sample = sorted(ns for r in recorders for ns in r.item_ns)
        if not sample:
            return None
        cuts: list[float] = (
            [float(sample[0])] * 99
            if len(sample) == 1
            else quantiles(sample, n=100, method="inclusive")
        )
        return cls(
            p50=cuts[49] / 1e9,
            p95=cuts[94] / 1e9,
            p99=cuts[98] / 1e9,
            max=max(r.item_max_ns for r in recorders) / 1e9,
            batches=len(sample),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {name: getattr(self, name) for name in ("p50", "p95", "p99", "max", "batches")}


@dataclass(frozen=True, slots=True)
class StageReport:
    """What one stage did during a run.

    >>> from pipeline import Pipeline
    >>> stage = Pipeline[int]().filter(bool, name="nonzero").run([0, 1, 2]).report.stages[0]
    >>> stage.name, stage.received, stage.emitted, stage.dropped, stage.not_processed
    ('nonzero', 3, 2, 1, 0)

    Attributes:
        name: the stage's name.
        workers: its number of worker threads.
        arrived: items handed to it (read from the source, or emitted by the
            stage before), counted where they were handed over.
        received: items its workers took from their input.
        completed: items whose ``process()`` returned.
        emitted: outputs it produced.
        dropped: completed items that produced no output (filtered out).
        failed: items that failed: dead letters under ``on_error="skip"``,
            and the item whose error failed the run.
        retried: retry attempts made.
        not_processed: items that arrived but were left unfinished by a
            cancellation or an error: refused by or discarded from its input
            queue, or in a worker's hands.
        busy_seconds: time its workers spent in ``process()``, summed.
        queue: statistics of its input queue.
        executor: where ``process()`` ran: ``"thread"``, ``"process"``, or the
            executor's class name.
        utilization: ``busy_seconds`` over ``active_seconds``: 1.0 means every
            worker was in ``process()`` all along.
        starved_seconds: time its workers spent waiting for input, summed.
        blocked_seconds: time its workers spent waiting for room downstream
            (or, in an ordered stage, for an earlier batch to go on), summed.
        cpu_seconds: CPU time of its worker threads, summed (thread stages
            only; ``None`` elsewhere).
        active_seconds: its workers' time from being ready (``on_start``
            returned) to the run's end, summed: what they could have spent busy.
        item_seconds: the time ``process()`` took per item (see
            :class:`ItemTimes`), or ``None`` when no batch finished.
        queue_mean_size: the time-weighted mean size of its input queue over
            the run (``queue.peak_size`` is the peak); 0.0 for a queue source.
        worker_times: each worker's busy, starved and blocked time
            (:class:`WorkerTimes`), in worker order.
        dispatch_seconds: time its workers had a batch out on a Dask cluster
            but not in ``process()``, summed: the cluster's cost per task
            (submitting, scheduling, moving the items and the outputs); 0.0
            for stages on threads, processes and other executors.
    """

    name: str
    workers: int
    arrived: int
    received: int
    completed: int
    emitted: int
    dropped: int
    failed: int
    retried: int
    not_processed: int
    busy_seconds: float
    queue: QueueStats
    executor: str = "thread"
    utilization: float = 0.0
    starved_seconds: float = 0.0
    blocked_seconds: float = 0.0
    cpu_seconds: float | None = None
    active_seconds: float = 0.0
    item_seconds: ItemTimes | None = None
    queue_mean_size: float = 0.0
    worker_times: tuple[WorkerTimes, ...] = ()
    dispatch_seconds: float = 0.0

    @classmethod
    def from_recorders(
        cls,
        name: str,
        arrived: int,
        recorders: Sequence[StageRecorder],
        queue: QueueStats,
        unfinished_in_queue: int,
        *,
        executor: str = "thread",
        queue_mean: float = 0.0,
        elapsed: float = 0.0,
        ended_ns: int = 0,
        starved: float = 0.0,
        blocked: float = 0.0,
    ) -> StageReport:
        """Sum the recorders of one stage's workers.

        ``unfinished_in_queue`` counts the items that arrived but never
        reached a worker: refused by the input queue, discarded from it, or
        still in it. ``elapsed`` is the run's wall time and ``ended_ns`` its end
        (``perf_counter_ns()``); ``starved`` and ``blocked`` the stage's
        waits, measured by its queues.
        """
        busy = sum(r.busy_ns for r in recorders) / 1e9
        cpu = [r.cpu_ns for r in recorders if r.cpu_ns is not None]
        # What the workers could have done: each from the moment it was
        # ready (a worker process takes a while to start) to the run's end.
        active = sum(max(0, ended_ns - r.ready_ns) for r in recorders if r.ready_ns) / 1e9
        capacity = active if active > 0 else len(recorders) * elapsed
        return cls(
            name=name,
            workers=len(recorders),
            arrived=arrived,
            received=sum(r.taken for r in recorders),
            completed=sum(r.completed for r in recorders),
            emitted=sum(r.emitted for r in recorders),
            dropped=sum(r.dropped for r in recorders),
            failed=sum(r.failed for r in recorders),
            retried=sum(r.retried for r in recorders),
            not_processed=unfinished_in_queue + sum(r.abandoned + r.in_hand for r in recorders),
            busy_seconds=busy,
            queue=queue,
            executor=executor,
            utilization=busy / capacity if capacity > 0 else 0.0,
            active_seconds=active,
            item_seconds=ItemTimes.from_recorders(recorders),
            queue_mean_size=queue_mean,
            worker_times=tuple(
                WorkerTimes(f"{name}-{n}", r.busy_ns / 1e9, r.starved_s, r.blocked_s)
                for n, r in enumerate(recorders, 1)
            ),
            starved_seconds=starved,
            blocked_seconds=blocked,
            cpu_seconds=sum(cpu) / 1e9 if cpu else None,
            dispatch_seconds=sum(r.dispatch_ns for r in recorders) / 1e9,
        )

    @property
    def balanced(self) -> bool:
        """Whether ``arrived == completed + failed + not_processed``."""
        return self.arrived == self.completed + self.failed + self.not_processed

    @property
    def created(self) -> int:
        """Net items this stage added: ``emitted - (completed - dropped)``.

        Positive for a fan-out (``flat_map``), negative for a fan-in
        (``batch``), zero when every item gives at most one output.
        """
        return self.emitted - self.completed + self.dropped

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "workers": self.workers,
            "arrived": self.arrived,
            "received": self.received,
            "completed": self.completed,
            "emitted": self.emitted,
            "dropped": self.dropped,
            "failed": self.failed,
            "retried": self.retried,
            "not_processed": self.not_processed,
            "busy_seconds": round(self.busy_seconds, 6),
            "executor": self.executor,
            "utilization": round(self.utilization, 4),
            "starved_seconds": round(self.starved_seconds, 6),
            "blocked_seconds": round(self.blocked_seconds, 6),
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 6),
            "active_seconds": round(self.active_seconds, 6),
            "item_seconds": None if self.item_seconds is None else self.item_seconds.to_dict(),
            "queue_peak": self.queue.peak_size,
            "queue_mean_size": round(self.queue_mean_size, 3),
            "worker_times": [w.to_dict() for w in self.worker_times],
            "dispatch_seconds": round(self.dispatch_seconds, 6),
            "queue_maxsize": self.queue.maxsize,
            "queue_put_blocked_seconds": round(self.queue.put_blocked_seconds, 6),
            "queue_get_blocked_seconds": round(self.queue.get_blocked_seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class PipelineReport:
    """What happened to every item of one run.

    ``run()`` returns it in its result, errors carry it as ``.report``, and a
    stream exposes it once closed.

    >>> from pipeline import Pipeline
    >>> report = Pipeline[int]().map(lambda x: x * 2).filter(lambda x: x > 2).run([1, 2, 3]).report
    >>> report.items_read, report.outputs, report.dropped, report.failed, report.not_processed
    (3, 2, 1, 0, 0)
    >>> report.balanced
    True

    Attributes:
        status: ``"completed"``, ``"failed"`` (fail-fast error), ``"cancelled"``,
            ``"timed out"``, ``"interrupted"`` (Ctrl-C) or ``"closed"`` (a stream
            closed by its consumer before the end).
        elapsed_seconds: wall time from start to the last thread joined.
        expected: the source's length, when it has one (``len()``), else ``None``.
        items_read: items read from the source.
        outputs: items delivered to the caller.
        dropped: items filtered out, summed over stages.
        failed: items that failed (dead letters, and the item that failed
            the run), summed over stages.
        not_processed: items left unfinished, summed over stages, plus
            ``undelivered``.
        created: net items added by fan-out and fan-in stages (see the module
            docs); zero for one-to-one pipelines.
        stages: one :class:`StageReport` per stage, in order.
        dead_letters: every :class:`DeadLetter`, in no particular order.
        undelivered: outputs produced but never handed to the caller.
        error: the error that ended the run, as ``"Type: message"``, or
            ``None`` when it completed (or its stream was closed).
        left_running: threads the run stopped waiting for, still inside
            user code (a source blocked in ``next()`` after a cancellation,
            or workers after a second Ctrl-C), each with where it is.
        gil_enabled: whether the GIL was on (``False`` on a free-threaded
            build running without it).
    """

    status: RunStatus
    elapsed_seconds: float
    items_read: int
    outputs: int
    dropped: int
    failed: int
    not_processed: int
    created: int
    stages: tuple[StageReport, ...]
    dead_letters: tuple[DeadLetter, ...] = field(default=())
    expected: int | None = None
    undelivered: int = 0
    error: str | None = None
    left_running: tuple[str, ...] = ()
    gil_enabled: bool = True

    @property
    def verdict(self) -> Verdict | None:
        """Which stage held the run back, the evidence and the advice (see :class:`Verdict`).

        ``None`` for a run too short to tell or that read nothing.
        """
        return judge(
            self.stages, self.elapsed_seconds, self.items_read, gil_enabled=self.gil_enabled
        )

    @property
    def balanced(self) -> bool:
        """Whether every item read is accounted for, stage by stage.

        Checks each stage's ``arrived == completed + failed + not_processed``,
        that the last stage's outputs were delivered or counted as
        undelivered, and the run's ``items_read + created == outputs +
        dropped + failed + not_processed``. Every term is counted where it
        happened, so an item lost anywhere makes this false.
        """
        produced = self.stages[-1].emitted if self.stages else self.items_read
        accounted = self.outputs + self.dropped + self.failed + self.not_processed
        return (
            all(stage.balanced for stage in self.stages)
            and produced == self.outputs + self.undelivered
            and self.items_read + self.created == accounted
        )

    @property
    def processed(self) -> int:
        """Items whose journey ended: outputs, dropped and failed."""
        return self.outputs + self.dropped + self.failed

    def summary(self) -> str:
        """Return the verification report and a per-stage table, as text.

        The report says what became of the items read: how many came out
        (``Success``), were filtered out, failed or were not processed, and
        where a fan-in or fan-out stage turned them into a different number
        of items. Counts after such a stage are in its own items.

        >>> from pipeline import Pipeline
        >>> report = Pipeline[int]().filter(lambda x: x % 10 != 7).batch(10).run(range(100)).report
        >>> for line in report.summary().splitlines()[:9]:
        ...     print(line)  # doctest: +ELLIPSIS
        === VERIFICATION REPORT ===
        Expected: 100
        Processed: 100
        Success: 90
        Failed: 0
        Filtered out: 10
        Stage 'batch' merged 90 items into 9
        Delivered: 9
        Status: completed in ...s
        """
        return summary(self)

    def table(self) -> str:
        """Return the per-stage table alone, under a ``=== STAGES ===`` title."""
        return stage_table(self)

    def times(self) -> str:
        """Return where the stages' time went, under a ``=== TIME ===`` title, and the verdict.

        Per stage: where ``process()`` ran, the share of its workers' time
        spent busy in it (a Dask stage: with a batch out on the cluster,
        :attr:`StageReport.dispatch_seconds` included), starved (waiting for
        input) and blocked (waiting for room downstream), the items it
        completed per second, and the median and 99th percentile of its time
        per item (:class:`ItemTimes`).
        """
        return time_table(self)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the whole report.

        >>> import json
        >>> from pipeline import Pipeline
        >>> json.loads(json.dumps(Pipeline[int]().run([1]).report.to_dict()))["outputs"]
        1
        """
        return {
            "status": self.status,
            "error": self.error,
            "elapsed_seconds": round(self.elapsed_seconds, 6),
            "expected": self.expected,
            "items_read": self.items_read,
            "outputs": self.outputs,
            "processed": self.processed,
            "dropped": self.dropped,
            "failed": self.failed,
            "not_processed": self.not_processed,
            "undelivered": self.undelivered,
            "created": self.created,
            "balanced": self.balanced,
            "left_running": list(self.left_running),
            "gil_enabled": self.gil_enabled,
            "verdict": None if (verdict := self.verdict) is None else verdict.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "dead_letters": [d.to_dict() for d in self.dead_letters],
        }
