"""Where process() runs: the ``executor=`` option, one contract for every executor.

The contract tests run the same pipelines on threads, on worker processes
(``"process"``), on a user's ``ThreadPoolExecutor``, on a user's
``ProcessPoolExecutor`` and on a Dask LocalCluster (the ``dask_client``
fixture; tests/test_dask.py has the rest). Then what only processes have: hooks once per
process, a child that dies, things that do not pickle, exceptions that come
back, and cancellation with live children (no process left behind: checked
in the process table).

The stage functions are at module level so that a ``ProcessPoolExecutor``
(plain pickle) can send them; worker processes import this module.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pipeline import (
    Pipeline,
    PipelineCancelled,
    PipelineStage,
    PipelineTimeout,
    Retry,
    StageError,
    WorkerDied,
)
from tests.helpers import WAIT, child_processes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_process_leaks() -> Iterator[None]:
    """Fail the test if a worker process it started is still there afterwards."""
    yield
    left = child_processes()
    for child in left:
        child.join(WAIT)
    assert left == [], f"test left processes running: {left}"


@pytest.fixture
def process_pool() -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        yield pool


@pytest.fixture
def thread_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


EXECUTORS = ["thread", "process", "thread_pool", "process_pool", "dask"]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Any:
    name: str = request.param
    if name == "dask":
        return request.getfixturevalue("dask_client")  # a Client of a 2-process LocalCluster
    if name.endswith("_pool"):
        pool: Executor = request.getfixturevalue(name)
        return pool
    return name


# -- module-level stage functions ----------------------------------------------------


def triple(x: int) -> int:
    return x * 3


def odd(x: int) -> bool:
    return x % 2 == 1


def spread(x: int) -> list[int]:
    return [x] * (x % 3)


def invert(x: int) -> float:
    return 1 / x


class CustomError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code


def raise_custom(x: int) -> int:
    if x == 4:
        raise CustomError(42, "four")
    return x


class Unpicklable(Exception):
    """Pickles, but cannot be rebuilt from its args."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)
        self.b = b


def raise_unpicklable(x: int) -> int:
    if x == 2:
        raise Unpicklable(1, 2)
    return x


def exit_on_five(x: int) -> int:
    if x == 5:
        os._exit(7)
    return x


def kill_on_five(x: int) -> int:
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def lock_output(x: int) -> object:
    return threading.Lock() if x == 3 else x


def pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


def flaky(folder: Path, x: int) -> int:
    """Fails the first time each multiple of 3 is tried, in whichever process."""
    marker = folder / str(x)
    if x % 3 == 0 and not marker.exists():
        marker.touch()
        raise OSError(f"flaky {x}")
    return x


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this Python with ``args`` in ``cwd``; its output captured as text."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=WAIT * 3, cwd=cwd,
        check=False,
    )  # fmt: skip


def _gone(pid: int) -> bool:
    """Whether ``pid`` has left the process table (or is a zombie about to), within WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


# -- the contract, on every executor -------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_map_filter_flat_map_keep_input_order(executor: str | Executor, workers: int) -> None:
    result = (
        Pipeline[int]()
        .map(triple, workers=workers, executor=executor)
        .filter(odd, workers=workers, executor=executor)
        .flat_map(spread, workers=workers, executor=executor)
        .run(range(200), timeout=WAIT * 3)
    )
    expected = [y for x in range(200) if (x * 3) % 2 == 1 for y in spread(x * 3)]
    assert result.outputs == expected
    report = result.report
    assert report.balanced
    assert report.items_read == 200
    assert [s.received for s in report.stages] == [200, 200, 100]
    assert report.stages[1].dropped == 100


def test_unordered_outputs_are_the_same_items(executor: str | Executor) -> None:
    pipeline = Pipeline[int]().map(triple, workers=3, ordered=False, executor=executor)
    result = pipeline.run(range(500))
    assert sorted(result.outputs) == [x * 3 for x in range(500)]


def test_fail_fast_raises_the_original_error_naming_the_item(executor: str | Executor) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(raise_custom, workers=2, executor=executor).run(range(10))
    error = caught.value
    assert (error.stage, error.item) == ("raise_custom", 4)
    cause = error.__cause__
    assert type(cause) is CustomError
    assert cause.args == (42, "four")
    assert cause.code == 42
    assert error.report is not None
    assert error.report.balanced


def test_skip_makes_dead_letters_of_exactly_the_failing_items(executor: str | Executor) -> None:
    result = (
        Pipeline[int]()
        .map(invert, workers=2, on_error="skip", executor=executor)
        .run([1, 0, 2, 0, 4])
    )
    assert result.outputs == [1.0, 0.5, 0.25]
    assert [letter.item for letter in result.report.dead_letters] == [0, 0]
    assert all(type(d.exception) is ZeroDivisionError for d in result.report.dead_letters)
    assert result.report.failed == 2


def test_retry_recovers_items_that_fail_once(executor: str | Executor, tmp_path: Path) -> None:
    retry = Retry(attempts=2, backoff=0.001, on=(OSError,))
    fn = partial(flaky, tmp_path)
    result = Pipeline[int]().map(fn, workers=2, retry=retry, executor=executor).run(range(30))
    assert result.outputs == list(range(30))
    assert result.report.stages[0].retried == 10


def test_a_cancelled_run_is_balanced(executor: str | Executor) -> None:
    pipeline = Pipeline[int]().map(triple, workers=2, executor=executor)
    stream = pipeline.stream(iter(int, 1))  # endless zeros
    taken = [next(stream) for _ in range(5)]
    pipeline.cancel()
    with pytest.raises(PipelineCancelled) as caught:
        for _ in stream:
            pass
    assert taken == [0] * 5
    report = caught.value.report
    assert report is not None
    assert report.balanced
    assert report.status == "cancelled"


# -- executor="process": hooks, deaths, pickling, exceptions -----------------------


class Recorder(PipelineStage[int, tuple[int, int]]):
    """Writes a line per hook call to a file per process; emits (item, pid)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _note(self, what: str) -> None:
        with (self.folder / str(os.getpid())).open("a") as notes:
            notes.write(what + "\n")

    def on_start(self) -> None:
        self._note("start")

    def process(self, item: int) -> tuple[int, int]:
        return item, os.getpid()

    def on_stop(self) -> None:
        self._note("stop")


def test_hooks_run_once_in_each_worker_process(tmp_path: Path) -> None:
    result = Pipeline[int]().add(Recorder(tmp_path), workers=2, executor="process").run(range(300))
    assert [item for item, _ in result.outputs] == list(range(300))
    pids = {int(p.name) for p in tmp_path.iterdir()}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert {pid for _, pid in result.outputs} <= pids
    for pid in pids:
        assert (tmp_path / str(pid)).read_text() == "start\nstop\n"
        assert _gone(pid)


class FailingStart(PipelineStage[int]):
    def on_start(self) -> None:
        raise CustomError(7, "no start")

    def process(self, item: int) -> int:
        return item


def test_on_start_failing_in_the_child_fails_the_run_with_its_error() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(FailingStart(), workers=2, executor="process").run(range(5))
    assert caught.value.where == "on_start"
    assert type(caught.value.__cause__) is CustomError
    assert caught.value.__cause__.args == (7, "no start")


def test_the_child_traceback_comes_back_as_a_note() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(raise_custom, executor="process").run(range(10))
    [note] = caught.value.__cause__.__notes__  # type: ignore[union-attr]
    assert note.startswith("raised in worker process ")
    assert "in raise_custom" in note
    assert "CustomError: (42, 'four')" in note


def test_an_exception_that_cannot_be_rebuilt_comes_back_as_a_runtime_error() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(raise_unpicklable, executor="process").run(range(5))
    cause = caught.value.__cause__
    assert type(cause) is RuntimeError
    assert "Unpicklable" in str(cause)
    assert "could not be pickled" in cause.__notes__[0]


@pytest.mark.parametrize("crash", [exit_on_five, kill_on_five])
def test_a_child_that_dies_fails_the_run_naming_the_item(crash: Any) -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(crash, workers=2, executor="process").run(range(20))
    error = caught.value
    assert error.item == 5
    assert type(error.__cause__) is WorkerDied
    assert ("exit code 7" if crash is exit_on_five else "killed by SIGKILL") in str(error.__cause__)
    assert error.report is not None
    assert error.report.balanced
    assert error.report.failed == 1


def test_under_skip_a_deadly_item_is_a_dead_letter_and_nothing_is_lost() -> None:
    source = list(range(40))
    result = (
        Pipeline[int]()
        .map(exit_on_five, workers=2, on_error="skip", executor="process")
        .run(source)
    )
    assert result.outputs == [x for x in source if x != 5]
    [letter] = result.report.dead_letters
    assert letter.item == 5
    assert type(letter.exception) is WorkerDied
    stage = result.report.stages[0]
    assert (stage.completed, stage.failed, stage.not_processed) == (39, 1, 0)


def crash_twice(marker: Path) -> Any:
    """Item 5 kills its process the first two times (in its batch, then alone)."""

    def fn(x: int) -> int:
        if x == 5:
            with marker.open("a") as crashes:
                crashes.write("x")
            if len(marker.read_text()) <= 2:
                os._exit(3)
        return x

    return fn


def test_retry_tries_a_deadly_item_again_in_a_fresh_process(tmp_path: Path) -> None:
    marker = tmp_path / "crashes"
    fn = crash_twice(marker)
    result = Pipeline[int]().map(fn, workers=2, retry=Retry(attempts=2, backoff=0.001),
                                 executor="process").run(range(20))  # fmt: skip
    assert result.outputs == list(range(20))
    assert result.report.stages[0].retried == 1
    assert marker.read_text() == "xxx"


class Holder(PipelineStage[int]):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def process(self, item: int) -> int:
        return item


def test_a_stage_that_does_not_pickle_is_refused_at_add() -> None:
    with pytest.raises(TypeError, match=r"stage 'Holder' cannot be sent to a worker process"):
        Pipeline[int]().add(Holder(), executor="process")


def test_without_cloudpickle_a_lambda_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # import raises ImportError
    with pytest.raises(TypeError, match=r"at module level, or install cloudpickle"):
        Pipeline[int]().map(lambda x: x, executor="process")
    assert Pipeline[int]().map(triple, executor="process").run([1]).outputs == [3]


def test_with_cloudpickle_a_lambda_runs_in_a_process() -> None:
    pytest.importorskip("cloudpickle")
    result = Pipeline[int]().map(lambda x: (x, os.getpid()), executor="process").run([1, 2])
    assert [x for x, _ in result.outputs] == [1, 2]
    assert {pid for _, pid in result.outputs} != {os.getpid()}


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_an_item_that_does_not_pickle_is_that_items_error(on_error: Any) -> None:
    lock = threading.Lock()
    source: list[Any] = [1, 2, lock, 4]
    pipeline = Pipeline[Any]().map(str, on_error=on_error, executor="process")
    if on_error == "raise":
        with pytest.raises(StageError) as caught:
            pipeline.run(source)
        assert caught.value.item is lock
        assert type(caught.value.__cause__) is TypeError
        assert "could not be sent to the worker process" in str(caught.value.__cause__)
        return
    result = pipeline.run(source)
    assert result.outputs == ["1", "2", "4"]
    assert [d.item for d in result.report.dead_letters] == [lock]


def test_an_output_that_does_not_pickle_is_that_items_error() -> None:
    result = Pipeline[int]().map(lock_output, on_error="skip", executor="process").run(range(6))
    assert result.outputs == [0, 1, 2, 4, 5]
    [letter] = result.report.dead_letters
    assert letter.item == 3
    assert "could not be sent back from the worker process" in str(letter.exception)


def sleep_and_note(busy: Path) -> Any:
    """Sleep for the item's seconds, having written the process's pid to ``busy``."""

    def fn(x: float) -> float:
        busy.write_text(str(os.getpid()))
        time.sleep(x)
        return x

    return fn


def _wait_for_file(path: Path) -> int:
    deadline = time.monotonic() + WAIT
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    return int(path.read_text())


def test_cancel_terminates_a_busy_child_at_once(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    pipeline = Pipeline[float]().map(sleep_and_note(busy), workers=2, executor="process")
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run([60.0] * 4)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run, name="test-runner")
    runner.start()
    pid = _wait_for_file(busy)
    started = time.monotonic()
    pipeline.cancel()
    runner.join(WAIT)
    assert not runner.is_alive()
    assert time.monotonic() - started < 5
    [error] = outcome
    assert isinstance(error, PipelineCancelled)
    assert error.report is not None
    assert error.report.balanced
    assert error.report.not_processed == 4
    assert _gone(pid)


def test_a_timeout_terminates_busy_children(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PipelineTimeout):
        Pipeline[float]().map(sleep_and_note(tmp_path / "busy"), workers=2, executor="process").run(
            [60.0] * 4, timeout=1.0
        )
    assert time.monotonic() - started < 8
    assert _gone(int((tmp_path / "busy").read_text()))


# -- user-supplied executors -----------------------------------------------------


class WithHooks(PipelineStage[int]):
    def on_start(self) -> None:
        pass

    def process(self, item: int) -> int:
        return item


def test_an_executor_instance_refuses_a_stage_with_hooks(thread_pool: ThreadPoolExecutor) -> None:
    with pytest.raises(ValueError, match=r"stage 'WithHooks' has on_start/on_stop"):
        Pipeline[int]().add(WithHooks(), executor=thread_pool)


def test_a_process_pool_refuses_a_lambda_at_add(process_pool: ProcessPoolExecutor) -> None:
    with pytest.raises(TypeError, match=r"cannot be sent to a ProcessPoolExecutor"):
        Pipeline[int]().map(lambda x: x, executor=process_pool)


def test_a_thread_pool_runs_batches_in_its_own_threads(thread_pool: ThreadPoolExecutor) -> None:
    names = Pipeline[int]().map(lambda _: threading.current_thread().name, executor=thread_pool)
    outputs = names.run(range(50)).outputs
    assert all(name.startswith("ThreadPoolExecutor") for name in outputs)


def test_a_shut_down_executor_fails_the_run_naming_the_first_item() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(triple, executor=pool).run([1, 2, 3])
    assert caught.value.item == 1
    assert "shutdown" in str(caught.value.__cause__)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("proces", ValueError, r"'executor' must be .*got 'proces' \(did you mean 'process'\?\)"),
        (3, TypeError, r"'executor' must be .*not int"),
    ],
)
def test_a_bad_executor_is_refused_naming_the_option(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Pipeline[int]().map(triple, executor=value)  # type: ignore[arg-type]


# -- scripts: Ctrl-C reaches the children, and the main guard ---------------------

CTRL_C_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pipeline import Pipeline

    def work(x):
        print("busy", os.getpid(), flush=True)
        time.sleep(60)
        return x

    if __name__ == "__main__":
        try:
            Pipeline().map(work, workers=2, executor="process").run(range(4))
        except KeyboardInterrupt as error:
            print("interrupted", error.report.not_processed, flush=True)
            sys.exit(130)
    """
)


def test_ctrl_c_in_a_terminal_stops_the_run_and_its_children(tmp_path: Path) -> None:
    from tests.test_interrupt import interrupt  # the subprocess helper

    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    code, took, out, err = interrupt(
        [sys.executable, str(script)], ready="busy", after=0.2, group=True
    )
    assert code == 130, err
    assert "interrupted 4" in out
    assert "Traceback" not in err  # none from the children either
    assert took < 5
    pids = {int(line.split()[1]) for line in out.splitlines() if line.startswith("busy")}
    assert pids
    assert all(_gone(pid) for pid in pids)


def test_a_script_without_a_main_guard_gets_told_what_to_do(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pipeline import Pipeline\nPipeline().map(abs, executor='process').run([-1])\n"
    )
    done = _python([str(script)], cwd=ROOT)
    assert done.returncode == 1
    assert "if __name__ == '__main__':" in done.stderr
    assert "StageError" in done.stderr


WHERE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])   # a copy of the package first, as the launchers do
    import pipeline

    def where(_):
        import pipeline
        return pipeline.__file__

    if __name__ == "__main__":
        print(pipeline.__file__)
        print(pipeline.Pipeline().map(where, executor="process").run([0]).outputs[0])
    """
)


def test_worker_processes_import_the_copy_of_the_library_the_program_runs(
    tmp_path: Path,
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "src" / "pipeline", copy / "pipeline")
    script = tmp_path / "where.py"
    script.write_text(WHERE_SCRIPT)
    done = _python([str(script), str(copy)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    parent, child = done.stdout.split()
    assert parent == child == str(copy / "pipeline" / "__init__.py")


MAIN_CLASSES_SCRIPT = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "without":
        sys.modules["cloudpickle"] = None  # plain pickle, both ways
    from dataclasses import dataclass
    from pipeline import Pipeline, StageError

    class MyError(Exception):
        pass

    @dataclass
    class Point:
        x: int

    def to_point(x):
        if x == 3:
            raise MyError(x)
        return Point(x)

    def check(point):
        assert isinstance(point, Point), type(point)
        return point.x

    if __name__ == "__main__":
        there = Pipeline().map(to_point, executor="process").map(check).run(range(3))
        back = Pipeline().map(to_point).map(check, executor="process").run(range(3))
        print(there.outputs, back.outputs)
        try:
            Pipeline().map(to_point, executor="process").run(range(5))
        except StageError as error:
            print(type(error.__cause__) is MyError, error.__cause__.args)
    """
)


@pytest.mark.parametrize("cloudpickle", ["with", "without"])
def test_classes_of_the_script_go_to_worker_processes_and_come_back_as_themselves(
    tmp_path: Path, cloudpickle: str
) -> None:
    # The worker re-imports the script, as __mp_main__: its Point is another
    # class object than the script's, unless the messages say which one.
    script = tmp_path / "classes.py"
    script.write_text(MAIN_CLASSES_SCRIPT)
    done = _python([str(script), cloudpickle], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[0, 1, 2] [0, 1, 2]", "True (3,)"]


def test_without_cloudpickle_a_function_of_python_c_is_refused_at_add() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["cloudpickle"] = None
        from pipeline import Pipeline
        def f(x):
            return x
        try:
            Pipeline().map(f, executor="process")
        except TypeError as error:
            print(error)
        """
    )
    done = _python(["-c", code], cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "defined in a __main__ that worker processes cannot import" in done.stdout
    assert "install cloudpickle" in done.stdout


def _thread_name(_: int) -> str:
    return threading.current_thread().name


def test_a_worker_process_runs_under_its_worker_name_for_log_lines() -> None:
    names = Pipeline[int]().map(_thread_name, workers=2, executor="process").run(range(20))
    assert set(names.outputs) <= {"_thread_name-1", "_thread_name-2"}
