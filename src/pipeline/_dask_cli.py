"""The ``--dask ADDRESS|local`` option of the commands (demo, ``custom``, ``data``).

``--dask HOST:PORT`` (or ``tcp://HOST:PORT``, ``dask://HOST:PORT``) sends a
command's heavy stages to the Dask cluster whose scheduler is there;
``--dask local`` starts a ``LocalCluster`` on this machine for the run, to
try it out: its scheduler and workers listen on 127.0.0.1 only, the
scheduler's status server on a free port. Either way the command connects before it starts, so a
scheduler that cannot be reached is a usage error (exit 2) naming the
option, not a failed run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from ._dask import PROFILER_SETTING, profiler_is_unsafe, scheduler_address

__all__ = ["CONNECT_SECONDS", "DaskUnreachable", "add_dask_option", "dask_client", "on_cluster"]

_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130

CONNECT_SECONDS = 5.0
"""How long a command tries to reach the scheduler ``--dask`` names."""


class DaskUnreachable(Exception):  # noqa: N818 (reads as what happened)
    """The scheduler ``--dask`` names cannot be reached: a usage error (exit 2)."""


def add_dask_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--dask ADDRESS|local`` to ``parser``; ``what`` says which stages go there."""
    parser.add_argument(
        "--dask",
        type=_dask_target,
        metavar="ADDRESS|local",
        help=f"run {what} on a Dask cluster: its scheduler's address (HOST:PORT), or "
        "'local' to start one on this machine for the run (on 127.0.0.1 only); "
        "needs pip install 'threaded-pipeline[dask]'",
    )


def _dask_target(text: str) -> str:
    if importlib.util.find_spec("distributed") is None:
        raise argparse.ArgumentTypeError(
            "needs Dask distributed: pip install 'threaded-pipeline[dask]'"
        )
    if text == "local":
        return text
    try:
        return scheduler_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a scheduler address (HOST:PORT, tcp://HOST:PORT) nor 'local': {text!r}"
        ) from None


@contextmanager
def dask_client(target: str | None, *, tasks: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster ``--dask`` names, for the run; None without it.

    ``local`` starts a LocalCluster of one worker process per CPU (at most
    4), with threads enough for ``tasks`` tasks at once, and stops it
    afterwards.

    Raises:
        DaskUnreachable: the scheduler did not answer within :data:`CONNECT_SECONDS`.
    """
    if target is None:
        yield None
        return
    distributed: Any = importlib.import_module("distributed")  # untyped in parts
    if profiler_is_unsafe():
        # The command owns its process: Dask's profiler goes off before the
        # cluster starts (a LocalCluster's workers take this setting with
        # them), as it can crash a Python running without the GIL.
        importlib.import_module("dask.config").set({PROFILER_SETTING: False})
    if target != "local":
        try:
            client = distributed.Client(target, timeout=CONNECT_SECONDS, set_as_default=False)
        except OSError as exc:
            raise DaskUnreachable(
                f"argument --dask: cannot reach the Dask scheduler at {target}: {exc}"
            ) from None
        with client:
            yield client
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = max(1, min(4, cpus or 1))
    cluster = distributed.LocalCluster(
        n_workers=processes,
        threads_per_worker=max(1, -(-tasks // processes)),
        processes=True,
        host="127.0.0.1",
        # The scheduler's HTTP server (health, metrics; a dashboard only with
        # bokeh) on a free loopback port: None would still take 8787, which
        # another cluster may hold, and then the cluster does not start.
        dashboard_address="127.0.0.1:0",
        # What goes wrong on the cluster comes back in the run's report; its
        # processes' own logs would add only Dask's noise, such as the error
        # a worker logs when a heartbeat is in flight as it closes.
        silence_logs=logging.CRITICAL,
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


@contextmanager
def on_cluster(
    target: str | None, *, tasks: int, prog: str, default: Any = "thread"
) -> Iterator[Any]:
    """The executor of a command's heavy stages for the run, or the command's exit code.

    ``default`` without ``--dask``; else the cluster's client (see
    :func:`dask_client`). An ``int`` instead, said on stderr: 2 if the
    scheduler cannot be reached, 130 on Ctrl-C while connecting or starting
    a local cluster.
    """
    stack = ExitStack()
    try:
        client = stack.enter_context(dask_client(target, tasks=tasks))
    except DaskUnreachable as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)  # noqa: T201 (a usage error)
        yield _EXIT_USAGE
        return
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) while connecting to the Dask cluster", file=sys.stderr)  # noqa: T201
        yield _EXIT_INTERRUPTED
        return
    with stack:
        yield default if client is None else client
