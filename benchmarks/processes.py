"""CPU-bound stages: worker processes against one thread, joblib and ProcessPoolExecutor.

Two scenarios, each measured side by side in the same rounds:

``cpu_bound``
    200 items of about 5 ms of pure-Python work each. ``executor="process"``
    with 2 workers against the same stage on 1 thread worker (floor 1.8x),
    joblib's loky backend and ``ProcessPoolExecutor.map`` (floor: at least
    as fast). On a free-threaded build, 2 thread workers against 1 (floor
    1.8x). The first process run of the program, which starts the fork
    server, is shown on its own row: start-up stays visible.
``process_cheap``
    100,000 items of about 50 µs each: the per-batch cost of pickling and of
    the round trip, against ``ProcessPoolExecutor.map`` with the better of
    two chunk sizes (floor 0.8x).

Each process-based variant starts its processes inside the timed region
(the fork server itself is started once, by the warm-up), and every pool
uses the ``forkserver`` start method, as the library does, so that no one
forks a process that runs threads.

The work is a fixed amount of computation, calibrated once per run, not a
timed spin: two processes on two cores only halve it if they really run at
once.
"""

from __future__ import annotations

import importlib
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from time import perf_counter
from typing import Any, Final

from pipeline import Pipeline

from .harness import Config, Row, ScenarioResult, compare, interleave, median, paired_ratio

__all__ = ["cpu_bound", "process_cheap"]

_LOOPS: dict[float, int] = {}  # seconds of work -> loop count, calibrated here


def spin(loops: int) -> int:
    """Pure-Python work: ``loops`` iterations of integer arithmetic."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def _calibrate(seconds: float) -> int:
    # The loop count that takes about `seconds` here (best of a few tries).
    if seconds not in _LOOPS:
        loops = 10_000
        best = min(_time(spin, loops) for _ in range(5))
        _LOOPS[seconds] = max(1, round(loops * seconds / best))
    return _LOOPS[seconds]


def _time(fn: Callable[[int], object], arg: int) -> float:
    started = perf_counter()
    fn(arg)
    return perf_counter() - started


def _context() -> Any:
    return multiprocessing.get_context("forkserver")


def _seconds(run: Callable[[], list[int]], expected: list[int]) -> Callable[[], float]:
    def timed() -> float:
        started = perf_counter()
        out = run()
        seconds = perf_counter() - started
        if out != expected:
            raise RuntimeError("wrong outputs")
        return seconds

    return timed


def _measure(
    variants: dict[str, Callable[[], list[int]]], expected: list[int], config: Config
) -> dict[str, list[float]]:
    # Seconds per variant, interleaved round by round, each warmed up once.
    timed = {name: _seconds(run, expected) for name, run in variants.items()}
    return interleave(timed, config.repeat, warmups=timed)


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _variants(items: list[int], chunksizes: tuple[int, ...]) -> dict[str, Callable[[], list[int]]]:
    variants: dict[str, Callable[[], list[int]]] = {
        "1 thread worker": lambda: Pipeline[int]().map(spin).run(items).outputs,
        "process w=2": lambda: (
            Pipeline[int]().map(spin, workers=2, executor="process").run(items).outputs
        ),
    }
    for chunksize in chunksizes:

        def pool_map(chunksize: int = chunksize) -> list[int]:
            with ProcessPoolExecutor(2, mp_context=_context()) as pool:
                return list(pool.map(spin, items, chunksize=chunksize))

        variants[f"ProcessPoolExecutor.map chunksize={chunksize}"] = pool_map
    return variants


def cpu_bound(config: Config) -> ScenarioResult:
    """About 5 ms of pure-Python work per item: processes against a thread and the peers."""
    n = 40 if config.quick else 200
    items = [_calibrate(0.005)] * n
    expected = [spin(items[0])] * n
    s = "cpu_bound"
    unit = "s"

    first = perf_counter()  # the program's first process run: starts the fork server
    Pipeline[int]().map(spin, workers=2, executor="process").run(items[:2])
    cold = perf_counter() - first

    variants = _variants(items, (1,))
    try:
        joblib: Any = importlib.import_module("joblib")  # an optional peer
    except ImportError:
        joblib = None
    if joblib is not None:
        parallel = joblib.Parallel(n_jobs=2, backend="loky")
        variants["joblib loky n_jobs=2"] = lambda: list(
            parallel(joblib.delayed(spin)(x) for x in items)
        )
    if not _gil_enabled():
        variants["thread w=2"] = lambda: Pipeline[int]().map(spin, workers=2).run(items).outputs
    samples = _measure(variants, expected, config)
    took = {name: median(values) for name, values in samples.items()}
    base = "1 thread worker"
    ours = "process w=2"

    def vs(name: str, baseline: str, **options: Any) -> Row:
        # Speed is the inverse of time: the ratio is baseline time over ours.
        ratio = paired_ratio(samples[baseline], samples[name])
        return compare(s, name, took[name], unit, baseline, took[baseline], ratio=ratio, **options)

    rows = [
        Row(
            s, base, took[base], unit, kind="base", note=f"{n} items of ~5 ms; ratios are speed-ups"
        ),
        vs(ours, base, kind="floor", floor=1.8),
        vs(ours, "ProcessPoolExecutor.map chunksize=1", kind="floor", floor=1.0),
        Row(s, "first process run of the program", cold, unit, note="starts the fork server"),
    ]
    if joblib is not None:
        rows.append(vs(ours, "joblib loky n_jobs=2", kind="floor", floor=1.0))
    else:
        rows.append(Row(s, "joblib loky", None, unit, kind="skip", note="joblib not installed"))
    if not _gil_enabled():
        rows.append(vs("thread w=2", base, kind="floor", floor=1.8, note="free-threaded build"))
    else:
        rows.append(Row(s, "thread w=2", None, unit, kind="skip", note="the GIL is enabled"))
    return ScenarioResult(rows, samples)


CHEAP_CHUNKSIZES: Final = (100, 1000)


def process_cheap(config: Config) -> ScenarioResult:
    """About 50 µs per item: what a batch's trip to a process costs, against the pool's map."""
    n = 4_000 if config.quick else 100_000
    items = [_calibrate(0.00005)] * n
    expected = [spin(items[0])] * n
    s = "process_cheap"
    unit = "s"
    variants = _variants(items, CHEAP_CHUNKSIZES)
    del variants["1 thread worker"]
    samples = _measure(variants, expected, config)
    took = {name: median(values) for name, values in samples.items()}
    pools = [f"ProcessPoolExecutor.map chunksize={c}" for c in CHEAP_CHUNKSIZES]
    best = min(pools, key=lambda name: took[name])
    ours = "process w=2"
    rows = [
        Row(s, name, took[name], unit, kind="base" if name == best else "info") for name in pools
    ]
    rows.append(
        compare(
            s,
            ours,
            took[ours],
            unit,
            best,
            took[best],
            ratio=paired_ratio(samples[best], samples[ours]),
            kind="floor",
            floor=0.8,
            note=f"{n:,} items of ~50 µs; ratio is the pool's time over ours",
        )
    )
    return ScenarioResult(rows, samples)
