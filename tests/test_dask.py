"""Stages on a Dask cluster (``executor=`` a Client, ``"dask://ADDRESS"`` or ``Dask``).

The quick tests, on the session's 2-process LocalCluster (the ``dask_client``
fixture); the contract shared with every executor is in
tests/test_executors.py and the property suites in
tests/test_pipeline_properties.py. A real ``dask scheduler`` with ``dask
worker`` processes, a killed worker and Ctrl-C are in
tests/test_dask_cluster.py (slow).

The stages are at module level: the cluster's worker processes import this
module (the repository root is on their path, as it is on this process's).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Dask, Pipeline, PipelineCancelled, PipelineStage, StageError, WorkerDied
from pipeline import _dask as dask_executor
from tests.helpers import WAIT

distributed: Any = pytest.importorskip("distributed")  # dask_client fails instead in .ci/run


class Boom(Exception):
    """A stage's own error, with a field the round trip must keep."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code


class Hooks(PipelineStage[int, tuple[int, int]]):
    """Writes a line per hook call to a file per process; emits (item, pid)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _note(self, what: str) -> None:
        with (self.folder / str(os.getpid())).open("a") as notes:
            notes.write(what + "\n")

    def on_start(self) -> None:
        self._note("start")
        self.started = True

    def process(self, item: int) -> tuple[int, int]:
        assert self.started  # set by on_start, in this process
        return item, os.getpid()

    def on_stop(self) -> None:
        self._note("stop")


def raise_on_four(item: int) -> int:
    if item == 4:
        raise Boom(42, "four")
    return item


class FailingStart(PipelineStage[int]):
    def on_start(self) -> None:
        raise Boom(7, "no start")

    def process(self, item: int) -> int:
        return item


class FailingStop(PipelineStage[int]):
    def process(self, item: int) -> int:
        return item

    def on_stop(self) -> None:
        raise Boom(8, "no stop")


def unpicklable_output(item: int) -> Any:
    if item == 3:
        return threading.Lock()
    return item


def slow_double(item: int) -> int:
    threading.Event().wait(0.005)
    return item * 2


def worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


# -- where it runs, and the hooks -----------------------------------------------------


def test_batches_run_in_the_cluster_workers_processes(dask_client: Any, tmp_path: Path) -> None:
    result = Pipeline[int]().add(Hooks(tmp_path), workers=4, executor=dask_client).run(range(300))
    assert [item for item, _ in result.outputs] == list(range(300))
    ran_in = {pid for _, pid in result.outputs}
    assert ran_in <= worker_pids(dask_client)
    assert os.getpid() not in ran_in
    assert result.report.stages[0].executor == "dask"


def clients_of(client: Any) -> int:
    return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients)))


def test_an_address_connects_for_the_run_and_disconnects_after(dask_client: Any) -> None:
    address = dask_client.scheduler.address  # tcp://127.0.0.1:PORT
    before = clients_of(dask_client)
    executor = "dask://" + address.removeprefix("tcp://")
    result = Pipeline[int]().map(slow_double, workers=2, executor=executor).run(range(50))
    assert result.outputs == [x * 2 for x in range(50)]
    assert clients_of(dask_client) == before


def test_hooks_run_once_per_cluster_worker_process(dask_client: Any, tmp_path: Path) -> None:
    Pipeline[int]().add(Hooks(tmp_path), workers=4, executor=dask_client).run(range(300))
    notes = {int(path.name): path.read_text() for path in tmp_path.iterdir()}
    # on_start ran in every worker at the start, once, and on_stop once at the end,
    # before run() returned.
    assert set(notes) == worker_pids(dask_client)
    assert all(text == "start\nstop\n" for text in notes.values())


def test_on_start_failing_on_the_cluster_fails_the_run_with_its_error(dask_client: Any) -> None:
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for item in range(10):
            pulled.append(item)
            yield item

    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(FailingStart(), workers=3, executor=dask_client).run(source())
    error = caught.value
    assert (error.stage, error.where) == ("FailingStart", "on_start")
    assert type(error.__cause__) is Boom
    assert error.__cause__.code == 7
    assert "also:" not in str(error)  # reported once, not once per worker thread
    assert error.report is not None
    assert error.report.stages[0].completed == 0


def test_on_stop_failing_on_the_cluster_fails_the_run(dask_client: Any) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(FailingStop(), workers=2, executor=dask_client).run(range(10))
    assert caught.value.where == "on_stop"
    assert type(caught.value.__cause__) is Boom


# -- errors come back as themselves -----------------------------------------------------


def test_an_exception_comes_back_as_its_type_with_the_remote_traceback(dask_client: Any) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(raise_on_four, workers=2, executor=dask_client).run(range(10))
    cause = caught.value.__cause__
    assert type(cause) is Boom
    assert (cause.args, cause.code) == ((42, "four"), 42)
    notes = "\n".join(getattr(cause, "__notes__", []))
    assert "raised in worker process" in notes
    assert "raise_on_four" in notes  # the frame on the cluster worker


def test_an_output_that_does_not_pickle_is_that_items_error(dask_client: Any) -> None:
    result = (
        Pipeline[int]()
        .map(unpicklable_output, workers=2, on_error="skip", executor=dask_client)
        .run(range(8))
    )
    assert result.outputs == [0, 1, 2, 4, 5, 6, 7]
    assert [letter.item for letter in result.report.dead_letters] == [3]


# -- batches -------------------------------------------------------------------------


def test_batches_of_a_set_size_hold_at_most_that_many_items(
    dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    sizes_lock = threading.Lock()
    one = dask_executor.DaskWorker._one

    def recording(self: Any, batch: list[Any]) -> Any:
        with sizes_lock:
            sizes.append(len(batch))
        return one(self, batch)

    monkeypatch.setattr(dask_executor.DaskWorker, "_one", recording)
    executor = Dask(dask_client, batch_size=7)
    result = Pipeline[int]().map(slow_double, workers=2, executor=executor).run(range(100))
    assert result.outputs == [x * 2 for x in range(100)]
    assert sum(sizes) == 100
    assert max(sizes) == 7
    assert len(sizes) >= 100 // 7


def test_batches_grow_to_amortize_the_cost_of_a_task(
    dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    one = dask_executor.DaskWorker._one

    def recording(self: Any, batch: list[Any]) -> Any:
        sizes.append(len(batch))
        return one(self, batch)

    monkeypatch.setattr(dask_executor.DaskWorker, "_one", recording)
    Pipeline[int]().map(slow_double, executor=dask_client).run(range(400))
    # 5 ms an item and 0.5 s a batch: after the first batch (one item, which
    # measures), about 100 items a task, not one.
    assert sizes[0] == 1
    assert max(sizes) >= 50
    assert len(sizes) < 20


def test_the_clusters_cost_per_task_counts_as_busy_and_the_verdict_asks_for_bigger_batches(
    dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_there: list[float] = []  # each task's wall time, by our own stopwatch
    stopwatch_lock = threading.Lock()
    one = dask_executor.DaskWorker._one

    def timed(self: Any, batch: list[Any]) -> Any:
        started = time.perf_counter()
        try:
            return one(self, batch)
        finally:
            with stopwatch_lock:
                out_there.append(time.perf_counter() - started)

    monkeypatch.setattr(dask_executor.DaskWorker, "_one", timed)
    # maxsize=1: an item a task, and abs() takes microseconds of the milliseconds a task costs.
    pipeline = Pipeline[int]().map(abs, workers=2, executor=dask_client, maxsize=1, name="tiny")
    report = pipeline.run(range(60)).report
    [stage] = report.stages
    assert len(out_there) == 60
    assert sum(out_there) - stage.busy_seconds - 0.01 <= stage.dispatch_seconds <= sum(out_there)
    assert stage.dispatch_seconds > 10 * stage.busy_seconds
    assert report.to_dict()["stages"][0]["dispatch_seconds"] == round(stage.dispatch_seconds, 6)
    verdict = report.verdict
    assert verdict is not None
    assert (verdict.kind, verdict.stage) == ("stage", "tiny")
    assert "of it the Dask cluster's cost per task" in verdict.evidence
    assert verdict.advice.startswith("send `tiny` bigger batches")
    # The time table's busy column reads the stage as the verdict does.
    row = re.search(r"^tiny\s+dask\s+2\s+(\d+)%", report.times(), flags=re.M)
    assert row is not None
    assert int(row.group(1)) >= 60


# -- cancellation --------------------------------------------------------------------


def test_cancel_stops_the_run_and_its_tasks(dask_client: Any) -> None:
    pipeline = Pipeline[int]().map(slow_double, workers=2, executor=dask_client)
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    stream = pipeline.stream(endless())
    received = [next(stream) for _ in range(20)]
    pipeline.cancel()
    with pytest.raises(PipelineCancelled) as caught:
        received.extend(stream)
    report = caught.value.report
    assert report is not None
    assert report.status == "cancelled"
    assert report.items_read == pulled
    assert report.outputs == len(received)
    assert report.balanced
    # No task of the run is left on the cluster.
    assert all(not tasks for tasks in dask_client.processing().values())


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["dask://", "dask://host-without-port", "dask://h:port"])
def test_a_bad_scheduler_address_is_refused_at_add(address: str) -> None:
    with pytest.raises(ValueError, match=r"'executor'.*dask://HOST:PORT"):
        Pipeline[int]().map(abs, executor=address)


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_a_bad_batch_size_is_refused(size: Any) -> None:
    with pytest.raises(ValueError, match="'batch_size'"):
        Dask("dask://127.0.0.1:8786", batch_size=size)


def test_a_bad_cluster_is_refused_naming_the_option() -> None:
    with pytest.raises(TypeError, match=r"'executor'.*not int"):
        Dask(8786)  # type: ignore[arg-type]


class Holder(PipelineStage[int]):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def process(self, item: int) -> int:
        return item


def test_a_stage_that_does_not_pickle_is_refused_at_add() -> None:
    with pytest.raises(TypeError, match="'Holder' cannot be sent to a Dask cluster"):
        Pipeline[int]().add(Holder(), executor="dask://127.0.0.1:8786")


def test_an_unreachable_scheduler_fails_the_run_naming_it() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(abs, executor="dask://127.0.0.1:9").run(range(3), timeout=WAIT * 2)
    assert caught.value.where == "on_start"
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in str(caught.value.__cause__)


def test_the_executor_is_shown_in_its_repr() -> None:
    assert repr(Dask("127.0.0.1:8786")) == "Dask('tcp://127.0.0.1:8786')"


# -- a free-threaded Python -----------------------------------------------------------

PROFILER = dask_executor.PROFILER_SETTING


def test_without_the_gil_a_dask_executor_warns_while_dasks_profiler_is_on(
    dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dask_config: Any = pytest.importorskip("dask.config")
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    with dask_config.set({PROFILER: True}):
        with pytest.warns(RuntimeWarning, match=rf"crash a free-threaded.*{re.escape(PROFILER)}"):
            Pipeline[int]().map(abs, executor=dask_client)
        with pytest.warns(RuntimeWarning, match=re.escape(PROFILER)):
            Dask("dask://127.0.0.1:8786")
    with dask_config.set({PROFILER: False}):
        Pipeline[int]().map(abs, executor=dask_client)  # no warning (they are errors here)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    with dask_config.set({PROFILER: True}):
        Pipeline[int]().map(abs, executor=dask_client)  # with the GIL, Dask's default is safe


# -- a worker that keeps dying ---------------------------------------------------------


def exit_on_five(item: int) -> int:
    if item == 5:
        os._exit(1)  # the cluster worker process dies
    return item


@pytest.mark.slow
def test_an_item_that_kills_every_worker_it_meets_is_its_own_worker_died(tmp_path: Path) -> None:
    # With allowed-failures 0 the scheduler gives up on a task at its first
    # worker death (KilledWorker): the batch is redone one item at a time,
    # and only the item that kills is a dead letter.
    import dask

    config = {"distributed.scheduler.allowed-failures": 0}
    with (
        dask.config.set(config),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # a free port: None takes 8787
            local_directory=str(tmp_path),
            silence_logs=50,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        pulled: list[int] = []

        def source() -> Iterator[int]:
            for item in range(20):
                pulled.append(item)
                yield item

        executor = Dask(client, batch_size=10)
        result = (
            Pipeline[int]()
            .map(exit_on_five, workers=1, on_error="skip", executor=executor)
            .run(source(), timeout=WAIT * 6)
        )
    assert pulled == list(range(20))
    assert result.outputs == [item for item in range(20) if item != 5]
    [letter] = result.report.dead_letters
    assert letter.item == 5
    assert type(letter.exception) is WorkerDied
    assert type(letter.exception.__cause__).__name__ == "KilledWorker"
    assert result.report.balanced
