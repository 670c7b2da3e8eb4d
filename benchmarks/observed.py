"""What watching a run costs: live progress and the timeline on, against the same run with them off.

``observed``
    The throughput pipeline (integers through double, add 10, keep even,
    one worker each) with a :class:`~pipeline.Progress` (drawing into memory,
    a look every 0.1 s) and a :class:`~pipeline.TraceFile` on, against the
    same run without them (floor 0.9x); and the I/O benchmark's shape
    (sleeping stages of 3 and 2 workers, one item per batch: the most events
    per second of work) with them on, against off (floor: within 2%).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from time import perf_counter
from typing import Any

from pipeline import Observer, Pipeline, Progress, TraceFile

from .baselines import MigrationShape, add10, double, is_even
from .harness import Config, Row, ScenarioResult, compare, interleave, median, paired_ratio

__all__ = ["observed"]


def _watchers(directory: str) -> list[Observer]:
    trace = TraceFile(os.path.join(directory, "trace.json"))
    return [Progress(0.1, stream=io.StringIO(), rich=False), trace]


def observed(config: Config) -> ScenarioResult:
    """Progress and trace on against off, for trivial stages and for sleeping ones."""
    n = 20_000 if config.quick else 1_000_000
    io_n = 40 if config.quick else 300
    shape = MigrationShape(io_n)

    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as directory:

        def trivial(*, watched: bool) -> Callable[[], float]:
            def run() -> float:
                pipeline = Pipeline[int]().map(double).map(add10).filter(is_even)
                watchers = _watchers(directory) if watched else []
                started = perf_counter()
                out = pipeline.run(range(n), observers=watchers).outputs
                seconds = perf_counter() - started
                if len(out) != n:
                    raise RuntimeError(f"{len(out)} outputs instead of {n}")
                return n / seconds

            return run

        def sleeping(*, watched: bool) -> Callable[[], float]:
            def run() -> float:
                pipeline = (
                    Pipeline[int]()
                    .map(shape.copy_to_s3, workers=shape.workers_a)
                    .map(shape.upload_to_api, workers=shape.workers_b)
                )
                watchers = _watchers(directory) if watched else []
                started = perf_counter()
                out = pipeline.run(range(io_n), observers=watchers).outputs
                seconds = perf_counter() - started
                if out != list(range(io_n)):
                    raise RuntimeError("wrong outputs")
                return seconds

            return run

        names = {
            "throughput, watched": trivial(watched=True),
            "throughput, not watched": trivial(watched=False),
            "io_bound, watched": sleeping(watched=True),
            "io_bound, not watched": sleeping(watched=False),
        }
        samples = interleave(names, config.repeat)
    value = {name: median(values) for name, values in samples.items()}
    s = "observed"

    def vs(name: str, base: str, unit: str, **options: Any) -> Row:
        ratio = paired_ratio(samples[name], samples[base])
        return compare(s, name, value[name], unit, base, value[base], ratio=ratio, **options)

    rows = [
        Row(
            s,
            "throughput, not watched",
            value["throughput, not watched"],
            "items/s",
            kind="base",
            note=f"{n:,} items; progress every 0.1 s and a trace file",
        ),
        vs("throughput, watched", "throughput, not watched", "items/s", kind="floor", floor=0.9),
        Row(
            s,
            "io_bound, not watched",
            value["io_bound, not watched"],
            "s",
            kind="base",
            note=f"{io_n} items, one per batch: an event per item",
        ),
        vs(
            "io_bound, watched",
            "io_bound, not watched",
            "s",
            kind="floor",
            floor=1.02,
            higher_is_better=False,
        ),
    ]
    return ScenarioResult(rows, samples)
