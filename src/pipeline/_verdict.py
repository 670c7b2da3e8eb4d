"""The report's reading of a run: which stage held it back, on what evidence, and what to change.

Every figure used is counted during the run (see :mod:`pipeline._report`):
per stage, the time its workers spent in ``process()`` (busy), waiting for
input (starved) and waiting for room downstream (blocked), and for thread
stages the CPU time of its workers. Over the wall time and the number of
workers, those are fractions of what the stage could have done:

- a stage busy most of the time is the bottleneck; the stage before it then
  spends its time blocked on it, and the one after it starved. A Dask
  stage's time with a batch out on the cluster counts as busy, the cluster's
  cost per task included: when that cost is most of it, bigger batches help
  more than more workers;
- a thread stage whose workers burn about a core of CPU between them, on a
  Python with the GIL, is CPU-bound: more threads cannot help, worker
  processes can;
- when no stage is busy and the first one waits for input, the source is
  what is slow.

A run too short to tell (under :data:`MIN_SECONDS`), or that read nothing,
gets no verdict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._report import StageReport

__all__ = ["MIN_SECONDS", "Verdict", "capacity", "judge"]

MIN_SECONDS = 0.05
"""A run shorter than this gets no verdict: start-up would dominate its figures."""

BUSY = 0.6  # a stage busy this share of its workers' time or more is saturated
CPU_BOUND_CORES = 0.5  # a thread stage burning this many cores on a GIL is CPU-bound
WAITING = 0.2  # a neighbour waiting this share of its time or more is evidence

VerdictKind = Literal["stage", "cpu-bound", "source", "consumer", "none"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What held a run back, the evidence, and one sentence of advice.

    >>> import time
    >>> from pipeline import Pipeline
    >>> report = (
    ...     Pipeline[int]()
    ...     .map(lambda x: x, name="fast")
    ...     .map(lambda x: time.sleep(0.005) or x, name="slow")
    ...     .run(range(30))
    ...     .report
    ... )
    >>> report.verdict.kind, report.verdict.stage
    ('stage', 'slow')

    Attributes:
        kind: ``"stage"`` (a saturated stage), ``"cpu-bound"`` (a thread
            stage held by the GIL), ``"source"`` (the stages wait for
            input), ``"consumer"`` (the last stage waits for the consumer),
            or ``"none"`` (nothing is saturated).
        stage: the stage named, or ``None`` for the source, the consumer or none.
        evidence: the figures that say so, as a sentence.
        advice: what to change, as a sentence.
    """

    kind: VerdictKind
    stage: str | None
    evidence: str
    advice: str

    def __str__(self) -> str:
        return f"{self.evidence}: {self.advice}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "kind": self.kind,
            "stage": self.stage,
            "evidence": self.evidence,
            "advice": self.advice,
        }


def judge(
    stages: Sequence[StageReport], elapsed: float, items_read: int, *, gil_enabled: bool
) -> Verdict | None:
    """The verdict on a run's stages, or ``None`` when the run is too short to tell."""
    if not stages or elapsed < MIN_SECONDS or items_read == 0:
        return None
    machine = os.cpu_count() or 1
    if gil_enabled and machine > 1:
        # Under the GIL a CPU-bound thread stage may not even look busy: its
        # workers, and the threads feeding it, queue for the GIL instead.
        cores, heavy = max((_cores(s, elapsed), s.name) for s in stages)
        if cores >= CPU_BOUND_CORES:
            return Verdict(
                "cpu-bound",
                heavy,
                f"stage `{heavy}` is CPU-bound on threads (busy {cores:.1f} core "
                f"of {machine}, under the GIL)",
                'use executor="process" so that each worker gets a core',
            )
    top = max(stages, key=lambda s: _occupied(s, elapsed))
    if _occupied(top, elapsed) >= BUSY:
        return _saturated(stages, top, elapsed, machine)
    first, last = stages[0], stages[-1]
    starved = _share(first.starved_seconds, first, elapsed)
    if starved >= 1 - BUSY:
        return Verdict(
            "source",
            None,
            f"no stage is saturated, and `{first.name}` waits for input {starved:.0%} of its time",
            "the source is the bottleneck: make reading it faster",
        )
    blocked = _share(last.blocked_seconds, last, elapsed)
    if blocked >= 1 - BUSY:
        return Verdict(
            "consumer",
            None,
            f"no stage is saturated, and `{last.name}` waits for the consumer "
            f"{blocked:.0%} of its time",
            "the code reading the outputs is the bottleneck",
        )
    return Verdict(
        "none",
        None,
        f"no stage is saturated (the busiest, `{top.name}`, is {_occupied(top, elapsed):.0%} busy)",
        "nothing to change in the pipeline",
    )


def _saturated(
    stages: Sequence[StageReport], top: StageReport, elapsed: float, machine: int
) -> Verdict:
    occupied = _occupied(top, elapsed)
    evidence = f"stage `{top.name}` is {occupied:.0%} busy with {_workers(top.workers)}"
    if top.dispatch_seconds > top.busy_seconds:
        share = top.dispatch_seconds / (top.dispatch_seconds + top.busy_seconds)
        evidence += f", {share:.0%} of it the Dask cluster's cost per task"
    index = stages.index(top)
    if index > 0:
        before = stages[index - 1]
        blocked = _share(before.blocked_seconds, before, elapsed)
        if blocked >= WAITING:
            evidence += f" while `{before.name}` spends {blocked:.0%} of its time blocked on it"
    if index + 1 < len(stages):
        after = stages[index + 1]
        starved = _share(after.starved_seconds, after, elapsed)
        if starved >= WAITING:
            evidence += f", and `{after.name}` waits for it {starved:.0%} of its time"
    if top.dispatch_seconds > top.busy_seconds:
        advice = (
            f"send `{top.name}` bigger batches (a larger maxsize: a batch is what waits in "
            "its queue; or Dask(..., batch_size=N)), or give it more workers"
        )
    elif top.executor == "process" and top.workers >= machine:
        advice = f"its workers have every core of the machine: make `{top.name}` cheaper"
    else:
        advice = f"give `{top.name}` more workers"
    return Verdict("stage", top.name, evidence, advice)


def _occupied(stage: StageReport, elapsed: float) -> float:
    # The share of its workers' time a stage had work in hand: in process(),
    # or (a Dask stage) out on the cluster on its way there and back.
    return (stage.busy_seconds + stage.dispatch_seconds) / capacity(stage, elapsed)


def _cores(stage: StageReport, elapsed: float) -> float:
    # The cores a thread stage's workers kept busy, on average, while they
    # were up. Half a core is enough to call it CPU-bound: under the GIL the
    # rest of the program gets what is left, and on a loaded machine a
    # CPU-bound stage gets less than a core anyway.
    if stage.executor != "thread" or stage.cpu_seconds is None:
        return 0.0
    lifetime = stage.active_seconds / stage.workers if stage.active_seconds > 0 else elapsed
    return stage.cpu_seconds / lifetime


def _share(seconds: float, stage: StageReport, elapsed: float) -> float:
    # A stage's time (summed over its workers) as a share of what they had.
    return seconds / capacity(stage, elapsed)


def capacity(stage: StageReport, elapsed: float) -> float:
    """The seconds a stage's workers had, summed: ready to end, or the wall time if none was."""
    return stage.active_seconds if stage.active_seconds > 0 else stage.workers * elapsed


def _workers(n: int) -> str:
    return "1 worker" if n == 1 else f"{n} workers"
