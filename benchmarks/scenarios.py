"""The scenarios, each with its variants, its rows and its floors.

The two CPU-bound scenarios are in :mod:`benchmarks.processes`, the two on a
Dask cluster in :mod:`benchmarks.cluster`.

Every scenario takes a :class:`~benchmarks.harness.Config` and returns a
:class:`~benchmarks.harness.ScenarioResult`. Variants of one scenario are
measured with :func:`~benchmarks.harness.interleave` in the same rounds of the
same run; a figure is a median over the rounds and a ratio is the median of
the per-round ratios (:func:`~benchmarks.harness.paired_ratio`).

The slow baselines of the throughput scenario move fewer items, so that one
full run stays within a few minutes: the hand-written ``queue.Queue`` pipeline
(some 50 times slower per item than the plain loop) a twentieth, pypeln (some
250 times slower) a hundredth. They are compared by rate (items per second).
"""

from __future__ import annotations

import gc
import json
import math
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sized
from statistics import quantiles
from time import perf_counter, perf_counter_ns
from typing import Any, Final

from pipeline import Pipeline, SafeQueue
from pipeline.stages import AddStage, FilterStage, MultiplyStage

from .baselines import (
    MAXSIZE,
    PYPELN_MISSING,
    HandStage,
    MigrationShape,
    QueueRoundTrip,
    add10,
    arithmetic_stages,
    bare_threads,
    double,
    identity,
    is_even,
    load_pypeln,
    pypeln_pipeline,
    queue_pipeline,
    sequential,
)
from .cluster import dask_cpu, dask_io
from .harness import (
    ROOT,
    Config,
    Row,
    ScenarioResult,
    compare,
    interleave,
    median,
    paired_ratio,
)
from .migration import migration, s3_copy
from .observed import observed
from .processes import cpu_bound, process_cheap

__all__ = [
    "SCENARIOS",
    "io_bound",
    "latency",
    "memory",
    "safequeue",
    "start_stop",
    "throughput",
]

WARMUP_ITEMS: Final = 2_000

STALL_SECONDS: Final = 2.0
"""A latency round trip without an answer for this long counts as a stall."""


def _timed_rate(run: Callable[[int], Sized], size: int) -> float:
    """Run ``run(size)``; return items per second, after checking the output count.

    Every item passes (2x + 10 is always even), so ``size`` outputs are due.
    """
    started = perf_counter()
    out = run(size)
    seconds = perf_counter() - started
    if len(out) != size:
        raise RuntimeError(f"{len(out)} outputs instead of {size}")
    return size / seconds


# -- 1. throughput ---------------------------------------------------------------------


def _library(workers: int, *, ordered: bool = True) -> Callable[[int], list[int]]:
    def run(size: int) -> list[int]:
        return (
            Pipeline[int]()
            .map(double, workers=workers, ordered=ordered)
            .map(add10, workers=workers, ordered=ordered)
            .filter(is_even, workers=workers, ordered=ordered)
            .run(range(size))
            .outputs
        )

    return run


def _library_classes(size: int) -> list[int]:
    pipeline = Pipeline[int]().add(MultiplyStage()).add(AddStage()).add(FilterStage())
    return pipeline.run(range(size)).outputs


def _hand(workers: int) -> Callable[[int], list[int]]:
    stages = arithmetic_stages(workers)

    def run(size: int) -> list[int]:
        return queue_pipeline(range(size), stages)

    return run


def throughput(config: Config) -> ScenarioResult:
    """Integers through double, add 10, keep even: the library against the baselines."""
    n = 20_000 if config.quick else 1_000_000
    slow_n = max(1_000, n // 20)  # the hand-written queue.Queue pipeline
    slowest_n = max(1_000, n // 100)  # pypeln
    pl = load_pypeln()

    sized: dict[str, tuple[Callable[[int], Sized], int]] = {
        "sequential loop": (lambda size: sequential(range(size)), n),
        "pipeline w=1": (_library(1), n),
        "queue.Queue pipeline w=1": (_hand(1), slow_n),
        "pipeline w=4": (_library(4), n),
        "queue.Queue pipeline w=4": (_hand(4), slow_n),
        "pipeline w=4 unordered": (_library(4, ordered=False), n),
        "pipeline stage classes w=1": (_library_classes, n),
    }
    if pl is not None:
        sized["pypeln w=1"] = (lambda size: pypeln_pipeline(pl, range(size), 1), slowest_n)
        sized["pypeln w=4"] = (lambda size: pypeln_pipeline(pl, range(size), 4), slowest_n)

    def variant(run: Callable[[int], Sized], size: int) -> Callable[[], float]:
        return lambda: _timed_rate(run, size)

    def warmup(run: Callable[[int], Sized]) -> Callable[[], float]:
        return lambda: _timed_rate(run, WARMUP_ITEMS)

    samples = interleave(
        {name: variant(run, size) for name, (run, size) in sized.items()},
        config.repeat,
        warmups={name: warmup(run) for name, (run, _) in sized.items()},
    )
    rate = {name: median(values) for name, values in samples.items()}
    unit = "items/s"
    s = "throughput"
    seq = "sequential loop"
    slow_note = f"moves {slow_n:,} items (1/20 of {n:,}); compared by rate"
    slowest_note = f"moves {slowest_n:,} items (1/100 of {n:,}); compared by rate"

    def vs(name: str, base: str, **options: Any) -> Row:
        ratio = paired_ratio(samples[name], samples[base])
        return compare(s, name, rate[name], unit, base, rate[base], ratio=ratio, **options)

    rows = [
        Row(s, seq, rate[seq], unit, kind="base", note=f"{n:,} items"),
        vs("queue.Queue pipeline w=1", seq, note=slow_note),
        vs("queue.Queue pipeline w=4", seq),
    ]
    if pl is not None:
        rows += [vs("pypeln w=1", seq, note=slowest_note), vs("pypeln w=4", seq)]
    rows += [
        vs("pipeline w=1", seq, kind="floor", floor=0.5),
        vs("pipeline w=1", "queue.Queue pipeline w=1", kind="expect", floor=15.0),
    ]
    if pl is not None:
        rows.append(vs("pipeline w=1", "pypeln w=1"))
    rows += [
        vs("pipeline w=4", seq, kind="floor", floor=0.25),
        vs("pipeline w=4", "queue.Queue pipeline w=4"),
    ]
    if pl is not None:
        rows.append(vs("pipeline w=4", "pypeln w=4"))
    rows += [
        vs("pipeline w=4 unordered", seq),
        vs("pipeline stage classes w=1", seq, note="MultiplyStage, AddStage, FilterStage"),
    ]
    if pl is None:
        rows.append(Row(s, "pypeln w=1, w=4", None, unit, kind="skip", note=PYPELN_MISSING))
    return ScenarioResult(rows, samples)


# -- 2. safequeue ------------------------------------------------------------------------


def _transfer(producer: Callable[[], None], consumer: Callable[[], None]) -> float:
    """Run one producer thread and one consumer thread; return the seconds both took."""
    threads = [
        threading.Thread(target=producer, name="bench-producer"),
        threading.Thread(target=consumer, name="bench-consumer"),
    ]
    started = perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return perf_counter() - started


def _single_items(make: Callable[[], queue.Queue[int] | SafeQueue[int]], n: int) -> float:
    q = make()
    items = list(range(n))

    def producer() -> None:
        for item in items:
            q.put(item)

    def consumer() -> None:
        for _ in range(n):
            q.get()

    return n / _transfer(producer, consumer)


def _batches(n: int, batch: int) -> float:
    q: SafeQueue[int] = SafeQueue(MAXSIZE)
    items = list(range(n))
    chunks = [items[i : i + batch] for i in range(0, n, batch)]

    def producer() -> None:
        for chunk in chunks:
            q.put_many(chunk)

    def consumer() -> None:
        got = 0
        while got < n:
            got += len(q.get_many(batch))

    return n / _transfer(producer, consumer)


def safequeue(config: Config) -> ScenarioResult:
    """One producer and one consumer thread: SafeQueue against queue.Queue."""
    n = 5_000 if config.quick else 200_000
    batch = 64
    std, single, many = (
        "queue.Queue put/get",
        "SafeQueue put/get",
        f"SafeQueue put_many/get_many({batch})",
    )
    samples = interleave(
        {
            std: lambda: _single_items(lambda: queue.Queue(MAXSIZE), n),
            single: lambda: _single_items(lambda: SafeQueue(MAXSIZE), n),
            many: lambda: _batches(n, batch),
        },
        config.repeat,
    )
    rate = {name: median(values) for name, values in samples.items()}
    s, unit = "safequeue", "items/s"
    rows = [
        Row(s, std, rate[std], unit, kind="base", note=f"{n:,} items, maxsize {MAXSIZE}"),
        compare(
            s,
            single,
            rate[single],
            unit,
            std,
            rate[std],
            kind="floor",
            floor=1.0,
            ratio=paired_ratio(samples[single], samples[std]),
        ),
        compare(
            s,
            many,
            rate[many],
            unit,
            std,
            rate[std],
            kind="floor",
            floor=10.0,
            ratio=paired_ratio(samples[many], samples[std]),
        ),
    ]
    return ScenarioResult(rows, samples)


# -- 3. io_bound ---------------------------------------------------------------------------


def io_bound(config: Config) -> ScenarioResult:
    """The file migration's shape: sleeping stages of 3 and 2 workers, against the bound."""
    n = 40 if config.quick else 400
    shape = MigrationShape(n)
    workers_a, workers_b, bound = shape.workers_a, shape.workers_b, shape.bound
    copy_to_s3, upload_to_api = shape.copy_to_s3, shape.upload_to_api

    def library(*, ordered: bool) -> Callable[[], float]:
        def run() -> float:
            pipeline = (
                Pipeline[int]()
                .map(copy_to_s3, workers=workers_a, ordered=ordered)
                .map(upload_to_api, workers=workers_b, ordered=ordered)
            )
            started = perf_counter()
            out = pipeline.run(range(n)).outputs
            seconds = perf_counter() - started
            if sorted(out) != list(range(n)) or (ordered and out != list(range(n))):
                raise RuntimeError("wrong outputs")
            return seconds

        return run

    def hand() -> float:
        stages = [HandStage(copy_to_s3, workers_a), HandStage(upload_to_api, workers_b)]
        started = perf_counter()
        out = queue_pipeline(range(n), stages)
        seconds = perf_counter() - started
        if sorted(out) != list(range(n)):
            raise RuntimeError("wrong outputs")
        return seconds

    unordered, ordered = "pipeline ordered=False", "pipeline ordered=True"
    tutorial = "queue.Queue pipeline (tutorial)"
    samples = interleave(
        {unordered: library(ordered=False), ordered: library(ordered=True), tutorial: hand},
        config.repeat,
    )
    makespan = {name: median(values) for name, values in samples.items()}
    s, unit, base = "io_bound", "s", "lower bound"

    def vs(name: str, **options: Any) -> Row:
        return compare(
            s, name, makespan[name], unit, base, bound, higher_is_better=False, **options
        )

    rows = [
        vs(
            unordered,
            kind="floor",
            floor=1.03,
            note=f"{n} items; {workers_a} workers x 2-5 ms, then {workers_b} workers x 10-20 ms; "
            "ratio = makespan / max over stages of (total sleep / workers)",
        ),
        vs(ordered, kind="floor", floor=1.10),
        vs(tutorial),
    ]
    return ScenarioResult(rows, samples)


# -- 4. latency ------------------------------------------------------------------------------


def latency(config: Config) -> ScenarioResult:
    """One item at a time through three idle stages: the round trip's median.

    The library's stream and the hand-written relays are all open at once and
    take turns trip by trip, so a noisy moment of the machine lands on all of
    them alike; each round's figure is the median of its trips.
    """
    trips = 100 if config.quick else 2_000
    warm = 20
    lib, base = "pipeline stream, 3 stages", "queue.Queue 3 threads"
    # For reference: what one relay thread more costs (a stream over an
    # iterator source reads it in a feeder thread of its own).
    four = "queue.Queue 4 threads"
    names = [lib, base, four]
    samples: dict[str, list[float]] = {name: [] for name in names}
    p90s: dict[str, list[float]] = {name: [] for name in names}
    stalls: list[int] = []  # the round trips that got no answer

    def one_round() -> None:
        # A SafeQueue source is consumed by the first stage itself, so a round
        # trip crosses as many threads as the hand-written relay's.
        inbox = SafeQueue[int]()
        pipeline = Pipeline[int]().map(identity).map(identity).map(identity)
        # No timeout on the stream (the relays have none, and a timed wait
        # costs more than an untimed one): a watchdog closes the pipeline if
        # the round takes far longer than it should, which ends the stream.
        finished = threading.Event()
        budget = STALL_SECONDS + (warm + trips) * len(names) * 0.01

        def watchdog() -> None:
            if not finished.wait(budget):
                pipeline.close()

        guard = threading.Thread(target=watchdog, name="latency-watchdog")
        guard.start()
        times: dict[str, list[int]] = {name: [] for name in names}
        try:
            with (
                pipeline.stream(inbox) as outputs,
                QueueRoundTrip(3) as relay3,
                QueueRoundTrip(4) as relay4,
            ):

                def through_pipeline(item: int) -> int | None:
                    inbox.put(item)
                    return next(outputs, None)

                send = {lib: through_pipeline, base: relay3.send, four: relay4.send}
                try:
                    for item in range(warm + trips):
                        for name in names if item % 2 else names[::-1]:
                            started = perf_counter_ns()
                            back = send[name](item)
                            elapsed = perf_counter_ns() - started
                            if back != item:
                                if name == lib and back is None:
                                    stalls.append(item)
                                    return
                                raise RuntimeError(f"{name}: sent {item}, got {back}")
                            if item >= warm:
                                times[name].append(elapsed)
                finally:
                    inbox.shutdown()  # ends the source; the stream then ends
                for extra in outputs:
                    raise RuntimeError(f"unexpected output {extra}")
        finally:
            finished.set()
            guard.join()
        for name in names:
            ms = [t / 1e6 for t in times[name]]
            samples[name].append(median(ms))
            p90s[name].append(quantiles(ms, n=10)[-1])

    for _ in range(config.repeat):
        gc.collect()
        one_round()
        if stalls:
            break
    ms = {name: median(values) if values else math.nan for name, values in samples.items()}
    p90 = {name: median(values) if values else math.nan for name, values in p90s.items()}
    s = "latency"
    rows = [
        Row(s, base, ms[base], "ms", kind="base", note=f"p90 {p90[base]:.3f} ms"),
        compare(
            s,
            four,
            ms[four],
            "ms",
            base,
            ms[base],
            ratio=paired_ratio(samples[four], samples[base]),
            higher_is_better=False,
            note="one relay thread more, as a feeder thread would add",
        ),
    ]
    if stalls:
        message = f"round trip {stalls[0]} got no output in time: the stream held the item back"
        rows.append(Row(s, lib, None, "ms", kind="error", note=message))
        return ScenarioResult(rows, samples)
    rows += [
        Row(
            s,
            lib,
            ms[lib],
            "ms",
            kind="floor",
            floor=0.5,
            higher_is_better=False,
            note=f"median of {trips} round trips per round; p90 {p90[lib]:.3f} ms",
        ),
        compare(
            s,
            lib,
            ms[lib],
            "ms",
            base,
            ms[base],
            ratio=paired_ratio(samples[lib], samples[base]),
            kind="floor",
            # 1.3x, not the 1.2x of a private Condition protocol: the queue
            # waits and notifies through the public Condition.wait() and
            # notify() (a lost wake-up came with the private one), which
            # costs about 0.1x here.
            floor=1.3,
            higher_is_better=False,
        ),
    ]
    return ScenarioResult(rows, samples)


# -- 5. start_stop ---------------------------------------------------------------------------


def start_stop(config: Config) -> ScenarioResult:
    """An empty run of 3 stages x 4 workers against starting and joining 12 threads."""
    calls = 5 if config.quick else 50
    pipeline = (
        Pipeline[int]().map(identity, workers=4).map(identity, workers=4).map(identity, workers=4)
    )

    def per_call(action: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            times: list[float] = []
            for _ in range(calls):
                started = perf_counter()
                action()
                times.append(perf_counter() - started)
            return median(times) * 1000

        return measure

    lib, base = "Pipeline.run([]) 3x4 workers", "12 bare threads"
    samples = interleave(
        {lib: per_call(lambda: pipeline.run([])), base: per_call(lambda: bare_threads(12))},
        config.repeat,
        warmups={lib: lambda: pipeline.run([]), base: lambda: bare_threads(12)},
    )
    ms = {name: median(values) for name, values in samples.items()}
    s = "start_stop"
    rows = [
        Row(s, base, ms[base], "ms", kind="base", note=f"median of {calls} calls per round"),
        compare(
            s,
            lib,
            ms[lib],
            "ms",
            base,
            ms[base],
            ratio=paired_ratio(samples[lib], samples[base]),
            kind="floor",
            floor=2.0,
            higher_is_better=False,
        ),
    ]
    return ScenarioResult(rows, samples)


# -- 6. memory -------------------------------------------------------------------------------


def _probe(items: int, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", "--items", str(items), "--mode", mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip()[-500:]}")
    data: dict[str, Any] = json.loads(done.stdout)
    if "error" in data:
        raise RuntimeError(f"memory probe: {data['error']}")
    return data


def memory(config: Config) -> ScenarioResult:
    """Peak RSS growth while streaming 1 KB items through three stages, in a subprocess."""
    n = 20_000 if config.quick else 1_000_000
    runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "plain": []}

    def probe(mode: str) -> Callable[[], float]:
        def measure() -> float:
            data = _probe(n, mode)
            runs[mode].append(data)
            return float(data["growth_mb"])

        return measure

    lib, base = "pipeline stream, 3 stages", "plain loop, no threads"
    samples = interleave({lib: probe("pipeline"), base: probe("plain")}, config.repeat)
    growth = {name: median(values) for name, values in samples.items()}
    last = runs["pipeline"][-1]
    seconds = median([float(r["seconds"]) for r in runs["pipeline"]])
    s = "memory"
    rows = [
        Row(s, base, growth[base], "MB", kind="base", note=f"{n:,} items of 1 KB"),
        Row(
            s,
            lib,
            growth[lib],
            "MB",
            kind="floor",
            floor=20.0,
            higher_is_better=False,
            note=f"peak RSS growth over {last['baseline_mb']:.1f} MB after imports "
            f"({last['method']}); {n / seconds:,.0f} items/s",
        ),
    ]
    return ScenarioResult(rows, samples)


SCENARIOS: Final[dict[str, Callable[[Config], ScenarioResult]]] = {
    "throughput": throughput,
    "safequeue": safequeue,
    "io_bound": io_bound,
    "latency": latency,
    "start_stop": start_stop,
    "memory": memory,
    "cpu_bound": cpu_bound,
    "process_cheap": process_cheap,
    "dask_io": dask_io,
    "dask_cpu": dask_cpu,
    "observed": observed,
    "s3_copy": s3_copy,
    "migration": migration,
}
"""Every scenario by name, in the order they run."""
