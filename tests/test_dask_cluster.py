"""The Dask executor on a real cluster: a scheduler and two workers, each a process.

The cluster is :mod:`tests.daskcluster`'s (two nanny workers of two threads
on 127.0.0.1). What is checked: a run over a ``"dask://"`` address; an
exception's round trip; ``on_start``/``on_stop`` once per cluster worker
process; a worker process SIGKILLed mid-run; Ctrl-C of a script with tasks
in flight, in trials; ``cancel()`` with batches in flight. After a stop, no
task of the run may still be at work on the cluster: no thread of a worker
inside a batch, and no item starting any more.

Every check is against counts made here: items pulled from a source this
module wrote (:class:`Counted`), outputs received, and lines the stages
write to files (the workers share this machine's disk); a report's figure
is compared with those, never trusted on its own.

All of it is slow (``-m slow``): a cluster takes seconds to start. The
stages are at module level, so the cluster's workers (which have the
checkout on their ``PYTHONPATH``) import them by reference.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pipeline import Dask, Pipeline, PipelineCancelled, PipelineStage, StageError
from tests.daskcluster import DaskCluster, wait_until_idle
from tests.helpers import WAIT, Join

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUN_SECONDS = WAIT * 2  # every run's timeout: a hang is a PipelineTimeout, with its report


class Counted:
    """A source of ``0, 1, 2, ...`` (``n`` items, or endless) that counts what is pulled.

    ``stop_when``, checked every 50 items, ends it early once it returns true.
    """

    def __init__(self, n: int | None = None, stop_when: Callable[[], bool] | None = None) -> None:
        self.n = n
        self.stop_when = stop_when
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for item in itertools.count() if self.n is None else range(self.n):
            if self.stop_when is not None and item % 50 == 0 and self.stop_when():
                return
            self.pulled += 1
            yield item


def _wait_for(ready: Callable[[], bool], what: str, seconds: float = WAIT * 3) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.01)


def _note(path: Path, line: str) -> None:
    # One short write in append mode: lines of concurrent writers never mix.
    with path.open("a") as notes:
        notes.write(line + "\n")


# -- a run over "dask://ADDRESS" -----------------------------------------------------


def triple_where(x: int) -> tuple[int, int]:
    return x * 3, os.getpid()


def _scheduler_clients(dask_scheduler: Any) -> list[str]:
    # Run on the scheduler: the clients connected to it.
    return sorted(dask_scheduler.clients)


def test_a_run_over_a_dask_address_keeps_order_and_balances(
    deployed_cluster: DaskCluster, deployed_client: Any
) -> None:
    before = deployed_client.run_on_scheduler(_scheduler_clients)
    source = Counted(500)
    address = "dask://" + deployed_cluster.address.removeprefix("tcp://")
    result = (
        Pipeline[int]()
        .map(triple_where, workers=3, executor=address)
        .run(source, timeout=RUN_SECONDS)
    )
    assert source.pulled == 500
    assert [value for value, _ in result.outputs] == [x * 3 for x in range(500)]
    pids = {pid for _, pid in result.outputs}
    assert pids <= set(deployed_cluster.worker_pids().values())  # on the cluster, not here
    report = result.report
    [stage] = report.stages
    assert report.status == "completed"
    assert report.items_read == stage.arrived == source.pulled
    assert report.outputs == stage.emitted == stage.completed == len(result.outputs)
    assert (stage.executor, stage.failed, stage.not_processed, stage.dropped) == ("dask", 0, 0, 0)
    assert report.balanced
    # The run connected for itself, and disconnected at its end.
    _wait_for(
        lambda: deployed_client.run_on_scheduler(_scheduler_clients) == before,
        "the run's client to leave the scheduler",
        WAIT,
    )


# -- an exception's round trip -------------------------------------------------------


class ClusterError(Exception):
    """An exception class of this module's own, raised on the cluster."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code


class Refuse(PipelineStage[int]):
    """Raises :class:`ClusterError` for the items in ``refused``."""

    def __init__(self, refused: Callable[[int], bool]) -> None:
        super().__init__()
        self.refused = refused

    def process(self, item: int) -> int:
        if self.refused(item):
            raise ClusterError(item, f"item {item} refused")
        return item


def is_three(x: int) -> bool:
    return x == 3


def is_three_mod_seven(x: int) -> bool:
    return x % 7 == 3


def test_an_error_on_the_cluster_comes_back_as_itself_with_its_traceback_and_fails_fast(
    deployed_cluster: DaskCluster, deployed_client: Any
) -> None:
    source = Counted()  # endless: only fail-fast ends the run
    pipeline = Pipeline[int]().add(
        Refuse(is_three), workers=2, executor=Dask(deployed_client, batch_size=5)
    )
    with pytest.raises(StageError) as caught:
        pipeline.run(source, timeout=RUN_SECONDS)
    error = caught.value
    cause = error.__cause__
    assert type(cause) is ClusterError
    assert cause.args == (3, "item 3 refused")
    assert cause.code == 3
    assert (error.stage, error.item, error.has_item, error.where) == ("Refuse", 3, True, "process")
    [note] = cause.__notes__
    pids = set(deployed_cluster.worker_pids().values())
    assert any(note.startswith(f"raised in worker process {pid}:\n") for pid in pids), note
    assert "Traceback (most recent call last)" in note
    assert "in process" in note
    assert 'raise ClusterError(item, f"item {item} refused")' in note
    assert note.rstrip().endswith("ClusterError: (3, 'item 3 refused')")
    report = error.report
    assert report is not None
    [stage] = report.stages
    assert report.status == "failed"
    assert report.items_read == stage.arrived == source.pulled
    assert stage.failed == 1
    assert stage.completed + stage.failed + stage.not_processed == source.pulled
    assert report.balanced


def test_under_skip_exactly_the_failing_items_are_dead_letters(deployed_client: Any) -> None:
    source = Counted(300)
    result = (
        Pipeline[int]()
        .add(
            Refuse(is_three_mod_seven),
            workers=3,
            on_error="skip",
            executor=Dask(deployed_client, batch_size=4),
        )
        .run(source, timeout=RUN_SECONDS)
    )
    refused = [x for x in range(300) if x % 7 == 3]
    assert source.pulled == 300
    assert result.outputs == [x for x in range(300) if x % 7 != 3]
    letters = sorted(result.report.dead_letters, key=lambda letter: letter.item)
    assert [letter.item for letter in letters] == refused
    for letter in letters:
        assert type(letter.exception) is ClusterError
        assert letter.exception.args == (letter.item, f"item {letter.item} refused")
        assert (letter.stage, letter.attempts) == ("Refuse", 1)
    [stage] = result.report.stages
    assert result.report.status == "completed"
    assert stage.failed == len(refused)
    assert stage.completed == 300 - len(refused) == len(result.outputs)
    assert result.report.balanced


# -- on_start and on_stop, once per cluster worker process ---------------------------


class Hooks(PipelineStage[int, tuple[int, int]]):
    """Notes its hook calls and items in a file per process; emits ``(item, pid)``."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _note(self, line: str) -> None:
        _note(self.folder / str(os.getpid()), line)

    def on_start(self) -> None:
        self._note("start")

    def process(self, item: int) -> tuple[int, int]:
        self._note(f"item {item}")
        return item, os.getpid()

    def on_stop(self) -> None:
        self._note("stop")


def test_on_start_and_on_stop_run_once_in_each_cluster_worker_process_per_run(
    deployed_cluster: DaskCluster, deployed_client: Any, tmp_path: Path
) -> None:
    pids = set(deployed_cluster.worker_pids().values())
    assert len(pids) == 2
    for run in range(2):  # a second run starts and stops its own copies
        folder = tmp_path / f"run-{run}"
        folder.mkdir()
        stage = Hooks(folder)
        source = Counted(200)
        result = (
            Pipeline[int]()
            .add(stage, workers=4, executor=Dask(deployed_client, batch_size=10))
            .run(source, timeout=RUN_SECONDS)
        )
        assert [item for item, _ in result.outputs] == list(range(200))
        assert {int(path.name) for path in folder.iterdir()} == pids  # each, and only those
        processed: Counter[int] = Counter()
        for path in folder.iterdir():
            lines = path.read_text().splitlines()
            # on_start first, on_stop last: after that process's tasks of the run returned.
            assert lines[0] == "start", lines[:3]
            assert lines[-1] == "stop", lines[-3:]
            assert lines.count("start") == lines.count("stop") == 1
            items = [int(line.split()[1]) for line in lines[1:-1]]
            processed.update(items)
            assert all(pid == int(path.name) for item, pid in result.outputs if item in items)
        assert processed == Counter(range(200))  # each item once, in the process it came from
        assert result.report.balanced


# -- a worker process killed mid-run -------------------------------------------------


class Doomed(PipelineStage[int, tuple[int, int]]):
    """Notes its hooks and each item it finished in a file per process; emits ``(item, pid)``.

    The first process to take item ``fatal`` claims the file ``doomed``
    (created exclusively), writes its pid there and waits to be killed; the
    task Dask runs again elsewhere finds the file taken and goes on.
    """

    def __init__(self, folder: Path, fatal: int) -> None:
        super().__init__()
        self.folder = folder
        self.fatal = fatal

    def _note(self, line: str) -> None:
        _note(self.folder / f"notes-{os.getpid()}", line)

    def on_start(self) -> None:
        self._note("start")

    def process(self, item: int) -> tuple[int, int]:
        if item == self.fatal:
            self._wait_to_be_killed()
        time.sleep(0.002)
        self._note(f"done {item}")
        return item, os.getpid()

    def _wait_to_be_killed(self) -> None:
        doomed = self.folder / "doomed"
        try:
            claim = os.open(doomed, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        os.write(claim, str(os.getpid()).encode())
        os.close(claim)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError(f"process {os.getpid()} was not killed")

    def on_stop(self) -> None:
        self._note("stop")


def _notes(folder: Path) -> dict[int, list[str]]:
    return {
        int(path.name.removeprefix("notes-")): path.read_text().splitlines()
        for path in folder.glob("notes-*")
    }


@pytest.mark.parametrize(
    "own_deployed_cluster",
    [
        pytest.param({}, id="the-scheduler-reruns-its-tasks"),
        # Dask gives up on a task at once (KilledWorker): the pipeline does
        # the batch again here, an item at a time.
        pytest.param(
            {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}, id="killed-worker-item-by-item"
        ),
    ],
    indirect=True,
)
@pytest.mark.timeout(150)  # a cluster of its own to start and stop, besides the run
def test_a_worker_process_killed_mid_run_loses_and_repeats_nothing(
    own_deployed_cluster: DaskCluster, tmp_path: Path
) -> None:
    cluster = own_deployed_cluster
    first = cluster.worker_pids()
    assert len(set(first.values())) == 2
    fatal = 100
    doomed_file = tmp_path / "doomed"
    killed: list[int] = []

    def kill_the_doomed() -> None:
        # From another thread, once the stage says which process took the item.
        _wait_for(lambda: doomed_file.exists() and doomed_file.read_text() != "", "a doomed pid")
        pid = int(doomed_file.read_text())
        if pid not in first.values():
            raise AssertionError(f"{pid} is not a worker process of {first}")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def a_new_process_finished_an_item() -> bool:
        # The source goes on until the restarted worker process took part.
        return any(
            pid not in first.values() and any(line.startswith("done") for line in lines)
            for pid, lines in _notes(tmp_path).items()
        )

    deadline = time.monotonic() + WAIT * 3
    source = Counted(
        stop_when=lambda: a_new_process_finished_an_item() or time.monotonic() > deadline
    )
    killer = Join(kill_the_doomed, name="test-killer")
    result = (
        Pipeline[int]()
        .add(
            Doomed(tmp_path, fatal),
            workers=4,
            maxsize=20,  # the source runs no further ahead: the run ends soon after it
            executor=Dask(cluster.client, batch_size=5),
        )
        .run(source, timeout=RUN_SECONDS * 2)
    )
    killer.join()
    [doomed] = killed
    n = source.pulled
    assert n > fatal
    assert [item for item, _ in result.outputs] == list(range(n))  # none lost, none twice
    report = result.report
    [stage] = report.stages
    assert report.status == "completed"
    assert report.items_read == stage.arrived == n
    assert (stage.completed, stage.emitted, stage.failed, stage.not_processed) == (n, n, 0, 0)
    assert report.balanced
    # The stage's own notes: every item finished at least once, and only the
    # kill makes one finish twice: once in the killed process, once in
    # another. That other run is Dask's, of a task whose result died with
    # the worker (or was fetched just before, while the scheduler still had
    # it wanted); the output delivered is from one of the two.
    notes = _notes(tmp_path)
    finished: defaultdict[int, list[int]] = defaultdict(list)
    for pid, lines in notes.items():
        for line in lines:
            if line.startswith("done "):
                finished[int(line.split()[1])].append(pid)
    assert sorted(finished) == list(range(n))
    for item, where in result.outputs:
        pids = finished[item]
        others = [pid for pid in pids if pid != doomed]
        assert len(others) <= 1, (item, pids)
        assert pids.count(doomed) <= 1, (item, pids)
        assert where in pids, (item, pids, where)
    assert doomed not in finished[fatal]
    # on_start once in every process that ran the stage: the two of the
    # start, and lazily the restarted one; on_stop in every one but the killed.
    restarted = set(notes) - set(first.values())
    assert restarted, "the restarted worker process never took part"
    assert set(first.values()) <= set(notes)
    for pid, lines in notes.items():
        assert lines[0] == "start", (pid, lines[:3])
        assert lines.count("start") == 1, pid
        stops = ["stop"] if pid != doomed else []
        assert [line for line in lines if line == "stop"] == stops, pid
        if stops:
            assert lines[-1] == "stop", (pid, lines[-3:])
    # The nanny restarted the killed process: the cluster is whole again.
    cluster.wait_for_workers()
    now = set(cluster.worker_pids().values())
    assert len(now) == 2
    assert doomed not in now
    assert restarted <= now


# -- stopping with tasks in flight: nothing keeps running ------------------------------


def _starts_and_ends(log: Path) -> tuple[list[int], list[int], float]:
    """The items started and ended, as the stage's lines say, and the last line's time.

    Each line ends with ``time.monotonic()`` where it was written: on Linux
    one clock for every process of the machine, the cluster's and this one.
    """
    starts: list[int] = []
    ends: list[int] = []
    last = float("-inf")
    text = log.read_text() if log.exists() else ""
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # being written now
        what, item, *_, at = line.split()
        (starts if what == "start" else ends).append(int(item))
        last = max(last, float(at))
    return starts, ends, last


def _busy(log: Path) -> bool:
    # Work seen: items started, and one of them in process() now.
    starts, ends, _ = _starts_and_ends(log)
    return len(starts) >= 2 and len(starts) > len(ends)


def _assert_nothing_runs_on(client: Any, log: Path, started: int) -> None:
    """No task of the run is at work, and no item starts any more (within a second)."""
    wait_until_idle(client)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        now = len(_starts_and_ends(log)[0])
        assert now == started, f"{now - started} items started after the run ended"
        time.sleep(0.05)


class Slow(PipelineStage[int]):
    """Writes ``start N`` and ``end N`` lines around ten short sleeps per item."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.log = log

    def process(self, item: int) -> int:
        _note(self.log, f"start {item} {os.getpid()} {time.monotonic()}")
        for _ in range(10):
            time.sleep(0.03)
        _note(self.log, f"end {item} {time.monotonic()}")
        return item


def test_cancel_with_batches_in_flight_raises_balances_and_leaves_nothing_running(
    deployed_client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    pipeline = Pipeline[int]().add(
        Slow(log), workers=4, executor=Dask(deployed_client, batch_size=2)
    )
    source = Counted()  # endless
    cancelled_at: list[float] = []

    def cancel_once_busy() -> None:
        _wait_for(lambda: _busy(log), "items in process() on the cluster")
        cancelled_at.append(time.monotonic())
        pipeline.cancel()

    canceller = Join(cancel_once_busy, name="test-canceller")
    received: list[int] = []

    def consume() -> None:
        for item in pipeline.stream(source, timeout=RUN_SECONDS):
            received.append(item)

    with pytest.raises(PipelineCancelled) as caught:
        consume()
    raised_at = time.monotonic()
    took = raised_at - cancelled_at[0]
    canceller.join()
    assert took < 5, f"{took:.2f} s from cancel() to PipelineCancelled"
    report = caught.value.report
    assert report is not None
    [stage] = report.stages
    starts, ends, last = _starts_and_ends(log)
    assert report.status == "cancelled"
    assert report.items_read == stage.arrived == source.pulled
    assert stage.completed + stage.failed + stage.not_processed == source.pulled
    assert stage.failed == 0
    assert stage.not_processed >= 1  # in flight when cancelled
    assert report.outputs == len(received)
    assert received == list(range(len(received)))  # in order, none missing
    assert stage.emitted == stage.completed == report.outputs + report.undelivered
    assert report.balanced
    # Each item that began on the cluster finished before the run ended;
    # none began twice, and only items that were read.
    assert len(set(starts)) == len(starts)
    assert sorted(starts) == sorted(ends)
    assert last < raised_at
    assert set(received) <= set(ends)
    assert stage.completed <= len(ends)
    assert set(starts) <= set(range(source.pulled))
    _assert_nothing_runs_on(deployed_client, log, len(starts))


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import itertools, os, sys, time
    from pipeline import Dask, Pipeline, PipelineStage

    class Slow(PipelineStage):
        def __init__(self, log):
            super().__init__()
            self.log = log

        def note(self, line):
            with open(self.log, "a") as notes:
                notes.write(line + "\\n")

        def process(self, item):
            self.note(f"start {item} {os.getpid()} {time.monotonic()}")
            for _ in range(10):
                time.sleep(0.03)
            self.note(f"end {item} {time.monotonic()}")
            return item

    if __name__ == "__main__":
        address, log = sys.argv[1:]
        stage = Slow(log)
        pipeline = Pipeline().add(stage, workers=4, executor=Dask(address, batch_size=2))
        try:
            pipeline.run(itertools.count(), timeout=60)
        except KeyboardInterrupt as error:
            ended = time.monotonic()
            print("interrupted", error.report.status, error.report.balanced, flush=True)
            print("run ended at", ended, flush=True)
            sys.exit(130)
    """
)


def _drain(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


def _interrupt_when(
    argv: list[str], ready: Callable[[], bool], after: float
) -> tuple[int, float, str, str]:
    """Run ``argv`` in a process group of its own, its output through pipes.

    Once ``ready()``, and ``after`` seconds more, SIGINT to the whole group,
    as a terminal's Ctrl-C does. Returns the exit code, the seconds from the
    SIGINT to the exit, stdout and stderr.
    """
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_drain, args=(process.stdout, out), name="test-stdout"),
        threading.Thread(target=_drain, args=(process.stderr, err), name="test-stderr"),
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + WAIT * 3
        while not ready():
            assert process.poll() is None, f"exited before work was seen: {''.join(out + err)}"
            assert time.monotonic() < deadline, f"no work seen: {''.join(out + err)[-3000:]}"
            time.sleep(0.01)
        time.sleep(after)  # the moment of the Ctrl-C varies from trial to trial
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        try:
            code = process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {WAIT} s after SIGINT; stdout: {''.join(out)[-2000:]!r}; "
                f"stderr: {''.join(err)[-3000:]!r}"
            ) from None
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for reader in readers:
            reader.join(WAIT)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return code, took, "".join(out), "".join(err)


@pytest.mark.timeout(180)
def test_ctrl_c_with_tasks_in_flight_exits_130_and_leaves_nothing_running(
    deployed_cluster: DaskCluster, deployed_client: Any, tmp_path: Path
) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    rng = random.Random()
    for trial in range(5):
        log = tmp_path / f"log-{trial}"
        code, took, out, err = _interrupt_when(
            [sys.executable, str(script), deployed_cluster.address, str(log)],
            partial(_busy, log),
            after=rng.random() * 0.3,
        )
        where = f"trial {trial}"
        assert code == 130, f"{where}: exit {code}\n{err[-3000:]}"
        assert took < 5, f"{where}: {took:.2f} s from SIGINT to exit"
        assert "interrupted interrupted True" in out, f"{where}: {out!r}"
        assert "Traceback" not in err, f"{where}: {err[-3000:]}"
        [ended] = [float(line.split()[-1]) for line in out.splitlines() if "run ended at" in line]
        starts, ends, last = _starts_and_ends(log)
        assert len(set(starts)) == len(starts), where
        assert sorted(starts) == sorted(ends), f"{where}: items cut short"
        assert last < ended, f"{where}: a line {last - ended:.3f} s after the run ended"
        _assert_nothing_runs_on(deployed_client, log, len(starts))
