"""Per-stage statistics and the run report.

Every item event of a run passes through one :class:`StageRecorder`: batches
taken and finished, retries, dead letters. Each worker thread owns its own
recorder, so recording needs no lock; the runner sums them into a
:class:`PipelineReport` after it has joined the workers (or, for a live view,
reads them racily, which is exact enough for display).

The accounting identity. For each stage::

    arrived == completed + failed + not_processed

where ``arrived`` counts the items handed to the stage (read from the source,
or emitted by the stage before it), ``completed`` those whose ``process()``
returned (including those that produced no output: ``dropped``), and
``not_processed`` those a cancellation or a fail-fast error left unfinished,
wherever they were (queued, in a worker's hands, or emitted but not yet
delivered). For the whole run::

    items_read + created == outputs + dropped + failed + not_processed

where ``created`` is the net number of items that fan-out (``flat_map``) and
fan-in (``batch``) stages added; it is zero when every stage maps one item to
at most one output, and then the four counts add up to the number read.
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
    batch.
    """

    __slots__ = (
        "busy_ns",
        "completed",
        "dead_letters",
        "dropped",
        "emitted",
        "failed",
        "received",
        "retried",
    )

    def __init__(self) -> None:
        self.received = 0
        self.completed = 0
        self.emitted = 0
        self.dropped = 0
        self.failed = 0
        self.retried = 0
        self.busy_ns = 0
        self.dead_letters: list[DeadLetter] = []

    def batch_done(
        self, received: int, completed: int, emitted: int, dropped: int, nanoseconds: int
    ) -> None:
        """A batch of ``received`` items was processed (or abandoned part way).

        ``completed`` of them finished (``dropped`` of those with no output),
        producing ``emitted`` outputs, in ``nanoseconds`` of processing.
        """
        self.received += received
        self.completed += completed
        self.emitted += emitted
        self.dropped += dropped
        self.busy_ns += nanoseconds

    def retrying(self, item: object, exception: BaseException, attempt: int) -> None:
        """``item`` failed on ``attempt`` and will be tried again."""
        self.retried += 1

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
        arrived: items handed to it (by the source or the stage before).
        received: items its workers took from the input queue.
        completed: items whose ``process()`` returned.
        emitted: outputs it produced.
        dropped: completed items that produced no output (filtered out).
        failed: dead letters (items given up under ``on_error="skip"``).
        retried: retry attempts made.
        not_processed: items left unfinished by a cancellation or an error.
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
    ) -> StageReport:
        """Sum the recorders of one stage's workers."""
        completed = sum(r.completed for r in recorders)
        failed = sum(r.failed for r in recorders)
        return cls(
            name=name,
            workers=len(recorders),
            arrived=arrived,
            received=sum(r.received for r in recorders),
            completed=completed,
            emitted=sum(r.emitted for r in recorders),
            dropped=sum(r.dropped for r in recorders),
            failed=failed,
            retried=sum(r.retried for r in recorders),
            not_processed=arrived - completed - failed,
            busy_seconds=sum(r.busy_ns for r in recorders) / 1e9,
            queue=queue,
        )

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
        items_read: items read from the source.
        outputs: items delivered to the caller.
        dropped: items filtered out, summed over stages.
        failed: dead letters, summed over stages.
        not_processed: items left unfinished, summed over stages, plus outputs
            produced but not delivered to the caller.
        created: net items added by fan-out and fan-in stages (see the module
            docs); zero for one-to-one pipelines.
        stages: one :class:`StageReport` per stage, in order.
        dead_letters: every :class:`DeadLetter`, in no particular order.
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

    @property
    def balanced(self) -> bool:
        """Whether ``items_read + created == outputs + dropped + failed + not_processed``.

        Always true for a report the library made; exposed so tests and
        monitoring can say so.
        """
        accounted = self.outputs + self.dropped + self.failed + self.not_processed
        return self.items_read + self.created == accounted

    @property
    def processed(self) -> int:
        """Items whose journey ended: outputs, dropped and failed."""
        return self.outputs + self.dropped + self.failed

    def summary(self) -> str:
        """Return the verification report and a per-stage table, as text.

        The first block is the seed's report (Expected / Processed / Success /
        Failed); the table has one row per stage.
        """
        lines = [
            "=== VERIFICATION REPORT ===",
            f"Expected: {self.items_read}",
            f"Processed: {self.processed}",
            f"Success: {self.outputs}",
            f"Failed: {self.failed}",
        ]
        if self.dropped:
            lines.append(f"Dropped: {self.dropped}")
        if self.not_processed:
            lines.append(f"Not processed: {self.not_processed}")
        if self.created:
            lines.append(f"Created by fan-out/fan-in stages: {self.created:+d}")
        lines.append(f"Status: {self.status} in {self.elapsed_seconds:.3f}s")
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
            "elapsed_seconds": round(self.elapsed_seconds, 6),
            "items_read": self.items_read,
            "outputs": self.outputs,
            "processed": self.processed,
            "dropped": self.dropped,
            "failed": self.failed,
            "not_processed": self.not_processed,
            "created": self.created,
            "balanced": self.balanced,
            "stages": [s.to_dict() for s in self.stages],
            "dead_letters": [d.to_dict() for d in self.dead_letters],
        }
