"""Stages on a Dask cluster: batches in flight on a local cluster, against the ideal and threads.

Two scenarios, each on a ``LocalCluster`` of worker processes that it starts
once, outside the timed region (its start-up is shown on a row of its own),
and warms up with a short run before the measured rounds:

``dask_io``
    8,000 items of ``time.sleep(0.01)`` with ``workers=8`` (8 batches in
    flight) on 2 worker processes of 4 threads each. Floor: at least 0.85 of
    the ideal rate, workers / 10 ms = 800 items/s. The same stage on 8 thread
    workers of this process is shown beside it, against the same ideal and
    not checked: how late the machine wakes a 10 ms sleep.
``dask_cpu``
    4,000 items of about 4 ms of pure-Python work with ``workers=4`` on 2
    worker processes of 1 thread each, against the same stage on 1 thread
    worker (floor 1.7x). ``ProcessPoolExecutor.map`` on 2 processes,
    against the same thread, shows what the machine allows (not checked;
    its processes start in the timed region, as in ``cpu_bound``).

Below each floor, rows (not checked) say where the time went: each variant's
time in ``process()`` per item against the work's nominal time (what the
machine costs: late wake-ups, cores taken by others), and the share of the
cluster's thread time that the Dask stage spent in ``process()`` (what the
library and Dask cost: a round trip per batch, the first batch of each worker,
which holds one item, and the tail).

The module is named ``cluster``, not ``dask``, so that nothing here can pass
for the ``dask`` package. Its stages are module-level classes: the cluster's
worker processes import them (``cloudpickle`` sends them by reference), so the
repository root must be on their ``sys.path``, as it is when the suite runs
with ``python -m benchmarks`` from there (spawned workers inherit it).
Without ``distributed`` both scenarios print one skipped row.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from time import perf_counter
from typing import Any, Final

from pipeline import Pipeline, PipelineReport, PipelineStage, RunResult

from .harness import Config, Row, ScenarioResult, compare, interleave, median, paired_ratio
from .processes import _calibrate, _context, spin

__all__ = ["Sleep", "Spin", "dask_cpu", "dask_io", "load_distributed"]

DISTRIBUTED_MISSING: Final = "distributed is not installed (pip install .[dask])"

SLEEP_SECONDS: Final = 0.01
"""What an item of ``dask_io`` waits for: a call to a service."""

SPIN_SECONDS: Final = 0.004
"""What an item of ``dask_cpu`` computes for, as calibrated here."""

PROCESSES: Final = 2
"""The worker processes of each scenario's cluster."""

IO_WORKERS: Final = 8  # batches in flight, on PROCESSES x IO_THREADS cluster threads
IO_THREADS: Final = 4
CPU_WORKERS: Final = 4  # batches in flight, on PROCESSES x 1 cluster thread
POOL_CHUNKSIZE: Final = 25  # about 0.1 s of dask_cpu's work per chunk


class Sleep(PipelineStage[int]):
    """Wait :data:`SLEEP_SECONDS` per item and pass it on: an I/O-bound stage."""

    def process(self, item: int) -> int:
        """Sleep, then return ``item``."""
        time.sleep(SLEEP_SECONDS)
        return item


class Spin(PipelineStage[int]):
    """Pure-Python work: each item is a loop count, and ``spin(item)`` comes out."""

    def process(self, item: int) -> int:
        """Run ``item`` loops of integer arithmetic."""
        return spin(item)


def load_distributed() -> Any | None:
    """Import ``distributed``, or return ``None`` if it is not installed."""
    try:
        return importlib.import_module("distributed")
    except ImportError:
        return None


@contextlib.contextmanager
def _local_cluster(distributed: Any, *, threads: int) -> Iterator[tuple[Any, float]]:
    # A client of a LocalCluster of PROCESSES worker processes of `threads`
    # threads each, and the seconds its start took.
    # distributed's API is only partly typed: the cluster and client are Any.
    import dask

    started = perf_counter()
    # Each worker's statistical profiler wakes every 10 ms to sample every
    # thread's stack, holding the GIL meanwhile, so 10 ms sleeps wake late:
    # dask_io (6,000 items) made 0.82 of the ideal with it on, 0.86 off. The
    # nannies, created inside the block, hand this config to their workers.
    # What the profiler shows is of no use here: every task is a batch.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = distributed.LocalCluster(
            n_workers=PROCESSES,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            # The scheduler's HTTP server (health, metrics; a dashboard only with
            # bokeh) on a free loopback port: None would still take 8787, which
            # another cluster may hold, and then the cluster does not start.
            dashboard_address="127.0.0.1:0",
        )
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(PROCESSES)
            yield client, perf_counter() - started
        finally:
            client.close()
    finally:
        cluster.close()


Run = Callable[[list[int]], RunResult[int] | list[int]]  # a pipeline's run, or a peer's outputs


def _measure(
    variants: dict[str, Run],
    items: list[int],
    expected: list[int],
    warmup: int,
    config: Config,
) -> tuple[dict[str, list[float]], dict[str, list[PipelineReport]]]:
    # Seconds per variant, interleaved round by round, after one warm-up run
    # of each on the first `warmup` items (which imports the stage on the
    # cluster's workers and brings them to full-size batches); and each
    # pipeline's report of each measured round. Outputs are checked, untimed.
    reports: dict[str, list[PipelineReport]] = {name: [] for name in variants}

    def timed(name: str, count: int) -> float:
        started = perf_counter()
        result = variants[name](items[:count])
        seconds = perf_counter() - started
        outputs = result.outputs if isinstance(result, RunResult) else result
        if outputs != expected[:count]:
            raise RuntimeError(f"{name}: wrong outputs")
        if isinstance(result, RunResult) and count == len(items):
            reports[name].append(result.report)
        return seconds

    samples = interleave(
        {name: partial(timed, name, len(items)) for name in variants},
        config.repeat,
        warmups={name: partial(timed, name, warmup) for name in variants},
    )
    return samples, reports


def _in_task_rows(
    scenario: str, reports: dict[str, list[PipelineReport]], nominal_ms: float, threads: int
) -> list[Row]:
    # Where the time went, from the reports of the measured rounds: each
    # variant's time in process() per item against the work's nominal time
    # (the machine's share: a late wake-up, a core taken by someone else),
    # and for the Dask stage the share of the cluster's thread time spent in
    # process() (the library's and Dask's share: the round trip of each
    # batch, the first batch of each worker, which holds one item, and the
    # tail, when fewer batches than threads are left).
    rows = []
    reports = {name: runs for name, runs in reports.items() if runs}
    for name, runs in reports.items():
        per_item = median([1000 * r.stages[0].busy_seconds / r.stages[0].completed for r in runs])
        rows.append(
            compare(
                scenario,
                f"{name}: per item in process()",
                per_item,
                "ms",
                "nominal",
                nominal_ms,
                higher_is_better=False,
            )
        )
    for name, runs in reports.items():
        if runs[0].stages[0].executor == "thread":
            continue
        busy = median([r.stages[0].busy_seconds / (threads * r.elapsed_seconds) for r in runs])
        rows.append(
            Row(
                scenario,
                f"{name}: cluster threads busy",
                busy,
                "",
                note=f"time in process() over {threads} cluster threads x the run's wall time; "
                "the rest: round trips, each worker's first batch (one item), the tail",
            )
        )
    return rows


def _skipped(scenario: str, name: str, unit: str) -> ScenarioResult:
    return ScenarioResult([Row(scenario, name, None, unit, kind="skip", note=DISTRIBUTED_MISSING)])


def dask_io(config: Config) -> ScenarioResult:
    """10 ms sleeps, 8 batches in flight on 2 processes of 4 threads: the rate against the ideal."""
    s, unit, ours = "dask_io", "items/s", f"Dask w={IO_WORKERS}"
    distributed = load_distributed()
    if distributed is None:
        return _skipped(s, ours, unit)
    n = 400 if config.quick else 8_000
    items = list(range(n))
    threads = f"{IO_WORKERS} thread workers"
    ideal = IO_WORKERS / SLEEP_SECONDS
    with _local_cluster(distributed, threads=IO_THREADS) as (client, start_seconds):
        variants: dict[str, Run] = {
            ours: Pipeline[int]().add(Sleep(), workers=IO_WORKERS, executor=client).run,
            threads: Pipeline[int]().add(Sleep(), workers=IO_WORKERS).run,
        }
        seconds, reports = _measure(variants, items, items, n // 10, config)
    samples = {name: [n / t for t in values] for name, values in seconds.items()}
    rate = {name: median(values) for name, values in samples.items()}
    base = f"ideal ({IO_WORKERS} / {SLEEP_SECONDS * 1000:g} ms)"

    def vs(name: str, baseline: str, baseline_rate: float, **options: Any) -> Row:
        return compare(s, name, rate[name], unit, baseline, baseline_rate, **options)

    rows = [
        vs(
            ours,
            base,
            ideal,
            kind="floor",
            floor=0.85,
            note=f"{n:,} items of time.sleep({SLEEP_SECONDS:g}) on {PROCESSES} worker processes "
            f"x {IO_THREADS} threads, their profiler off; ratio = rate / ideal",
        ),
        vs(threads, base, ideal, note="the same stage in this process: context, not checked"),
        vs(ours, threads, rate[threads], ratio=paired_ratio(samples[ours], samples[threads])),
        *_in_task_rows(s, reports, SLEEP_SECONDS * 1000, threads=PROCESSES * IO_THREADS),
        Row(s, "LocalCluster start", start_seconds, "s", note="not in the timed runs"),
    ]
    return ScenarioResult(rows, samples)


def dask_cpu(config: Config) -> ScenarioResult:
    """About 4 ms of pure-Python work per item: 4 batches in flight on 2 processes vs 1 thread."""
    s, unit, ours = "dask_cpu", "s", f"Dask w={CPU_WORKERS}"
    distributed = load_distributed()
    if distributed is None:
        return _skipped(s, ours, unit)
    n = 100 if config.quick else 4_000
    items = [_calibrate(SPIN_SECONDS)] * n
    expected = [spin(items[0])] * n
    base = "1 thread worker"
    pool = f"ProcessPoolExecutor({PROCESSES}).map"

    def pool_map(batch: list[int]) -> list[int]:
        # The machine's ceiling for PROCESSES processes: no library, no cluster.
        with ProcessPoolExecutor(PROCESSES, mp_context=_context()) as executor:
            return list(executor.map(spin, batch, chunksize=POOL_CHUNKSIZE))

    with _local_cluster(distributed, threads=1) as (client, start_seconds):
        variants: dict[str, Run] = {
            ours: Pipeline[int]().add(Spin(), workers=CPU_WORKERS, executor=client).run,
            base: Pipeline[int]().add(Spin()).run,
            pool: pool_map,
        }
        samples, reports = _measure(variants, items, expected, n // 10, config)
    took = {name: median(values) for name, values in samples.items()}

    def vs(name: str, baseline: str, **options: Any) -> Row:
        # Speed is the inverse of time: the ratio is the baseline's time over ours.
        ratio = paired_ratio(samples[baseline], samples[name])
        return compare(s, name, took[name], unit, baseline, took[baseline], ratio=ratio, **options)

    rows = [
        Row(
            s,
            base,
            took[base],
            unit,
            kind="base",
            note=f"{n:,} items of ~{SPIN_SECONDS * 1000:g} ms; ratios are speed-ups",
        ),
        vs(ours, base, kind="floor", floor=1.7, note=f"on {PROCESSES} worker processes x 1 thread"),
        vs(pool, base, note="the machine's ceiling, no library and no cluster: not checked"),
        vs(ours, pool),
        *_in_task_rows(s, reports, SPIN_SECONDS * 1000, threads=PROCESSES),
        Row(s, "LocalCluster start", start_seconds, "s", note="not in the timed runs"),
    ]
    return ScenarioResult(rows, samples)
