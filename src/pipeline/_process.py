"""Worker processes for ``executor="process"``: the only module that starts and ends processes.

Each worker of a process stage is a thread of the pipeline that drives one
child process through a pipe (a :class:`ProcessWorker`). The child receives
the stage pickled, runs ``on_start`` once, then processes the batches it is
sent with :func:`~pipeline._batch.process_batch` and sends each outcome back;
told to stop, it runs ``on_stop`` and exits. The worker thread applies the
outcomes (error policy, books, hand-off) as for any executor.

Start method: ``forkserver`` where the platform has it, else ``spawn``;
never ``fork`` from a process that runs threads, which can deadlock the
child. The fork server is started once per program, with this package
preloaded, so a run's children start in milliseconds after the first.

Everything that crosses the pipe (the stage, items, outcomes, exceptions) is
pickled with cloudpickle when it is installed (lambdas and local functions
then travel too), else with :mod:`pickle`. One serializer both ways matters
for classes defined in the script that runs the pipeline: cloudpickle sends
them by value and maps them back to the very class they came from, where
pickle, sending them by name, would find the worker's re-imported copy of
the script a different class.

What can go wrong, and what happens:

- an exception in ``process()``: it comes back as the original type with
  its arguments, and the child's traceback as a note; the policy applies.
  An exception that does not survive pickling comes back as a
  ``RuntimeError`` naming its type and message.
- the child dies (``os._exit``, a signal, the OOM killer): the batch is
  processed again one item at a time in a fresh child, so the item that
  kills it is found; that item's error is :class:`~pipeline.WorkerDied`,
  under the stage's policy (``Retry`` tries it in a fresh process). Items of
  the batch that had finished before the death are processed again.
- an item or an output that does not pickle: a ``TypeError`` for that item.
- a cancellation (an error elsewhere, ``cancel()``, a timeout, Ctrl-C): a
  child busy with a batch is terminated (the batch is not processed, and
  that child runs no ``on_stop``); idle children run ``on_stop`` and exit.
  Children ignore SIGINT: a Ctrl-C in a terminal reaches the whole process
  group, and the pipeline, not each child, decides what it means.

Past 400 lines: both ends of the pipe (the parent's handle and the child's
loop) and the pickling they must agree on are one protocol, read together.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._batch import BatchAbandoned, BatchOutcome, process_batch
from ._exceptions import WorkerDied, _short_str, _type_name
from ._executors import REMOTE_BATCH_TARGET_SECONDS, _failed, _one_by_one
from ._stage import PipelineStage, Supervisor, kind_of

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkServerContext, SpawnContext
    from multiprocessing.process import BaseProcess

__all__ = ["ProcessWorker", "dumps_stage", "end_process", "stage_modules"]

_POLL = 0.05  # how often a worker waiting on its child looks for a death or a cancellation
_END_GRACE = 1.0  # seconds a terminated child gets before it is killed

_context: ForkServerContext | SpawnContext | None = None
_context_lock = threading.Lock()  # the first process stages may start at once


def _get_context(modules: tuple[str, ...]) -> ForkServerContext | SpawnContext:
    # One fork server per program, made on first use. It imports this
    # package and the modules of the first process stage once, so that its
    # children do not (the modules of a script run as __main__ are imported
    # in each child: multiprocessing's preload of "__main__" does nothing).
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                forkserver = multiprocessing.get_context("forkserver")
                if not sys.flags.ignore_environment:
                    # Has effect only if the fork server is not running yet.
                    forkserver.set_forkserver_preload(["pipeline", *modules])
                    _start_fork_server()
                _context = forkserver
            else:
                _context = multiprocessing.get_context("spawn")
        return _context


def _start_fork_server() -> None:
    # The fork server imports its preloads before it applies this program's
    # sys.path (CPython 3.11 to 3.13), so it would import the copy of a module
    # its default path finds: an installed release, where this program runs a
    # checkout. It gets this program's path as PYTHONPATH while it starts.
    from multiprocessing import forkserver, resource_tracker  # noqa: PLC0415 (POSIX only)

    #
    # It also starts with SIGINT blocked: a terminal's Ctrl-C reaches the
    # whole process group, and the fork server would take it while importing
    # its preloads, before it ignores SIGINT, and print a traceback. The mask
    # is this thread's, which the server inherits through fork and exec; a
    # Ctrl-C meanwhile still reaches this program by its other threads, or
    # waits, pending, until the mask is restored. (The resource tracker is
    # started first: starting it unblocks SIGINT in this thread.)
    resource_tracker.ensure_running()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def stage_modules(stage: PipelineStage[Any, Any]) -> tuple[str, ...]:
    """The importable modules that define ``stage`` and its function."""
    _, call = kind_of(stage)
    names = {type(stage).__module__, getattr(call, "__module__", None)}
    return tuple(
        sorted(
            name
            for name in names
            if isinstance(name, str) and name not in ("__main__", "__mp_main__", "builtins")
        )
    )


def dumps_stage(stage: PipelineStage[Any, Any], name: str) -> bytes:
    """Pickle ``stage`` for a worker process, or raise ``TypeError`` saying what to do."""
    dumps = _serializer()
    if dumps is pickle.dumps:
        how = (
            "Define its function at module level, or install cloudpickle "
            "(pip install 'threaded-pipeline[process]') to send lambdas and local functions"
        )
    else:
        how = "Make its attributes picklable, or create them in on_start()"
    try:
        payload = dumps(stage, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 (any pickling failure, reported as such)
        raise TypeError(
            f"stage {name!r} cannot be sent to a worker process (executor='process'): "
            f"{_short_str(exc)}. {how}"
        ) from None
    if dumps is pickle.dumps and _from_unimportable_main(stage):
        # pickle sends it by name, and a worker cannot import a __main__
        # that has no file (python -c, a notebook, the interactive prompt).
        raise TypeError(
            f"stage {name!r} cannot be sent to a worker process (executor='process'): "
            f"it is defined in a __main__ that worker processes cannot import. {how}"
        )
    return payload


def _serializer() -> Callable[..., bytes]:
    # cloudpickle's dumps if it is installed, else pickle's.
    try:
        cloudpickle = importlib.import_module("cloudpickle")  # optional
    except ImportError:
        return pickle.dumps
    dumps: Callable[..., bytes] = cloudpickle.dumps
    return dumps


def _send(conn: Connection, message: object, dumps: Callable[..., bytes]) -> None:
    # Pickled here rather than by Connection.send, so that both ends use the
    # serializer the stage was sent with (see the module docs).
    conn.send_bytes(dumps(message, pickle.HIGHEST_PROTOCOL))


def _from_unimportable_main(stage: PipelineStage[Any, Any]) -> bool:
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__file__", None) is not None:
        return False
    _, call = kind_of(stage)
    return "__main__" in {type(stage).__module__, getattr(call, "__module__", None)}


def end_process(child: BaseProcess) -> None:
    """End ``child`` if it still runs: terminate, then kill; reap it."""
    if child.exitcode is None:
        child.terminate()
        child.join(_END_GRACE)
        if child.exitcode is None:
            child.kill()
            child.join(_END_GRACE)


class _Unsendable(Exception):  # noqa: N818 (control flow: the batch did not travel)
    """A batch or its outcome could not be pickled; ``error`` is the items' error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)  # in args: it travels from the child
        self.error = error


class _Died(Exception):  # noqa: N818 (control flow)
    def __init__(self, error: WorkerDied) -> None:
        super().__init__(error)
        self.error = error


class ProcessWorker:
    """One worker of a process stage: a child process, driven from the worker's thread."""

    __slots__ = ("_child", "_conn", "_dumps", "_modules", "_name", "_payload", "_processes",
                 "_stage_name", "_supervisor")  # fmt: skip

    batch_target_ns = round(REMOTE_BATCH_TARGET_SECONDS * 1e9)

    def __init__(
        self,
        stage_name: str,
        number: int,
        payload: bytes,
        supervisor: Supervisor,
        processes: list[BaseProcess],
        modules: tuple[str, ...] = (),
    ) -> None:
        self._stage_name = stage_name
        self._modules = modules  # to preload in the fork server
        self._name = f"{stage_name}-{number + 1}"
        self._payload = payload
        self._dumps = _serializer()  # the stage's serializer: the child uses it too
        self._supervisor = supervisor
        self._processes = processes  # the run's: every child started, for it to end
        self._child: BaseProcess | None = None
        self._conn: Connection | None = None

    def start(self) -> None:
        self._spawn()

    def stop(self) -> None:
        child, conn = self._child, self._conn
        if child is None or conn is None:
            return  # it died, or was terminated: there is no on_stop to run
        self._child = self._conn = None
        try:
            _send(conn, None, self._dumps)
            reply = _receive(child, conn, None)
        except (OSError, _Died):
            return  # it died as it was told to stop
        finally:
            conn.close()
            child.join(_END_GRACE)
            end_process(child)
        if isinstance(reply, tuple) and reply[1] is not None:
            raise reply[1]

    def process(self, batch: list[Any]) -> BatchOutcome:
        try:
            return self._round_trip(batch)
        except (_Died, _Unsendable) as failure:
            if len(batch) == 1:
                return _failed(failure.error)
        # Which item was it? Each alone, in a fresh child if this one died.
        return _one_by_one(self._alone, batch)

    def _alone(self, batch: list[Any]) -> BatchOutcome:
        try:
            return self._round_trip(batch)
        except (_Died, _Unsendable) as failure:
            return _failed(failure.error)

    def _round_trip(self, batch: list[Any]) -> BatchOutcome:
        if self._child is None:
            self._spawn()  # the last one died
        child, conn = self._child, self._conn
        if child is None or conn is None:
            raise RuntimeError("a worker process that _spawn() did not set")
        try:
            _send(conn, batch, self._dumps)
        except OSError:
            pass  # the child is gone: _receive says how
        except BaseException as exc:  # noqa: BLE001 (an item that does not pickle)
            raise _Unsendable(_not_sent(exc, "an item", "sent to")) from None
        outcome = _receive(child, conn, self)
        if type(outcome) is not tuple or len(outcome) != 5:
            raise TypeError(f"worker process {child.pid} sent {_type_name(outcome)}")
        if isinstance(outcome[3], _Unsendable):
            raise outcome[3]
        return outcome

    def _spawn(self) -> None:
        context = _get_context(self._modules)
        conn, child_end = context.Pipe()
        child = context.Process(
            target=_child_main,
            args=(child_end, self._stage_name, self._dumps is pickle.dumps),
            name=self._name,
            daemon=True,
        )
        # Listed before start(): whatever happens next, the run ends it.
        self._processes.append(child)
        child.start()
        child_end.close()
        self._child, self._conn = child, conn
        try:
            conn.send_bytes(self._payload)
            reply = _receive(child, conn, self)
        except (OSError, _Died) as exc:
            self._forget()
            raise WorkerDied(
                f"the worker process of stage {self._stage_name!r} exited as it started "
                f"({_exit_status(child)}); a script that runs a process stage must start "
                "it under `if __name__ == '__main__':`"
            ) from (exc if isinstance(exc, OSError) else None)
        if isinstance(reply, tuple) and reply[1] is not None:
            self._forget()
            raise reply[1]  # on_start (or unpickling the stage) failed there

    def _forget(self) -> None:
        # Drop the child, ended.
        child, conn = self._child, self._conn
        self._child = self._conn = None
        if conn is not None:
            conn.close()
        if child is not None:
            end_process(child)

    def _died(self, child: BaseProcess) -> _Died:
        self._forget()
        return _Died(
            WorkerDied(
                f"worker process {child.pid} of stage {self._stage_name!r} died while "
                f"processing ({_exit_status(child)})"
            )
        )

    def _abandon(self) -> BatchAbandoned:
        self._forget()  # terminates it: the run is being cancelled
        return BatchAbandoned()


def _receive(child: BaseProcess, conn: Connection, worker: ProcessWorker | None) -> Any:
    # The child's next message. While waiting, look every _POLL seconds for a
    # death and, if `worker` is given, for a cancellation.
    while not conn.poll(_POLL):
        if not child.is_alive():
            if conn.poll(0):
                break  # it wrote its reply, then exited
            raise worker._died(child) if worker is not None else _Died(WorkerDied(""))
        if worker is not None and worker._supervisor.cancelled:
            raise worker._abandon()
    try:
        message = conn.recv_bytes()
    except EOFError:
        raise worker._died(child) if worker is not None else _Died(WorkerDied("")) from None
    try:
        return pickle.loads(message)
    except BaseException as exc:  # noqa: BLE001 (an output that does not unpickle here)
        raise _Unsendable(_not_sent(exc, "an output", "received from")) from None


def _not_sent(exc: BaseException, what: str, how: str) -> TypeError:
    error = TypeError(f"{what} could not be {how} the worker process: {_short_str(exc)}")
    error.__cause__ = exc
    return error


def _exit_status(child: BaseProcess) -> str:
    child.join(_POLL)
    code = child.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# -- the child's side ----------------------------------------------------------


def _child_main(conn: Connection, stage_name: str, plain_pickle: bool) -> None:
    # The parent decides what a Ctrl-C means and ends its children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Log lines name the worker, as a thread worker's do (%(threadName)s).
    threading.current_thread().name = multiprocessing.current_process().name
    dumps = pickle.dumps if plain_pickle else _serializer()  # as the parent pickles
    try:
        stage = pickle.loads(conn.recv_bytes())  # cloudpickle's output loads with pickle
        kind, call = kind_of(stage)
        stage.on_start()
    except BaseException as exc:  # noqa: BLE001 (sent to the parent)
        _send(conn, ("failed", _portable(exc, dumps)), dumps)
        return
    _send(conn, ("ready", None), dumps)
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return  # the parent is gone
        try:
            batch = pickle.loads(message)
        except BaseException as exc:  # noqa: BLE001 (an item that does not unpickle here)
            _send(conn, _unsendable(_not_sent(exc, "an item", "received by")), dumps)
            continue
        if batch is None:
            break
        outputs, completed, dropped, error, nanoseconds = process_batch(kind, call, batch)
        if error is not None:
            error = _portable(error, dumps)
        outcome = (outputs, completed, dropped, error, nanoseconds)
        try:
            payload = dumps(outcome, pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 (an output that does not pickle)
            unsent = _unsendable(_not_sent(exc, "an output", "sent back from"))
            payload = dumps(unsent, pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(payload)
        except OSError:
            return  # the parent is gone
    try:
        stage.on_stop()
    except BaseException as exc:  # noqa: BLE001 (sent to the parent)
        _send(conn, ("stopped", _portable(exc, dumps)), dumps)
    else:
        _send(conn, ("stopped", None), dumps)


def _unsendable(error: TypeError) -> BatchOutcome:
    error.__cause__ = None  # the cause may not pickle; its text is in the message
    return [], 0, 0, _Unsendable(error), 0


def _portable(exc: BaseException, dumps: Callable[..., bytes]) -> BaseException:
    # `exc` with the child's traceback as a note, if it survives pickling;
    # else a RuntimeError that says what it was.
    try:
        text = "".join(traceback.format_exception(exc)).rstrip()
    except BaseException:  # noqa: BLE001 (hostile __str__ or __notes__)
        text = "(no traceback: formatting it raised)"
    note = f"raised in worker process {os.getpid()}:\n{text}"
    try:
        exc.add_note(note)
        pickle.loads(dumps(exc, pickle.HIGHEST_PROTOCOL))
    except BaseException:  # noqa: BLE001 (it does not travel)
        stand_in = RuntimeError(f"{_type_name(exc)}: {_short_str(exc)}")
        stand_in.add_note(f"{note}\n(the original exception could not be pickled)")
        return stand_in
    return exc
