"""Stages on a Dask cluster: ``executor=`` a Dask ``Client``, ``"dask://ADDRESS"`` or :class:`Dask`.

The pipeline stays in this process (its queues, its books, the stages left
on threads); a Dask stage's batches become tasks on the cluster's workers.
Each of the stage's ``workers`` is a thread here that submits one batch,
waits for its outcome and applies it as for any executor, so ``workers`` is
the number of batches in flight on the cluster.

Both ends are in this module:

- here, one :class:`ClusterStage` per stage and run, shared by the stage's
  worker threads (:class:`DaskWorker`): it connects (for an address), sends
  the stage pickled once per run, starts and stops it on the cluster, and
  cancels it;
- on each cluster worker, a registry of the stage copies it runs
  (:func:`_run_batch`): the first task of a run on a worker process unpickles
  the stage and calls ``on_start`` there, once; the other tasks of that run
  on that process reuse the copy (its threads share it, as a thread stage's
  workers share what ``__init__`` made). ``on_stop`` runs on every cluster
  worker when the run ends, after its last task of the run returned.

What can go wrong, and what happens:

- an exception in ``process()``: it comes back as the original type, with
  the cluster worker's traceback as a note; the stage's policy applies.
- a cluster worker dies: the scheduler runs its tasks again on another
  worker (a batch runs once more, from its start; only the outcome of the
  run that finished is counted). So a stage's side effects happen at least
  once per item, not exactly once, as with any retry. A batch the scheduler gives up on
  (``KilledWorker``, after ``distributed.scheduler.allowed-failures``) is
  processed again here one item at a time, so the item that kills workers is
  found; its error is :class:`~pipeline.WorkerDied`, under the policy.
- a cancellation (an error elsewhere, ``cancel()``, a timeout, Ctrl-C): each
  worker thread cancels its future (``Client.cancel``) within
  :data:`_POLL` seconds and submits nothing more; the cluster workers are told
  at once, and a task in progress stops before its next item (the item in
  ``process()`` finishes: Python cannot interrupt a thread). The run ends
  after the cluster ran ``on_stop``, so no task of it runs any more.

Past 400 lines, as :mod:`pipeline._process` is and for its reason: both ends
of a task (the driver's handle and the cluster worker's registry) and the
messages they trade are one protocol, read together.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import threading
import uuid
import warnings
from collections import deque
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from ._batch import BatchAbandoned, BatchOutcome, process_batch
from ._exceptions import StageError, WorkerDied
from ._stage import PipelineStage, Supervisor, kind_of

if TYPE_CHECKING:
    from distributed import Client

    from ._stage import StageSpec

__all__ = ["DASK_BATCH_TARGET_SECONDS", "ClusterStage", "Dask", "DaskWorker", "is_dask_client"]

DASK_BATCH_TARGET_SECONDS = 0.5
"""The work per batch a Dask stage aims at: a task costs the cluster 10 to 40 ms here."""

_DASK_TARGET_NS = round(DASK_BATCH_TARGET_SECONDS * 1e9)
_POLL = 0.05  # how often a worker thread waiting on a task looks for a cancellation
_CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler of a "dask://" address
_SCHEME = "dask://"
PROFILER_SETTING = "distributed.worker.profile.enabled"
"""Dask's setting of its statistical profiler, which a free-threaded Python must turn off."""


def is_dask_client(value: object) -> bool:
    """Whether ``value`` is a ``distributed.Client`` (without importing distributed)."""
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(value, distributed.Client)


class Dask:
    """Run a stage's batches on a Dask cluster: the value of a stage's ``executor=``.

    ``cluster`` is a connected ``distributed.Client`` (reused, and left open),
    or the scheduler's address (``"dask://HOST:PORT"``, ``"tcp://HOST:PORT"``
    or ``"HOST:PORT"``: each run connects, and disconnects at its end).
    ``executor=client`` and ``executor="dask://HOST:PORT"`` are short for
    ``Dask(client)`` and ``Dask("dask://HOST:PORT")``.

    ``batch_size`` sets the most items per task; by default batches adapt to
    about :data:`DASK_BATCH_TARGET_SECONDS` of work each, so that the
    cluster's cost per task (tens of milliseconds) stays small. A batch is
    made of what waits in the stage's input queue: a ``maxsize`` smaller than
    a batch makes smaller tasks.

    >>> Dask("dask://127.0.0.1:8786", batch_size=50)
    Dask('tcp://127.0.0.1:8786', batch_size=50)

    The stage's code must be importable on the cluster's workers (and this
    package installed there); a stage class defined in the script that runs
    the pipeline travels by value.
    """

    __slots__ = ("address", "batch_size", "client")

    def __init__(self, cluster: Client | str, *, batch_size: int | None = None) -> None:
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"'batch_size' must be a positive int or None, got {batch_size!r}")
        self.batch_size = batch_size
        self.client: Any = None  # a distributed.Client: its methods are untyped
        if is_dask_client(cluster):
            self.client = cluster
            self.address: str = str(getattr(getattr(cluster, "scheduler", None), "address", "?"))
        elif isinstance(cluster, str):
            self.address = scheduler_address(cluster)
            _require_distributed()
        else:
            raise TypeError(
                "'executor' takes a Dask cluster as a distributed.Client or its scheduler's "
                f"address ('dask://HOST:PORT'), not {type(cluster).__name__}"
            )
        warn_if_profiler_unsafe()

    def __repr__(self) -> str:
        where = repr(self.address) if self.client is None else f"<Client {self.address}>"
        size = "" if self.batch_size is None else f", batch_size={self.batch_size}"
        return f"Dask({where}{size})"


def scheduler_address(text: str) -> str:
    """The scheduler address in ``text`` (``dask://HOST:PORT`` or ``tcp://...``), or raise."""
    address = text[len(_SCHEME) :] if text.startswith(_SCHEME) else text
    if "://" not in address:
        address = f"tcp://{address}"
    protocol, _, rest = address.partition("://")
    host, colon, port = rest.rpartition(":")
    if protocol not in ("tcp", "tls", "inproc") or not colon or not host or not port.isdigit():
        raise ValueError(
            "'executor': a Dask scheduler address is 'dask://HOST:PORT' "
            f"(or 'tcp://HOST:PORT'), got {text!r}"
        )
    return address


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401, PLC0415 (the optional engine, on demand)
    except ImportError:
        raise ModuleNotFoundError(
            "a Dask executor needs Dask distributed: pip install 'threaded-pipeline[dask]'"
        ) from None


def profiler_is_unsafe() -> bool:
    """Whether Dask's profiler is on in this process while it runs without the GIL.

    Every Dask server (a scheduler, a worker, a nanny) samples its event
    loop's thread through ``sys._current_frames()`` every 10 ms, and a worker
    the threads of its tasks too. On a free-threaded build, reading another
    running thread's frame is unsynchronised (CPython's free-threading HOWTO
    says it may crash): here it killed cluster workers with SIGSEGV or SIGBUS
    about one run in ten, and once the driver, whose LocalCluster runs its
    scheduler in-process.
    """
    # Asked each time: importing an extension that needs the GIL turns it on.
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        return False
    import dask.config  # noqa: PLC0415 (the optional engine, on demand)

    return bool(dask.config.get(PROFILER_SETTING, default=True))


def warn_if_profiler_unsafe() -> None:
    """Warn (``RuntimeWarning``) if :func:`profiler_is_unsafe`, saying the setting to change."""
    if profiler_is_unsafe():
        warnings.warn(
            "Dask's profiler reads other threads' frames, which can crash a free-threaded "
            f"Python running without the GIL: set {PROFILER_SETTING} to False "
            "(dask.config.set, or DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False in the "
            "environment) before the cluster starts, here and on the cluster's workers",
            RuntimeWarning,
            stacklevel=3,  # the caller of Dask()
        )


def dumps_for_cluster(stage: PipelineStage[Any, Any], name: str) -> bytes:
    """Pickle ``stage`` for the cluster (with cloudpickle, as Dask does), or raise ``TypeError``."""
    from ._process import _serializer  # noqa: PLC0415 (cloudpickle, which distributed has)

    try:
        payload = _serializer()(stage, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 (any pickling failure, reported as such)
        raise TypeError(
            f"stage {name!r} cannot be sent to a Dask cluster, which pickles it: {exc}. "
            "Make its attributes picklable, or create them in on_start()"
        ) from None
    return payload


class ClusterStage:
    """One stage's run on a Dask cluster, shared by the stage's worker threads.

    Thread-safety: ``_lock`` guards the connection, the start and stop on the
    cluster (the first worker thread to start does it, the last to stop undoes
    it) and the one cancellation message; each task's future is its worker
    thread's own.
    """

    def __init__(self, spec: StageSpec) -> None:
        target = spec.executor
        if not isinstance(target, Dask):
            raise TypeError("a ClusterStage takes a stage whose executor is a Dask cluster")
        self.name = spec.name
        self.target = target
        self.payload = dumps_for_cluster(spec.stage, spec.name)
        self.token = f"{spec.name}-{uuid.uuid4().hex}"
        self.client: Any = target.client  # a distributed.Client: its methods are untyped
        self._owns_client = False
        self._lock = threading.Lock()
        self._start_tried = False
        self._start_failed = False
        self._entered = 0  # worker threads between start() and stop()
        self._cancelled = False

    def worker(self, supervisor: Supervisor) -> DaskWorker:
        """A handle for one worker thread of the stage."""
        return DaskWorker(self, supervisor)

    def start(self, supervisor: Supervisor) -> Any:
        """Connect if need be and run ``on_start`` on every cluster worker, once per run."""
        error: BaseException | None = None
        with self._lock:
            self._entered += 1
            if not self._start_tried:
                self._start_tried = True
                try:
                    self._start_here()
                except BaseException as exc:  # noqa: BLE001 (raised below, by this thread only)
                    self._start_failed = True
                    error = exc
            client = self.client
        if error is None and not self._start_failed and not supervisor.cancelled:
            return client
        # This worker thread will not run: it leaves now (run_worker calls
        # stop() only after a start that returned), and the last one out
        # stops the stage where on_start ran.
        try:
            self.stop()
        except BaseException:  # noqa: BLE001 (the start's error is the one to report)
            pass
        if error is not None:
            raise error
        raise BatchAbandoned

    def _start_here(self) -> None:
        if self.client is None:
            import distributed  # noqa: PLC0415 (the optional engine, on demand)

            connect: Any = distributed.Client  # untyped
            try:
                self.client = connect(
                    self.target.address, timeout=_CONNECT_TIMEOUT, set_as_default=False
                )
            except OSError as exc:
                raise OSError(
                    f"cannot reach the Dask scheduler at {self.target.address} "
                    f"(executor of stage {self.name!r}): {exc}"
                ) from None
            self._owns_client = True
        started = self.client.run(_start_on_worker, self.token, self.payload, on_error="return")
        for result in started.values():
            if isinstance(result, BaseException):
                raise result
            if result is not None:
                raise result  # on_start's own error, sent back by value

    def stop(self) -> None:
        """Leave; the last worker thread to leave runs ``on_stop`` on every cluster worker."""
        with self._lock:
            self._entered -= 1
            if self._entered or self.client is None:
                return
            stopped = self.client.run(_stop_on_worker, self.token, on_error="return")
        for result in stopped.values():
            if result is not None:
                raise result

    def cancel(self, future: Any) -> None:
        """Cancel ``future``; the first call also tells every cluster worker to stop the run."""
        with self._lock:
            tell, self._cancelled = not self._cancelled, True
        assert self.client is not None
        if tell:
            self.client.run(_cancel_on_worker, self.token, wait=False, on_error="ignore")
        future.cancel()

    def close(self) -> None:
        """Disconnect if this run connected (called once the run's threads ended)."""
        if self._owns_client and self.client is not None:
            client, self.client = self.client, None
            client.close()


class DaskWorker:
    """Submits each batch to the cluster as a task and waits for its outcome."""

    __slots__ = (
        "_client",
        "_cluster",
        "_kind",
        "_supervisor",
        "batch_size",
        "batch_target_ns",
        "dispatch_ns",
    )

    def __init__(self, cluster: ClusterStage, supervisor: Supervisor) -> None:
        self._cluster = cluster
        self._supervisor = supervisor
        self._client: Any = None  # a distributed.Client, once started
        self.batch_target_ns = _DASK_TARGET_NS
        self.batch_size = cluster.target.batch_size
        # The wall time of its tasks outside process(): what the cluster
        # costs per task, for the report (StageReport.dispatch_seconds).
        self.dispatch_ns = 0

    def start(self) -> None:
        self._client = self._cluster.start(self._supervisor)

    def stop(self) -> None:
        self._cluster.stop()

    def process(self, batch: list[Any]) -> BatchOutcome:
        outcome = self._one(batch)
        if outcome is not None:
            return outcome
        # The cluster failed the batch as a whole (a worker that keeps dying,
        # an output that does not pickle): each item alone, so that the error
        # lands on the item it belongs to.
        out: list[Any] = []
        completed = dropped = nanoseconds = 0
        for item in batch:
            alone = self._one([item])
            assert alone is not None
            outputs, done, empty, error, took = alone
            out += outputs
            completed += done
            dropped += empty
            nanoseconds += took
            if error is not None:
                return out, completed, dropped, error, nanoseconds
        return out, completed, dropped, None, nanoseconds

    def _one(self, batch: list[Any]) -> BatchOutcome | None:
        # The batch's outcome; for a batch of one, the cluster's own error as
        # the item's. None if the cluster failed a batch of several.
        client = self._client
        assert client is not None
        cluster = self._cluster
        sent = perf_counter_ns()
        try:
            future = client.submit(_run_batch, cluster.token, cluster.payload, batch, pure=False)
        except BaseException as exc:  # noqa: BLE001 (a closed client)
            return _failed(_cluster_error(exc)) if len(batch) == 1 else None
        finished = threading.Event()
        future.add_done_callback(lambda _: finished.set())
        while not finished.wait(_POLL):
            if self._supervisor.cancelled:
                cluster.cancel(future)
                raise BatchAbandoned
        try:
            if future.status == "finished":
                tag, value = future.result()
                # Forgotten at once: a worker lost meanwhile would otherwise
                # have the scheduler run the task again, for nobody.
                future.release()
            elif self._supervisor.cancelled:
                raise BatchAbandoned
            else:
                error = future.exception()
                raise error if error is not None else RuntimeError(f"task {future.status}")
        except BatchAbandoned:
            raise
        except BaseException as exc:  # noqa: BLE001 (the cluster's failure, not the stage's)
            return _failed(_cluster_error(exc)) if len(batch) == 1 else None
        if tag == "done":
            outcome: BatchOutcome = value
            self.dispatch_ns += max(0, perf_counter_ns() - sent - outcome[4])
            return outcome
        if tag == "on_start":  # a cluster worker that joined after the start failed on_start
            self._supervisor.fail(StageError(cluster.name, value, where="on_start"))
        elif not self._supervisor.cancelled:
            # The cluster ended this stage's run while the run goes on: say
            # so, rather than leave with the batch (BatchAbandoned means the
            # run is being cancelled, and an upstream stage would wait for room).
            ended = RuntimeError("the Dask cluster ended this stage's run while it was going on")
            self._supervisor.fail(StageError(cluster.name, ended, where="process"))
        raise BatchAbandoned


def _failed(error: BaseException) -> BatchOutcome:
    return [], 0, 0, error, 0


def _cluster_error(exc: BaseException) -> BaseException:
    # The error an item gets when the cluster, not the stage, failed it.
    if type(exc).__name__ == "KilledWorker":
        died = WorkerDied(f"the Dask workers running this item died ({exc})")
        died.__cause__ = exc
        return died
    return exc


# -- on the cluster's workers --------------------------------------------------------


class _Copy:
    """A worker process's copy of a stage for one run, and the tasks using it."""

    __slots__ = ("active", "call", "cancelled", "idle", "kind", "stage")

    def __init__(self, stage: PipelineStage[Any, Any]) -> None:
        self.stage = stage
        self.kind, self.call = kind_of(stage)
        self.cancelled = False
        self.active = 0
        self.idle = threading.Condition(threading.Lock())


_copies: dict[str, _Copy] = {}
_ended: deque[str] = deque(maxlen=1024)  # runs stopped here: a late task starts nothing
_copies_lock = threading.Lock()  # the first tasks of a run may arrive at once


def _copy_for(token: str, payload: bytes) -> _Copy | None:
    # This process's copy of the run's stage, started on first use; None if
    # the run already ended here.
    with _copies_lock:
        copy = _copies.get(token)
        if copy is None and token not in _ended:
            copy = _Copy(pickle.loads(payload))
            copy.stage.on_start()
            _copies[token] = copy
        return copy


async def _start_on_worker(token: str, payload: bytes) -> BaseException | None:
    # Run by Client.run in the worker's event loop: on_start goes to a thread,
    # so that the worker keeps answering the scheduler meanwhile.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _start_here, token, payload)


def _start_here(token: str, payload: bytes) -> BaseException | None:
    try:
        _copy_for(token, payload)
    except BaseException as exc:  # noqa: BLE001 (on_start's error, sent back)
        return _portable(exc)
    return None


def _run_batch(token: str, payload: bytes, batch: list[Any]) -> tuple[str, Any]:
    """The task: process ``batch`` with this process's copy of the stage."""
    try:
        copy = _copy_for(token, payload)
    except BaseException as exc:  # noqa: BLE001 (on_start's error, sent back)
        return "on_start", _portable(exc)
    if copy is None:
        return "ended", None
    with copy.idle:
        copy.active += 1
    try:
        if copy.cancelled:
            return "ended", None
        call = copy.call

        def call_unless_cancelled(item: Any) -> Any:
            if copy.cancelled:
                raise _RunStopped
            return call(item)

        outcome = process_batch(copy.kind, call_unless_cancelled, batch)
    finally:
        with copy.idle:
            copy.active -= 1
            if not copy.active:
                copy.idle.notify_all()
    error = outcome[3]
    if isinstance(error, _RunStopped):
        return "ended", None
    if error is not None:
        outcome = (*outcome[:3], _portable(error), outcome[4])
    return "done", outcome


class _RunStopped(Exception):  # noqa: N818 (control flow: the run was cancelled)
    pass


async def _cancel_on_worker(token: str) -> None:
    # A coroutine function: Client.run(wait=False) takes no other kind.
    copy = _copies.get(token)
    if copy is not None:
        copy.cancelled = True  # read by its tasks before each item


async def _stop_on_worker(token: str) -> BaseException | None:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _stop_here, token)


def _stop_here(token: str) -> BaseException | None:
    # After the run's last task here returned: on_stop, and the copy is forgotten.
    with _copies_lock:
        _ended.append(token)
        copy = _copies.pop(token, None)
    if copy is None:
        return None
    copy.cancelled = True  # a task still running stops before its next item
    with copy.idle:
        while copy.active:
            copy.idle.wait()
    try:
        copy.stage.on_stop()
    except BaseException as exc:  # noqa: BLE001 (on_stop's error, sent back)
        return _portable(exc)
    return None


def _portable(exc: BaseException) -> BaseException:
    from ._process import _portable as portable  # noqa: PLC0415 (one rule for both executors)
    from ._process import _serializer  # noqa: PLC0415 (imported by then)

    return portable(exc, _serializer())
