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
reports with their text form (the read side), which the observability work
(a bottleneck verdict, latency percentiles) splits apart as it grows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._exceptions import _short_repr
from ._safequeue import QueueStats

__all__ = ["DeadLetter", "PipelineReport", "RunStatus", "StageRecorder", "StageReport"]

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
        "busy_ns",
        "completed",
        "dead_letters",
        "dropped",
        "emitted",
        "failed",
        "in_hand",
        "retried",
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

    @classmethod
    def from_recorders(
        cls,
        name: str,
        arrived: int,
        recorders: Sequence[StageRecorder],
        queue: QueueStats,
        unfinished_in_queue: int,
    ) -> StageReport:
        """Sum the recorders of one stage's workers.

        ``unfinished_in_queue`` counts the items that arrived but never
        reached a worker: refused by the input queue, discarded from it, or
        still in it.
        """
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
            busy_seconds=sum(r.busy_ns for r in recorders) / 1e9,
            queue=queue,
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
            "queue_peak": self.queue.peak_size,
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
        lines = ["=== VERIFICATION REPORT ==="]
        if self.expected is None:
            lines.append("Expected: unknown (the source has no len())")
        else:
            lines.append(f"Expected: {self.expected}")
        if self.expected is None or self.items_read != self.expected:
            lines.append(f"Read: {self.items_read}")
        if self.expected is not None and self.items_read < self.expected:
            lines.append(f"Not read: {self.expected - self.items_read}")
        lines += _flow_lines(self)
        lines.append(f"Status: {self.status} in {self.elapsed_seconds:.3f}s")
        if self.error is not None:
            lines.append(f"Error: {self.error}")
        for thread in self.left_running:
            lines.append(f"Still running: {thread}")
        if self.stages:
            lines += ["", self.table()]
        return "\n".join(lines)

    def table(self) -> str:
        """Return the per-stage table alone, under a ``=== STAGES ===`` title."""
        header = (
            "stage",
            "workers",
            "received",
            "emitted",
            "dropped",
            "failed",
            "retried",
            "unfinished",
            "busy s",
        )
        rows = [
            (
                s.name,
                str(s.workers),
                str(s.received),
                str(s.emitted),
                str(s.dropped),
                str(s.failed),
                str(s.retried),
                str(s.not_processed),
                f"{s.busy_seconds:.3f}",
            )
            for s in self.stages
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

        def fmt(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        return "\n".join(["=== STAGES ===", fmt(header), *(fmt(row) for row in rows)])

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
            "stages": [s.to_dict() for s in self.stages],
            "dead_letters": [d.to_dict() for d in self.dead_letters],
        }


def _flow_lines(report: PipelineReport) -> list[str]:
    # What became of the items, in the units they had at each point: the
    # source's items up to the first stage that turns n items into m != n,
    # then that stage's items, and so on. Every count is a sum of counted
    # figures; none is negative.
    lines: list[str] = []
    filtered = failed = unfinished = 0
    first = True
    for stage in report.stages:
        filtered += stage.dropped
        failed += stage.failed
        unfinished += stage.not_processed
        if stage.created == 0:
            continue
        went_in = stage.completed - stage.dropped
        lines += _outcome_lines(first, went_in, filtered, failed, unfinished)
        verb = "merged" if stage.created < 0 else "split"
        lines.append(f"Stage {stage.name!r} {verb} {went_in} items into {stage.emitted}")
        filtered = failed = unfinished = 0
        first = False
    unfinished += report.undelivered
    lines += _outcome_lines(first, report.outputs, filtered, failed, unfinished)
    if not first:
        lines.append(f"Delivered: {report.outputs}")
    return lines


def _outcome_lines(
    first: bool, success: int, filtered: int, failed: int, unfinished: int
) -> list[str]:
    if first:  # the verification report's own four lines, in the source's items
        lines = [
            f"Processed: {success + filtered + failed}",
            f"Success: {success}",
            f"Failed: {failed}",
        ]
        if filtered:
            lines.append(f"Filtered out: {filtered}")
        if unfinished:
            lines.append(f"Not processed: {unfinished}")
        return lines
    parts = [f"{label} {count}" for label, count in
             (("filtered out", filtered), ("failed", failed), ("not processed", unfinished))
             if count]  # fmt: skip
    return [f"  of those: {', '.join(parts)}"] if parts else []
