"""Where the time went and the verdict, checked against runs whose sleeps we know."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from pipeline import ItemTimes, Pipeline, PipelineReport, SafeQueue
from pipeline._report import ITEM_SAMPLE, StageRecorder
from pipeline._verdict import capacity, judge

SLEEP = 0.01  # what the slow stage sleeps per item
ITEMS = 40
GIL = getattr(sys, "_is_gil_enabled", lambda: True)()


def slow(x: int) -> int:
    time.sleep(SLEEP)
    return x


def spin(x: int) -> int:
    # Pure Python, about a millisecond: holds the GIL throughout.
    total = 0
    for i in range(20_000):
        total += i
    return x + total - total


def share(seconds: float, stage: str, report: PipelineReport) -> float:
    [found] = [s for s in report.stages if s.name == stage]
    return seconds / found.active_seconds


def test_a_slow_stage_behind_a_fast_one_is_busy_and_named_and_the_fast_one_is_blocked() -> None:
    report = (
        Pipeline[int]()
        .map(abs, name="fast")
        .map(slow, workers=2, name="slow", maxsize=2)  # a short queue: fast blocks on it
        .run(range(ITEMS))
        .report
    )
    fast, slow_stage = report.stages
    # Known: the slow stage slept ITEMS * SLEEP seconds in all, two at a time.
    assert slow_stage.busy_seconds >= ITEMS * SLEEP
    assert slow_stage.utilization >= 0.85
    assert fast.utilization < 0.2
    assert share(fast.blocked_seconds, "fast", report) >= 0.5  # waiting for room in front of slow
    assert share(slow_stage.starved_seconds, "slow", report) < 0.15  # always had work
    verdict = report.verdict
    assert verdict is not None
    assert (verdict.kind, verdict.stage) == ("stage", "slow")
    assert "`slow` is" in verdict.evidence
    assert "`fast` spends" in verdict.evidence  # the evidence names who waits on it
    assert verdict.advice == "give `slow` more workers"


@pytest.mark.parametrize("workers", [1, 2])  # 2: an ordered stage takes through its window
def test_the_stage_after_the_bottleneck_is_starved(workers: int) -> None:
    report = (
        Pipeline[int]()
        .map(slow, workers=2, name="slow")
        .map(abs, workers=workers, name="after")
        .run(range(ITEMS))
        .report
    )
    assert share(report.stages[1].starved_seconds, "after", report) >= 0.7
    assert share(report.stages[1].blocked_seconds, "after", report) < 0.1
    verdict = report.verdict
    assert verdict is not None
    assert verdict.stage == "slow"
    assert "`after` waits for it" in verdict.evidence


@pytest.mark.skipif(not GIL, reason="without the GIL, thread workers are the right advice")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: processes cannot help")
def test_a_cpu_bound_thread_stage_gets_the_process_advice() -> None:
    # A machine busy with other work may give this process too little of a
    # core for any verdict to tell a CPU-bound stage from a slow one: such a
    # run is measured again (the process's CPU time, counted here).
    for _ in range(5):
        cpu_before = time.process_time()
        report = Pipeline[int]().map(spin, workers=2, name="spin").run(range(150)).report
        process_cpu = time.process_time() - cpu_before
        if process_cpu >= 0.6 * report.elapsed_seconds:
            break
    else:
        pytest.skip(f"this process got {process_cpu / report.elapsed_seconds:.0%} of a core")
    [stage] = report.stages
    assert stage.cpu_seconds is not None
    # The stage's workers did nearly all the process's work, and under the GIL
    # on about one core, not two.
    assert 0.85 * process_cpu <= stage.cpu_seconds <= process_cpu
    assert stage.cpu_seconds <= 1.3 * report.elapsed_seconds
    verdict = report.verdict
    assert verdict is not None
    assert (verdict.kind, verdict.stage) == ("cpu-bound", "spin")
    assert 'executor="process"' in verdict.advice


@pytest.mark.skipif(GIL, reason="a free-threaded build running without the GIL")
def test_without_the_gil_a_cpu_bound_thread_stage_is_not_told_to_use_processes() -> None:
    report = Pipeline[int]().map(spin, workers=2, name="spin").run(range(150)).report
    assert report.gil_enabled is False
    verdict = report.verdict
    assert verdict is not None
    assert verdict.kind != "cpu-bound"


def test_a_slow_source_is_named_when_no_stage_is_busy() -> None:
    def trickle() -> Iterator[int]:
        for item in range(20):
            time.sleep(SLEEP / 2)
            yield item

    report = Pipeline[int]().map(abs, name="quick").run(trickle()).report
    assert share(report.stages[0].starved_seconds, "quick", report) >= 0.7
    verdict = report.verdict
    assert verdict is not None
    assert (verdict.kind, verdict.stage) == ("source", None)


def test_a_run_too_short_to_tell_has_no_verdict_and_says_so() -> None:
    report = Pipeline[int]().map(abs).run(range(3)).report
    assert report.elapsed_seconds < 0.05
    assert report.verdict is None
    assert "Verdict: the run was too short to tell" in report.summary()


def test_the_time_table_and_the_verdict_are_in_the_summary_and_the_json() -> None:
    report = Pipeline[int]().map(slow, workers=2, name="slow").run(range(20)).report
    text = report.summary()
    mode = "GIL enabled" if GIL else "GIL disabled"
    assert f"=== TIME ({mode}) ===" in text
    table = text.split(f"=== TIME ({mode}) ===\n", 1)[1].splitlines()
    assert table[0].split() == [
        "stage",
        "executor",
        "workers",
        "busy",
        "starved",
        "blocked",
        "items/s",
        "item",
        "p50",
        "item",
        "p99",
    ]
    assert table[1].split()[:3] == ["slow", "thread", "2"]
    assert table[2].startswith("Verdict: stage `slow` is ")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["gil_enabled"] is GIL
    assert data["verdict"]["stage"] == "slow"
    stage = data["stages"][0]
    assert stage["executor"] == "thread"
    assert stage["utilization"] >= 0.85
    assert {"starved_seconds", "blocked_seconds", "cpu_seconds", "active_seconds"} <= set(stage)


def test_a_process_stage_reports_its_executor_and_no_thread_cpu_time() -> None:
    report = Pipeline[int]().map(abs, executor="process", name="elsewhere").run(range(5)).report
    [stage] = report.stages
    assert stage.executor == "process"
    assert stage.cpu_seconds is None
    assert stage.active_seconds > 0


def test_a_stage_mostly_waiting_on_its_clusters_cost_per_task_is_told_to_send_bigger_batches() -> (
    None
):
    report = Pipeline[int]().map(slow, workers=2, name="remote").run(range(ITEMS)).report
    [stage] = report.stages
    assert stage.dispatch_seconds == 0.0  # a thread stage has no cluster to wait on
    assert stage.to_dict()["dispatch_seconds"] == 0.0
    elapsed = report.elapsed_seconds
    room = capacity(stage, elapsed)
    # The same stage as a Dask one: 10% of its time in process(), 85% out on
    # the cluster around it (under BUSY without it).
    waiting = replace(stage, executor="dask", busy_seconds=0.1 * room, dispatch_seconds=0.85 * room)
    verdict = judge([waiting], elapsed, ITEMS, gil_enabled=True)
    assert verdict is not None
    assert (verdict.kind, verdict.stage) == ("stage", "remote")
    assert verdict.evidence == (
        "stage `remote` is 95% busy with 2 workers, 89% of it the Dask cluster's cost per task"
    )
    assert verdict.advice.startswith("send `remote` bigger batches")
    # Mostly its own work: more workers, as for any stage.
    working = replace(stage, executor="dask", busy_seconds=0.85 * room, dispatch_seconds=0.1 * room)
    verdict = judge([working], elapsed, ITEMS, gil_enabled=True)
    assert verdict is not None
    assert verdict.evidence == "stage `remote` is 95% busy with 2 workers"
    assert verdict.advice == "give `remote` more workers"


def test_item_times_of_a_sleeping_stage_are_its_sleep_and_the_maximum_is_exact() -> None:
    report = Pipeline[int]().map(abs, name="fast").map(slow, name="slow").run(range(30)).report
    fast, slow_stage = report.stages
    times = slow_stage.item_seconds
    assert times is not None
    assert SLEEP <= times.p50 <= times.p95 <= times.p99 <= times.max
    assert times.p50 < 5 * SLEEP
    assert times.batches == 30  # one item per batch at 10 ms each
    assert fast.item_seconds is not None
    assert fast.item_seconds.p50 < SLEEP / 10
    assert report.to_dict()["stages"][1]["item_seconds"]["batches"] == 30


def test_the_item_time_sample_is_bounded_and_keeps_the_exact_maximum() -> None:
    recorder = StageRecorder()
    fed = [(n * 7919) % 100_003 for n in range(3 * ITEM_SAMPLE)]
    for nanoseconds in fed:
        recorder.batch_done(1, 1, 1, 0, nanoseconds)
    assert len(recorder.item_ns) == ITEM_SAMPLE
    assert recorder.batches == len(fed)
    assert set(recorder.item_ns) <= set(fed)
    times = ItemTimes.from_recorders([recorder])
    assert times is not None
    assert times.max == max(fed) / 1e9
    # A uniform sample of a uniform spread: its median near the middle.
    assert 0.4 * max(fed) / 1e9 <= times.p50 <= 0.6 * max(fed) / 1e9


def test_a_batch_of_several_items_counts_its_mean_time_per_item() -> None:
    recorder = StageRecorder()
    recorder.batch_done(4, 4, 4, 0, 4_000)
    times = ItemTimes.from_recorders([recorder])
    assert times is not None
    assert (times.p50, times.max, times.batches) == (1e-6, 1e-6, 1)
    assert ItemTimes.from_recorders([StageRecorder()]) is None


def test_the_queue_in_front_of_the_bottleneck_is_full_on_average() -> None:
    report = (
        Pipeline[int]()
        .map(abs, name="fast", workers=2)
        .map(slow, name="slow", maxsize=4)
        .map(abs, name="after")
        .run(range(40))
        .report
    )
    _, slow_stage, after = report.stages
    assert slow_stage.queue.peak_size == 4
    assert slow_stage.queue_mean_size >= 3.0  # full nearly all along
    assert after.queue_mean_size < 1.0  # the stage after it is waiting, not queueing
    assert report.to_dict()["stages"][1]["queue_mean_size"] >= 3.0


def test_a_tracked_queue_averages_its_size_over_time() -> None:
    queue = SafeQueue[int]()
    assert queue._mean_size() == 0.0  # a queue of your own tracks nothing
    queue._track_depth()
    queue.put_many([1, 2, 3, 4])
    time.sleep(0.1)  # four items for 0.1 s...
    queue.get_many(4)
    time.sleep(0.1)  # ...then none for 0.1 s
    assert 1.5 <= queue._mean_size() <= 2.5


def test_each_worker_says_where_its_own_time_went() -> None:
    report = (
        Pipeline[int]()
        .map(abs, name="fast", workers=2, maxsize=2)
        .map(slow, name="slow", maxsize=2)
        .map(abs, name="after", workers=2)
        .run(range(40))
        .report
    )
    fast, slow_stage, after = report.stages
    assert [w.name for w in fast.worker_times] == ["fast-1", "fast-2"]
    assert [w.name for w in slow_stage.worker_times] == ["slow-1"]
    # Known: the one slow worker slept 40 x 10 ms, and always had work.
    [busy] = slow_stage.worker_times
    assert busy.busy_seconds >= ITEMS * SLEEP
    assert busy.starved_seconds < 0.2 * busy.busy_seconds
    # Both fast workers wait for room in front of it; both after workers
    # wait for its outputs (one in the queue, one for its turn to take).
    for worker in fast.worker_times:
        assert worker.blocked_seconds >= 0.3 * busy.busy_seconds, worker
    for worker in after.worker_times:
        assert worker.starved_seconds >= 0.5 * busy.busy_seconds, worker
    # The stage's totals are its workers'.
    assert sum(w.busy_seconds for w in fast.worker_times) == pytest.approx(fast.busy_seconds)
    assert report.to_dict()["stages"][0]["worker_times"][0]["name"] == "fast-1"
