"""Shared fixtures: every test must leave no thread behind."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import owned_by_dask

# Dask's profiler reads other threads' frames, which crashes a Python running
# without the GIL (pipeline._dask.profiler_is_unsafe): off, as the library
# tells its users, for this process and every Dask process the tests start
# (they inherit the environment; dask reads it when imported, and nothing
# has imported it yet).
if not getattr(sys, "_is_gil_enabled", lambda: True)():
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "False")

# Real servers the migration's tests need, started once per session on
# 127.0.0.1 and stopped at its end: PostgreSQL, and moto's S3 server.
pytest_plugins = ["tests.pgserver", "tests.s3server", "tests.daskcluster"]

# A job started in the background of a shell (`.ci/run &`) inherits SIGINT
# ignored, and so would every Python it starts: the Ctrl-C tests need the
# disposition a terminal gives, Python's default handler.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Thread scheduling makes run times noisy: no per-example deadline. CI runs
# more examples than a developer's quick loop.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if it leaves a thread running that it started."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not owned_by_dask(t)
    ]
    for thread in leaked:
        thread.join(timeout=2.0)  # keep a leak from spilling into the next test
    if leaked:
        names = ", ".join(sorted(t.name for t in leaked))
        pytest.fail(f"test left threads running: {names}")


@pytest.fixture(scope="session")
def dask_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A client of a 2-process Dask LocalCluster on 127.0.0.1 (no dashboard), for the session.

    Skips where Dask distributed is not installed, unless
    ``$PIPELINE_TEST_REQUIRE_SERVERS`` is set (``.ci/run``): then it fails.
    Its worker processes start from this process, so test modules import
    there; each has 2 threads.
    """
    try:
        distributed: Any = importlib.import_module("distributed")  # untyped in parts
    except ImportError:
        if os.environ.get("PIPELINE_TEST_REQUIRE_SERVERS"):
            pytest.fail("Dask distributed is not installed (pip install -e '.[dev]')")
        pytest.skip("Dask distributed is not installed")
    scratch: Path = tmp_path_factory.mktemp("dask")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        # The scheduler's HTTP server (health, metrics; a dashboard only with
        # bokeh) on a free loopback port: None would still take 8787, which
        # another cluster may hold, and then the cluster does not start.
        dashboard_address="127.0.0.1:0",
        local_directory=str(scratch),
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
