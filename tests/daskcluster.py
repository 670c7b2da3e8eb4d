"""A real Dask cluster for the tests: a scheduler and two workers, each its own process.

The shape of a multi-machine deployment, on one machine and on 127.0.0.1
only: ``dask scheduler --port 0 --scheduler-file FILE`` writes its address
to the file, and two ``dask worker ADDRESS --nworkers 1 --nthreads 2`` join
it, each a nanny process with one worker process of two threads. Neither
has a dashboard; their HTTP servers (health and metrics routes, which Dask
starts even with ``--no-dashboard``) listen on 127.0.0.1 too. Every process
gets the checkout on ``PYTHONPATH`` (its root and ``src``), so the workers,
and the scheduler that unpickles the tasks, import ``pipeline`` and the
stage classes of the test modules (``tests....``) as this process does.

The fixtures (a pytest plugin, registered in ``conftest.py``):

- ``deployed_cluster`` (session): the :class:`DaskCluster`, started on first
  use and stopped at the session's end.
- ``deployed_client`` (function): a ``distributed.Client`` of the session's
  cluster for one test, once both workers are there; closed after it.
- ``own_deployed_cluster`` (function): a cluster for one test alone, for a test
  that kills a worker process, so that no other test sees the loss.

They skip, saying why, when ``distributed`` cannot be imported, and fail
instead with ``$PIPELINE_TEST_REQUIRE_SERVERS`` set (``.ci/run`` sets it).
A cluster that does not come up within :data:`START_SECONDS` fails the test
with the processes' logs.

Why nannies: ``dask worker`` starts one by default, as a deployment does,
and the nanny restarts a worker process that dies. A test that SIGKILLs the
worker process (the nanny's child, found by ``Client.run(os.getpid)``) sees
what a lost machine does: Dask runs its tasks again elsewhere, and then the
cluster is whole again. Under ``--no-nanny`` the killed process would be the
whole ``dask worker``, and the cluster would stay a worker short.

Ready means: the scheduler file is there (polled against a deadline), then
``Client(address).wait_for_workers(2)``; never a fixed sleep. Stopping: the
workers first (SIGTERM to each nanny, which stops its worker process; a
worker whose scheduler went first waits seconds for it), then the
scheduler; whatever is still there after :data:`STOP_SECONDS` is SIGKILLed
with its process group. Each process is started in a session of its own, so
everything it starts (the worker process, multiprocessing's resource
tracker) carries that session's id: the stop then proves, from the process
table, that no process of those sessions is left, and fails if one was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import WAIT, skip_without_server

__all__ = [
    "HOST",
    "START_SECONDS",
    "STOP_SECONDS",
    "DaskCluster",
    "batches_running_here",
    "deployed_client",
    "deployed_cluster",
    "own_deployed_cluster",
    "require_distributed",
    "wait_until_idle",
]

HOST = "127.0.0.1"
START_SECONDS = 30.0  # for the scheduler file, then for every worker to join
STOP_SECONDS = 15.0  # for each process to end after SIGTERM, before SIGKILL
ROOT = Path(__file__).resolve().parent.parent


def require_distributed() -> None:
    """Skip (or fail, where servers are required) unless ``distributed`` imports."""
    try:
        import distributed  # noqa: F401 (only whether it imports)
    except ImportError as exc:
        skip_without_server(f"distributed cannot be imported ({exc}): pip install -e '.[dask]'")


class DaskCluster:
    """A scheduler and ``workers`` nanny workers, as processes: :meth:`start`, then :meth:`stop`.

    Args:
        workers: how many ``dask worker`` processes (each one worker process).
        threads: threads per worker process.
        env: more environment for every process: Dask's configuration, say
            (``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES``).

    Attributes:
        address: the scheduler's, ``tcp://127.0.0.1:PORT``, once started.
        client: a ``distributed.Client`` of the cluster's own (readiness,
            worker pids), open from :meth:`start` to :meth:`stop`.
    """

    def __init__(
        self, workers: int = 2, threads: int = 2, env: dict[str, str] | None = None
    ) -> None:
        self.n_workers = workers
        self.threads = threads
        self.env = dict(env or {})
        self.root = Path(tempfile.mkdtemp(prefix="pipeline-dask-"))
        self.scheduler_file = self.root / "scheduler.json"
        self.address = ""
        self.client: Any = None  # a distributed.Client: its methods are untyped
        self._scheduler: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []

    @property
    def sessions(self) -> set[int]:
        """The session ids of the processes started (each one leads its own)."""
        started = [self._scheduler, *self._workers]
        return {process.pid for process in started if process is not None}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        # `python -m dask` is the `dask` command, run by this very Python.
        path = os.pathsep.join(
            [str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env = {**os.environ, **self.env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        with (self.root / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dask", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )

    def logs(self) -> str:
        """The tail of every process's log, for a failure message."""
        parts = []
        for log in sorted(self.root.glob("*.log")):
            text = log.read_text(errors="replace")
            parts.append(f"--- {log.name} ---\n{text[-3000:]}")
        return "\n".join(parts)

    def start(self) -> None:
        """Start the scheduler, then the workers; return once every worker has joined."""
        import distributed  # the optional engine: skipped without it

        no_dashboard = ["--no-dashboard", "--dashboard-address", f"{HOST}:0"]
        scheduler = [
            "scheduler", "--host", HOST, "--port", "0", *no_dashboard,
            "--scheduler-file", str(self.scheduler_file),
        ]  # fmt: skip
        self._scheduler = self._spawn("scheduler", scheduler)
        self.address = self._read_scheduler_file()
        for number in range(self.n_workers):
            name = f"worker-{number}"
            worker = [
                "worker", self.address, "--host", HOST, "--name", name,
                "--nworkers", "1", "--nthreads", str(self.threads), *no_dashboard,
                "--local-directory", str(self.root / name),
            ]  # fmt: skip
            self._workers.append(self._spawn(name, worker))
        connect: Any = distributed.Client  # untyped
        self.client = connect(self.address, timeout=START_SECONDS, set_as_default=False)
        self.wait_for_workers()

    def _read_scheduler_file(self) -> str:
        # The scheduler writes the file once it listens; it may be seen half written.
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert self._scheduler is not None
            if self._scheduler.poll() is not None:
                code = self._scheduler.returncode
                raise RuntimeError(f"dask scheduler exited ({code}):\n{self.logs()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                address = json.loads(self.scheduler_file.read_text())["address"]
                if isinstance(address, str) and address.startswith(f"tcp://{HOST}:"):
                    return address
            if time.monotonic() > deadline:
                raise RuntimeError(f"no scheduler file in {START_SECONDS} s:\n{self.logs()}")
            time.sleep(0.02)

    def wait_for_workers(self, seconds: float = START_SECONDS) -> None:
        """Return once all the workers are there (again, after a death); else raise, with logs."""
        for worker in self._workers:
            if worker.poll() is not None:
                raise RuntimeError(f"dask worker exited ({worker.returncode}):\n{self.logs()}")
        try:
            self.client.wait_for_workers(self.n_workers, timeout=seconds)
        except TimeoutError:
            raise RuntimeError(
                f"not {self.n_workers} Dask workers in {seconds} s:\n{self.logs()}"
            ) from None

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address and the pid of its worker process (the nanny's child)."""
        pids: dict[str, int] = self.client.run(os.getpid)
        return pids

    def stop(self) -> None:
        """Stop every process (workers first), prove none is left, remove the directory."""
        try:
            if self.client is not None:
                client, self.client = self.client, None
                client.close(timeout=WAIT)
            _end(self._workers)
            _end([] if self._scheduler is None else [self._scheduler])
            left = _wait_gone(self.sessions, STOP_SECONDS)
            if left:
                for session in self.sessions:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(session, signal.SIGKILL)
                raise AssertionError(f"Dask processes left running after the stop: {left}")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _end(processes: list[subprocess.Popen[bytes]]) -> None:
    # SIGTERM to each (a nanny stops its worker process first), then wait;
    # SIGKILL to the process group of any still there.
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(WAIT)


def _members(sessions: set[int]) -> list[str]:
    # The live (not zombie) processes of these sessions, from /proc; where
    # there is no /proc, whether each session's process group still exists.
    proc = Path("/proc")
    if not proc.is_dir():
        alive = []
        for session in sessions:
            try:
                os.killpg(session, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
            alive.append(f"process group {session}")
        return alive
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X") or int(fields[3]) not in sessions:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        found.append(f"{entry.name}: {command.strip()[:200]}")
    return found


def _wait_gone(sessions: set[int], seconds: float) -> list[str]:
    # The processes of `sessions` still there after up to `seconds` (none: []).
    deadline = time.monotonic() + seconds
    while (left := _members(sessions)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# -- on the cluster's workers, through Client.run ------------------------------------


def batches_running_here() -> list[str]:
    """The threads of this worker process inside a pipeline task now (run by ``Client.run``).

    A cancelled task's thread runs on until its function returns, out of
    the scheduler's sight (``Client.processing()`` no longer lists it):
    only the threads' stacks tell whether a batch is still being processed.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    busy = []
    for ident, frame in sys._current_frames().items():  # documented, if underscored
        walk: Any = frame
        while walk is not None:
            code = walk.f_code
            if code.co_name == "_run_batch" and code.co_filename.endswith("_dask.py"):
                busy.append(names.get(ident, str(ident)))
                break
            walk = walk.f_back
    return busy


def wait_until_idle(client: Any, seconds: float = WAIT) -> None:
    """Return once no worker processes or runs a pipeline task; else raise, saying which."""
    deadline = time.monotonic() + seconds
    while True:
        processing = {w: keys for w, keys in client.processing().items() if keys}
        running = {w: names for w, names in client.run(batches_running_here).items() if names}
        if not processing and not running:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"tasks still at work {seconds} s on: processing {processing}, "
                f"threads in a batch {running}"
            )
        time.sleep(0.05)


# -- the fixtures ----------------------------------------------------------------------


@contextlib.contextmanager
def _cluster(env: dict[str, str] | None = None) -> Iterator[DaskCluster]:
    require_distributed()
    cluster = DaskCluster(env=env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def deployed_cluster() -> Iterator[DaskCluster]:
    """The session's cluster (a scheduler, two workers), started on first use."""
    with _cluster() as cluster:
        yield cluster


@pytest.fixture
def deployed_client(deployed_cluster: DaskCluster) -> Iterator[Any]:
    """A ``distributed.Client`` of the session's cluster for one test, both workers there."""
    import distributed  # imported by the cluster's start

    deployed_cluster.wait_for_workers()
    connect: Any = distributed.Client  # untyped
    client = connect(deployed_cluster.address, timeout=START_SECONDS, set_as_default=False)
    try:
        yield client
    finally:
        client.close(timeout=WAIT)


@pytest.fixture
def own_deployed_cluster(request: pytest.FixtureRequest) -> Iterator[DaskCluster]:
    """A cluster for one test alone (its ``client`` is open), stopped after it.

    Parametrized indirectly, the parameter is more environment for its
    processes (see :class:`DaskCluster`).
    """
    env: dict[str, str] = getattr(request, "param", {})
    with _cluster(env) as cluster:
        yield cluster
