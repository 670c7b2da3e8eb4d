"""Prometheus metrics of a run, on an HTTP ``/metrics`` endpoint (the ``prometheus`` extra).

:class:`PrometheusMetrics` is an observer that keeps, in a
``prometheus_client`` registry of its own:

- ``pipeline_items_total{stage, outcome}``: a counter of the items each stage
  finished, by outcome: ``completed`` (``process()`` returned), ``dropped``
  (completed with no output), ``failed``, ``abandoned`` (left by a
  cancellation or a fail-fast error);
- ``pipeline_item_seconds{stage}``: a histogram of the time per item (one
  observation per batch: its time over its size, exact for items processed
  alone);
- ``pipeline_queue_depth{stage}`` and ``pipeline_workers_busy{stage}``:
  gauges, updated every ``tick_seconds`` while the run goes on;
- ``pipeline_retries_total{stage}``: a counter of retries.

With ``port`` it serves them over HTTP while the run goes on (from
``run_started`` to ``run_finished``), on ``host``, which is 127.0.0.1 unless
you say otherwise: metrics can tell an outsider what your pipeline is doing.
``port=0`` picks a free port (see :attr:`PrometheusMetrics.port`). The server
thread is prometheus_client's own, joined when the run finishes.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from ._observe import BatchStats, Observer, RunInfo, WorkerInfo

if TYPE_CHECKING:
    from ._report import PipelineReport

__all__ = ["PrometheusMetrics"]

_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def _client() -> Any:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        message = (
            "Prometheus metrics need prometheus-client: pip install 'threaded-pipeline[prometheus]'"
        )
        raise ImportError(message) from None


class PrometheusMetrics(Observer):
    """Count a run's items for Prometheus; with ``port``, serve them on ``/metrics``.

    >>> from pipeline import Pipeline, PrometheusMetrics
    >>> metrics = PrometheusMetrics()
    >>> _ = Pipeline[int]().map(abs).run(range(5), observers=[metrics])
    >>> metrics.registry.get_sample_value(
    ...     "pipeline_items_total", {"stage": "abs", "outcome": "completed"}
    ... )
    5.0
    """

    tick_seconds = 0.5

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        client = _client()
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            raise TypeError(f"'port' must be an int, not {type(port).__name__}")
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"'port' must be 0 to 65535, got {port}")
        self.requested_port = port
        self.host = host
        self.port: int | None = None  # the port being served, once the run started
        self.registry = client.CollectorRegistry()
        self._client = client
        self._items = client.Counter(
            "pipeline_items", "Items each stage finished, by outcome",
            ["stage", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._retries = client.Counter(
            "pipeline_retries", "Retries of failed items", ["stage"], registry=self.registry
        )
        self._item_seconds = client.Histogram(
            "pipeline_item_seconds", "Time process() took per item (a batch's mean)",
            ["stage"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._depth = client.Gauge(
            "pipeline_queue_depth", "Items waiting in each stage's input queue",
            ["stage"], registry=self.registry,
        )  # fmt: skip
        self._busy = client.Gauge(
            "pipeline_workers_busy", "Workers of each stage holding a batch",
            ["stage"], registry=self.registry,
        )  # fmt: skip
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def run_started(self, run: RunInfo) -> None:
        for stage in run.stages:
            # Every series exists from the start, at zero, so a scrape sees them.
            for outcome in ("completed", "dropped", "failed", "abandoned"):
                self._items.labels(stage.name, outcome)
            self._retries.labels(stage.name)
            self._depth.labels(stage.name)
            self._busy.labels(stage.name)
        if self.requested_port is not None:
            self._server, self._thread = self._client.start_http_server(
                self.requested_port, addr=self.host, registry=self.registry
            )
            self.port = self._server.server_address[1]

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        items = self._items
        stage = worker.stage
        if batch.completed:
            items.labels(stage, "completed").inc(batch.completed)
        if batch.dropped:
            items.labels(stage, "dropped").inc(batch.dropped)
        if batch.failed:
            items.labels(stage, "failed").inc(batch.failed)
        if batch.abandoned:
            items.labels(stage, "abandoned").inc(batch.abandoned)
        if batch.size:
            self._item_seconds.labels(stage).observe(batch.seconds / batch.size)

    def item_retried(self, worker: WorkerInfo, item: Any, error: Exception, attempt: int) -> None:
        self._retries.labels(worker.stage).inc()

    def tick(self, run: RunInfo) -> None:
        for stage in run.snapshot():
            self._depth.labels(stage.name).set(stage.queue_size)
            self._busy.labels(stage.name).set(stage.busy)

    def run_finished(self, report: PipelineReport) -> None:
        for stage in report.stages:
            self._depth.labels(stage.name).set(stage.queue.size)
            self._busy.labels(stage.name).set(0)
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)
