"""Ctrl-C: in-process SIGINTs at chosen moments, and trials in subprocesses through pipes.

The subprocess trials read the child's output through pipes, as a terminal
would, and send SIGINT after a random delay; the default suite runs a few on
this Python, ``-m slow`` runs many on every Python the machine has.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

import pipeline
import pipeline._run
from pipeline import INTERRUPT_GRACE, Pipeline, PipelineInterrupted, PipelineStage, PipelineTimeout
from tests.helpers import WAIT, Join

ROOT = Path(__file__).resolve().parent.parent


def _sigint_main() -> None:
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


def _sender(
    ready: threading.Event,
    *,
    again: float | None = None,
    pipeline: Pipeline[int, int] | None = None,
) -> threading.Thread:
    """A thread (not started) that sends SIGINT once ``ready`` is set, and ``again`` s later.

    The second goes only once ``pipeline``'s run has counted the first: two
    signals that arrive before the main thread runs a handler are one signal.
    """

    def send() -> None:
        if not ready.wait(WAIT):
            return
        _sigint_main()
        if again is None or pipeline is None:
            return
        deadline = time.monotonic() + WAIT
        while not any(run.interrupts for run in list(pipeline._runs)):
            assert time.monotonic() < deadline, "the first SIGINT was never counted"
            time.sleep(0.001)
        time.sleep(again)
        _sigint_main()

    return threading.Thread(target=send, name="test-sender")


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture(autouse=True)
def default_sigint_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Gate:
    """Lets a test hold a worker inside process() until it says so."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()


class Held(PipelineStage[int]):
    """Item 0 waits inside process() for the gate; every stop is counted."""

    def __init__(self, gate: _Gate, *, seconds: float = WAIT, name: str = "held") -> None:
        super().__init__(name=name)
        self.gate = gate
        self.seconds = seconds
        self.stopped: list[str] = []

    def process(self, item: int) -> int:
        if item == 0:
            self.gate.inside.set()
            self.gate.release.wait(self.seconds)
        return item

    def on_stop(self) -> None:
        self.stopped.append(threading.current_thread().name)


# -- in process ------------------------------------------------------------------------


def test_ctrl_c_inside_a_logging_call_of_the_loop_body_comes_out_of_next_not_logging() -> None:
    # The main thread holds the logging handler's lock (Handler.handle takes
    # it around emit) when SIGINT lands. The KeyboardInterrupt must not come
    # out of the logging call: it comes out of the stream's next next().
    entered, sent = threading.Event(), threading.Event()

    class Gate(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            sent.wait(WAIT)

    log = logging.getLogger("tests.interrupt.gate")
    log.propagate = False
    handler = Gate()
    log.addHandler(handler)

    def send() -> None:
        if entered.wait(WAIT):
            _sigint_main()
        sent.set()

    sender = threading.Thread(target=send, name="test-sender")
    before = set(threading.enumerate()) | {sender}
    sender.start()
    logged_through: list[bool] = []

    def consume() -> None:
        with Pipeline[int]().map(abs, workers=2).stream(count()) as outputs:
            for n, _ in enumerate(outputs):
                if n == 5:
                    log.warning("inside the loop body")
                    logged_through.append(True)

    try:
        with pytest.raises(PipelineInterrupted) as caught:
            consume()
    finally:
        sent.set()
        sender.join(WAIT)
        log.removeHandler(handler)
    assert logged_through == [True], "the KeyboardInterrupt came out of the logging call"
    assert handler.lock is not None
    assert handler.lock.acquire(blocking=False)
    handler.lock.release()
    report = caught.value.report
    assert report is not None
    assert report.status == "interrupted"
    assert report.balanced
    assert _new_threads(before) == []


def test_ctrl_c_during_run_cancels_joins_every_worker_and_raises_pipeline_interrupted() -> None:
    gate = _Gate()
    stage = Held(gate)

    sender = _sender(gate.inside)
    before = set(threading.enumerate()) | {sender}
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            # Item 0 is held until the SIGINT's cancellation lets it go on.
            Pipeline[int]().add(stage, workers=3).each(lambda x: gate.release.set()).run(count())
    finally:
        gate.release.set()
        sender.join(WAIT)
    error = caught.value
    assert isinstance(error, PipelineInterrupted)
    assert error.report is not None
    assert error.report.status == "interrupted"
    assert error.report.balanced
    assert error.left_running == ()
    assert sorted(stage.stopped) == ["held-1", "held-2", "held-3"]
    assert _new_threads(before) == []


def test_a_second_ctrl_c_waits_for_items_that_end_within_the_grace() -> None:
    gate = _Gate()
    stage = Held(gate, seconds=0.5)  # item 0 ends by itself, after half a second

    pipeline = Pipeline[int]().add(stage, workers=3)
    sender = _sender(gate.inside, again=0.1, pipeline=pipeline)  # while the run waits for item 0
    before = set(threading.enumerate()) | {sender}
    sender.start()
    try:
        with pytest.raises(PipelineInterrupted) as caught:
            pipeline.run(count())
    finally:
        sender.join(WAIT)
    assert caught.value.left_running == ()
    assert sorted(stage.stopped) == ["held-1", "held-2", "held-3"]
    assert _new_threads(before) == []


def test_a_second_ctrl_c_leaves_a_worker_stuck_in_user_code_behind_and_names_it() -> None:
    gate = _Gate()
    stage = Held(gate, name="stuck")  # item 0 waits for the test to let it go

    pipeline = Pipeline[int]().add(stage)
    sender = _sender(gate.inside, again=0.05, pipeline=pipeline)
    before = set(threading.enumerate()) | {sender}
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(PipelineInterrupted) as caught:
            pipeline.run(count())
        took = time.monotonic() - started
    finally:
        sender.join(WAIT)
        gate.release.set()
    error = caught.value
    assert error.left_running == ("stuck-1 (inside process())",)
    assert any("stuck-1 (inside process())" in note for note in error.__notes__)
    assert error.report is not None
    assert error.report.left_running == error.left_running
    assert error.report.balanced  # the held item counts as not processed
    assert took < INTERRUPT_GRACE + 2.0
    # The thread left behind ends as soon as the code it was stuck in returns.
    for thread in threading.enumerate():
        if thread.name == "stuck-1":
            thread.join(WAIT)
    assert _new_threads(before) == []
    assert stage.stopped == ["stuck-1"]


def test_a_second_ctrl_c_in_a_loop_body_that_does_not_come_back_raises_there() -> None:
    in_body = threading.Event()

    pipeline = Pipeline[int]().map(abs, workers=2)
    sender = _sender(in_body, again=0.05, pipeline=pipeline)
    before = set(threading.enumerate()) | {sender}
    sender.start()
    outputs = pipeline.stream(count())
    interrupted_in_body = False
    raised: BaseException | None = None
    try:
        with outputs:
            for _ in outputs:
                in_body.set()
                try:
                    time.sleep(WAIT)  # a body stuck in its own code
                except KeyboardInterrupt:
                    interrupted_in_body = True
                    raise
    except KeyboardInterrupt as error:
        raised = error
    finally:
        sender.join(WAIT)
    assert not isinstance(raised, PipelineInterrupted)  # Python's own, raised in the body
    assert interrupted_in_body
    assert outputs.report is not None
    assert outputs.report.status == "interrupted"
    assert outputs.report.balanced
    assert _new_threads(before) == []


class _Finalised:
    """Sends the second SIGINT from its ``__del__``."""

    def __init__(self, signalled: list[str]) -> None:
        self.signalled = signalled

    def __del__(self) -> None:
        self.signalled.append("__del__")
        signal.raise_signal(signal.SIGINT)  # its handler runs here, in the finaliser


def _second_sigint_in(where: str, signalled: list[str]) -> None:
    """Send SIGINT from inside a gc callback or a ``__del__``, as a collection would."""

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and not signalled:
            signalled.append("gc callback")
            signal.raise_signal(signal.SIGINT)  # its handler runs here, in the callback

    if where == "__del__":
        _Finalised(signalled)  # dropped at once: __del__ runs here
        return
    gc.callbacks.append(on_collection)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(on_collection)


@pytest.mark.parametrize("where", ["gc callback", "__del__"])
def test_a_second_ctrl_c_where_python_would_drop_the_exception_is_not_raised_there(
    where: str,
) -> None:
    # Python runs gc callbacks (Dask's scheduler installs one in the driver)
    # and finalisers in whatever the main thread was doing, and an exception
    # that leaves one is printed as "Exception ignored" and dropped. A second
    # Ctrl-C that lands in one must not be raised there: the stream's next
    # next() raises PipelineInterrupted, as after the first alone.
    dropped: list[object] = []
    signalled: list[str] = []
    pipeline = Pipeline[int]().map(abs, workers=2)
    before = set(threading.enumerate())

    def consume() -> None:
        with pipeline.stream(count()) as outputs:
            for n, _ in enumerate(outputs):
                if n == 0:
                    signal.raise_signal(signal.SIGINT)  # the first: cancels the run
                    _second_sigint_in(where, signalled)

    hook = sys.unraisablehook

    def keep_interrupts(unraisable: sys.UnraisableHookArgs) -> None:
        # Ours to check: a Ctrl-C dropped. Anything else (an earlier test's
        # connection finalised by this test's collection) goes on as before.
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            dropped.append(unraisable)
        else:
            hook(unraisable)

    sys.unraisablehook = keep_interrupts
    try:
        with pytest.raises(PipelineInterrupted) as caught:
            consume()
    finally:
        sys.unraisablehook = hook
    assert signalled == [where], "the second SIGINT was not sent"
    assert dropped == []
    report = caught.value.report
    assert report is not None
    assert report.status == "interrupted"
    assert report.balanced
    assert _new_threads(before) == []


@pytest.mark.parametrize(
    "end",
    ["run", "failed run", "exhausted stream", "closed stream", "unstarted stream"],
)
def test_the_default_handler_is_back_after_every_kind_of_end(end: str) -> None:
    pipeline = Pipeline[int]().map(lambda x: 1 // x)
    if end == "run":
        pipeline.run([1, 2])
    elif end == "failed run":
        with pytest.raises(Exception, match="failed on item 0"):
            pipeline.run([1, 0])
    elif end == "exhausted stream":
        assert list(pipeline.stream([1])) == [1]
    elif end == "closed stream":
        with pipeline.stream(count(1)) as outputs:
            next(outputs)
    else:
        pipeline.stream([1]).close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # And the next run is protected again.
    seen: list[object] = []
    Pipeline[int]().each(lambda x: seen.append(signal.getsignal(signal.SIGINT))).run([1])
    assert seen != [signal.default_int_handler]


def test_a_programs_own_sigint_handler_is_left_alone() -> None:
    def own(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGINT, own)
    seen: list[object] = []
    Pipeline[int]().each(lambda x: seen.append(signal.getsignal(signal.SIGINT))).run([1, 2])
    assert seen == [own, own]
    assert signal.getsignal(signal.SIGINT) is own


def test_a_run_in_another_thread_leaves_sigint_to_the_main_thread() -> None:
    seen: list[object] = []
    worker = threading.Thread(
        target=lambda: Pipeline[int]().each(lambda x: seen.append(signal.getsignal(2))).run([1])
    )
    worker.start()
    worker.join(WAIT)
    assert seen == [signal.default_int_handler]


# -- SIGINT while the main thread waits in the library, found by its stack ----------------


LIBRARY = Path(pipeline.__file__).resolve().parent


def _main_thread_waits_in_the_library() -> bool:
    """Whether the main thread is inside the library, past starting threads.

    That is: it is blocked in ``run()`` or in a stream's ``next()`` waiting
    for outputs, not running test code and not in ``Thread.start()``.
    """
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    in_library = False
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.name == "threading.py" and frame.f_code.co_name == "start":
            return False
        in_library = in_library or LIBRARY in path.parents
        frame = frame.f_back
    return in_library


def _interrupt_once_main_waits(ready: threading.Event, names: set[str]) -> None:
    """After ``ready``, once the threads ``names`` run and main waits on them, Ctrl-C."""
    assert ready.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while not (
        names <= {t.name for t in threading.enumerate()} and _main_thread_waits_in_the_library()
    ):
        assert time.monotonic() < deadline, "the main thread never waited in the library"
        time.sleep(0.001)
    _sigint_main()


def test_ctrl_c_during_run_cancels_joins_and_reraises() -> None:
    flowing = threading.Event()
    pipeline = Pipeline[int]().each(lambda x: flowing.set(), name="watch").map(abs, workers=2)
    names = {"pipeline-source", "watch-1", "abs-1", "abs-2"}
    sender = Join(lambda: _interrupt_once_main_waits(flowing, names))
    before = set(threading.enumerate()) | {sender.thread}
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(count())
        assert _new_threads(before) == []
    finally:
        flowing.set()
        sender.join()


def test_ctrl_c_while_run_starts_its_threads_still_joins_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C can land while Thread.start() waits for the new thread to come
    # up: the thread then runs, though start() raised. Simulate exactly that,
    # with the new thread busy on an item, which the run must wait for.
    holding = threading.Event()

    def work(x: int) -> int:
        if threading.current_thread().name == "work-2":
            holding.set()
            time.sleep(0.1)  # simulated I/O
        return x

    start = threading.Thread.start

    def start_then_interrupt(thread: threading.Thread) -> None:
        start(thread)
        if thread.name == "work-2":
            assert holding.wait(WAIT)
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        Pipeline[int]().map(work, workers=3).run(count())
    monkeypatch.undo()
    assert _new_threads(before) == []


def test_ctrl_c_during_stream_marks_the_report_interrupted() -> None:
    all_received = threading.Event()
    # Items 50 and up are filtered out: once the consumer has the first 50,
    # it can only be waiting inside the stream's next().
    names = {"pipeline-source", "<lambda>-1", "<lambda>-2"}

    before = set(threading.enumerate())
    outputs = Pipeline[int]().filter(lambda x: x < 50, workers=2).stream(count())
    received: list[int] = []
    sender = Join(lambda: _interrupt_once_main_waits(all_received, names))
    try:
        for item in outputs:
            received.append(item)
            if item == 49:
                all_received.set()
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail("the stream ended without KeyboardInterrupt")
    finally:
        all_received.set()
        sender.join()
    assert _new_threads(before) == []
    assert received == list(range(50))
    report = outputs.report
    assert report is not None
    assert report.status == "interrupted"
    assert report.balanced
    assert report.outputs == 50


def test_a_ctrl_c_that_does_not_wake_the_streams_wait_still_stops_it() -> None:
    # A SIGINT raised in another thread is flagged for the main thread's
    # handler but does not interrupt the main thread's sleep: what a SIGINT
    # does that lands between a wait's last look for signals and its sleep
    # (1 Ctrl-C in 50 to 1000, on 3.11 and 3.12, hung such a stream).
    all_received = threading.Event()
    names = {"pipeline-source", "<lambda>-1"}
    before = set(threading.enumerate())
    outputs = Pipeline[int]().filter(lambda x: x < 5).stream(count())

    def raise_here() -> None:
        assert all_received.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while not (
            names <= {t.name for t in threading.enumerate()} and _main_thread_waits_in_the_library()
        ):
            assert time.monotonic() < deadline, "the main thread never waited in the library"
            time.sleep(0.001)
        signal.raise_signal(signal.SIGINT)

    sender = Join(raise_here)
    received: list[int] = []
    try:
        for item in outputs:
            received.append(item)
            if item == 4:
                all_received.set()
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail("the stream ended without KeyboardInterrupt")
    finally:
        all_received.set()
        sender.join()
    assert received == [0, 1, 2, 3, 4]
    assert outputs.report is not None
    assert outputs.report.status == "interrupted"
    assert _new_threads(before) == []


def _consume_until_ten_then_interrupt(outputs: Iterator[int]) -> None:
    for item in outputs:
        if item == 10:
            raise KeyboardInterrupt


def test_keyboard_interrupt_in_the_consumer_closes_the_stream_and_its_threads() -> None:
    before = set(threading.enumerate())
    with (
        pytest.raises(KeyboardInterrupt),
        Pipeline[int]().map(lambda x: x, workers=2).stream(count()) as outputs,
    ):
        _consume_until_ten_then_interrupt(outputs)
    assert _new_threads(before) == []
    assert outputs.report is not None
    assert outputs.report.status == "closed"
    assert outputs.report.balanced


# -- in subprocesses, output read through pipes --------------------------------------------


def _pythons() -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, argv prefix, extra env) of every Python here: this one, and pyenv's others.

    The others run the checkout's source (PYTHONPATH), without typing_extensions
    unless they have it: the library runs without it.
    """
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    found: list[tuple[str, list[str], dict[str, str]]] = [(here, [sys.executable], {})]
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if versions.is_dir() and shutil.which("pyenv"):
        for minor in ("3.11", "3.12", "3.13"):
            if minor == found[0][0]:
                continue
            patches = sorted(
                (p.name for p in versions.iterdir() if p.name.startswith(minor + ".")),
                key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()),
            )
            patches = [p for p in patches if p.replace(".", "").isdigit()]
            if patches:
                env = {"PYENV_VERSION": patches[-1], "PYTHONPATH": str(ROOT / "src")}
                found.append((minor, [f"python{minor}"], env))
    return found


PYTHONS = _pythons()


def _drain(stream: object, into: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line)


def interrupt(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    ready: str | None = None,
    after: float = 0.0,
    again: float | None = None,
    group: bool = False,
) -> tuple[int, float, str, str]:
    """Run ``argv`` with its output through pipes; SIGINT once ``ready`` shows, ``after`` s later.

    ``again``: a second SIGINT that many seconds after the first. ``group``:
    run it in a process group of its own and signal the whole group, as a
    terminal's Ctrl-C does (its children get the signal too). Returns the
    exit code, the seconds from the first SIGINT to the exit, stdout, stderr.
    """
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=group,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
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
        while ready is not None and not any(ready in line for line in out + err):
            assert process.poll() is None, f"exited before {ready!r}: {''.join(out + err)}"
            assert time.monotonic() < deadline, f"never printed {ready!r}"
            time.sleep(0.01)
        time.sleep(after)
        sent = time.monotonic()

        def send() -> None:
            if group:
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.send_signal(signal.SIGINT)

        send()
        if again is not None:
            time.sleep(again)
            send()
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
        if group:
            # Its children too: they hold the pipes open.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for reader in readers:
            reader.join(WAIT)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return code, took, "".join(out), "".join(err)


LOGGING_SCRIPT = textwrap.dedent(
    """
    import itertools, logging, sys
    from pipeline import Pipeline

    logging.basicConfig(level=logging.INFO, format="%(threadName)s %(message)s")
    log = logging.getLogger("script")

    def work(x):
        log.info("worker has %s", x)
        return x

    try:
        for item in Pipeline().map(work, workers=3).stream(itertools.count()):
            log.info("loop body has %s", item)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)

TWO_CTRL_C_SCRIPT = textwrap.dedent(
    """
    import itertools, sys, time
    from pipeline import Pipeline, PipelineStage

    class Second(PipelineStage):
        def process(self, item):
            print("started", flush=True)
            time.sleep(1.0)
            return item

        def on_stop(self):
            print("on_stop ran", flush=True)

    try:
        Pipeline().add(Second(), workers=3).run(itertools.count())
    except KeyboardInterrupt as error:
        print("left running:", list(error.left_running), flush=True)
        sys.exit(130)
    """
)


def _trials(python: tuple[str, list[str], dict[str, str]], trials: int) -> None:
    label, prefix, env = python
    rng = random.Random()
    for trial in range(trials):
        demo = [*prefix, "-m", "pipeline", "--items", "100000000"]
        code, took, out, err = interrupt(demo, env=env, ready="Final output", after=rng.random())
        where = f"Python {label}, demo trial {trial}"
        assert code == 130, f"{where}: exit {code}\n{err[-2000:]}"
        assert took < 2.0, f"{where}: {took:.2f} s to exit"
        assert "interrupted (Ctrl-C)" in err, where
        assert "Status: interrupted" in out, where
        script = [*prefix, "-c", LOGGING_SCRIPT]
        code, took, out, err = interrupt(script, env=env, ready="loop body", after=rng.random())
        where = f"Python {label}, logging script trial {trial}"
        assert code == 130, f"{where}: exit {code}\n{err[-2000:]}"
        assert took < 2.0, f"{where}: {took:.2f} s to exit"
        assert "interrupted" in out, where


def test_ctrl_c_stops_the_demo_and_a_logging_script_within_two_seconds() -> None:
    _trials(PYTHONS[0], 3)


@pytest.mark.slow
@pytest.mark.parametrize("python", PYTHONS, ids=[p[0] for p in PYTHONS])
@pytest.mark.timeout(900)
def test_ctrl_c_stops_the_demo_and_a_logging_script_in_many_trials(
    python: tuple[str, list[str], dict[str, str]],
) -> None:
    _trials(python, 25)


@pytest.mark.parametrize("python", PYTHONS, ids=[p[0] for p in PYTHONS])
def test_two_ctrl_c_let_items_of_a_second_end_run_on_stop_and_exit_130(
    python: tuple[str, list[str], dict[str, str]],
) -> None:
    _, prefix, env = python
    code, took, out, _ = interrupt(
        [*prefix, "-c", TWO_CTRL_C_SCRIPT], env=env, ready="started", after=0.2, again=0.2
    )
    assert code == 130, out
    assert out.count("on_stop ran") == 3, out
    assert "left running: []" in out
    assert out.rindex("on_stop ran") < out.index("left running")  # raised once all stopped
    assert took < 2.0


@pytest.mark.parametrize("launcher", ["run_data_example.py", "run_custom_example.py"])
def test_ctrl_c_in_an_example_exits_130_with_a_message_and_the_partial_report(
    launcher: str, tmp_path: Path
) -> None:
    argv = [sys.executable, launcher]
    if launcher == "run_data_example.py":
        argv += ["--files", "60", "--root", str(tmp_path)]
        ready = "Dispatcher: dispatching"  # the run is going (setup: the next test)
    else:
        argv += ["--images", "100", "--sample-size", "256", "--output", str(tmp_path)]
        ready = "[INFO]"
    # A terminal's Ctrl-C: the whole process group, the fork server and the
    # embedded API's process included (the latter has a session of its own).
    code, _, out, err = interrupt(argv, ready=ready, after=0.3, group=True)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "interrupted (Ctrl-C): the run was stopped; partial report below"
    ]
    assert "=== VERIFICATION REPORT ===" in out


def test_ctrl_c_while_the_migration_tool_sets_up_exits_130_with_one_line(tmp_path: Path) -> None:
    # The setup's last step asks the API whether it is up, after seeding. This
    # API takes the connection and never answers, so the Ctrl-C sent once the
    # seeding is logged lands in the setup however loaded the machine is (the
    # embedded API is up before the seeding: no window of its own to aim at).
    with socket.create_server(("127.0.0.1", 0)) as silent_api:
        url = f"http://127.0.0.1:{silent_api.getsockname()[1]}"
        argv = [sys.executable, "run_data_example.py", "--files", "5", "--root", str(tmp_path)]
        argv += ["--api-url", url, "--api-token", "t0ken"]
        code, _, out, err = interrupt(argv, ready="Seeded 5 files", group=True)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted (Ctrl-C) before the migration started" in err.splitlines()
    assert out == ""


@pytest.mark.parametrize("mode", ["run", "stream"])
def test_waits_in_slices_deliver_the_same_outputs_and_timeouts(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a free-threaded build does (see pipeline._run.SLICED_WAITS), on any build.
    monkeypatch.setattr(pipeline._run, "SLICED_WAITS", True)
    monkeypatch.setattr(pipeline._run, "_WAIT_SLICE", 0.01)

    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    slow = Pipeline[float]().map(nap)
    items = [0.03] * 3
    if mode == "run":
        assert slow.run(items).outputs == items
        with pytest.raises(PipelineTimeout):
            slow.run([0.03] * 100, timeout=0.1)
    else:
        assert list(slow.stream(items)) == items
        with pytest.raises(PipelineTimeout):
            list(slow.stream([0.03] * 100, timeout=0.1))


def test_generated_code_the_library_calls_counts_as_the_library() -> None:
    # A dataclass's __init__ is compiled from a string ("<string>"): a second
    # Ctrl-C landing in one the library builds (its report's) must not be
    # taken for user code, which would raise KeyboardInterrupt there.
    from dataclasses import dataclass, field

    from pipeline._interrupt import in_library

    seen: list[bool] = []

    @dataclass
    class Made:
        value: int
        _: None = field(default=None, repr=False)

        def __post_init__(self) -> None:
            generated = sys._getframe(1)  # the dataclass's __init__
            assert generated.f_code.co_filename.startswith("<")
            seen.append(in_library(generated))

    Pipeline[int]().map(Made).run([1])  # called from the library's worker
    assert seen == [True]
    Made(2)  # called from here, user code
    assert seen == [True, False]
