"""Helpers shared by the test modules."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

import pytest

# The longest any test may wait on a thread, an event or a queue. Every
# blocking call in the tests uses it (or less), so a deadlock fails fast.
WAIT = 10.0


def child_processes() -> list[multiprocessing.process.BaseProcess]:
    """This process's live multiprocessing children, less a Dask LocalCluster's workers.

    A session's LocalCluster (the ``dask_client`` fixture) keeps its worker
    processes for the whole session: they are not a test's leak.
    """
    return [
        child
        for child in multiprocessing.active_children()  # reaps the ended ones
        if not child.name.startswith("Dask ")
    ]


# Threads that Dask's client and LocalCluster keep for the process's lifetime
# (their event loop, callback and offload pools, the nannies' watchers): made
# on first use inside some test, or when a nanny restarts a worker process
# that died, they are Dask's, not a leak of ours.
_DASK_THREADS = (
    "IO loop",
    "Dask-",
    "AsyncProcess ",
    "QueueFeederThread",
    "TCP-Executor",
    "Profile",  # distributed.profile.watch, on 3.12+: ends once its event loop closed
)


def owned_by_dask(thread: threading.Thread) -> bool:
    """Whether ``thread`` is one of Dask's (its client's, or a LocalCluster's)."""
    return "distributed" in sys.modules and thread.name.startswith(_DASK_THREADS)


class Join:
    """Start a function in a thread now; ``join()`` waits for it and re-raises its error."""

    def __init__(self, target: Callable[[], object], name: str = "test-helper") -> None:
        self.error: BaseException | None = None
        self.result: object = None

        def body() -> None:
            try:
                self.result = target()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=body, name=name, daemon=True)
        self.thread.start()

    def join(self) -> object:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "helper thread did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now; a race is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


REQUIRE_SERVERS = "PIPELINE_TEST_REQUIRE_SERVERS"
"""Set (as ``.ci/run`` does), a real server a test needs and cannot start fails the test."""


def skip_without_server(reason: str) -> NoReturn:
    """Skip the test for want of a server it needs, or fail it where servers are required."""
    if os.environ.get(REQUIRE_SERVERS):
        pytest.fail(f"{reason} (${REQUIRE_SERVERS} is set: the server is required)", pytrace=False)
    pytest.skip(reason)
