"""A timeline of a run in the Chrome Trace Event format, which Perfetto and chrome://tracing open.

:class:`TraceFile` is an observer: ``run(trace="run.json")`` (or
``--trace FILE`` on the command line) adds one. The file has one track per
worker (a thread, or the thread that drives a worker process), named
``<stage>-<n>``, a span per batch with its size and counts (so a slow
stage's items, which travel one per batch, are a span each), counter tracks
for every stage's input queue depth, and instant events for retries, dead
letters, the item that failed the run and the run's end when it did not
complete. Open it at https://ui.perfetto.dev (drag the file in) or in
``chrome://tracing``.

Memory is bounded: past ``max_events`` events the trace keeps counting but
stops recording, and says so in the file (``otherData.dropped_events`` and
an instant event where it stopped). Queue depths are sampled as batches
end, at most every ``sample_seconds``, so an idle pipeline adds nothing.

Events are appended from the worker threads without a lock (``list.append``
is atomic); the cap may therefore be passed by as many events as there are
workers. The file is written once, when the run finishes.
"""

from __future__ import annotations

import json
import os
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from ._exceptions import _short_repr
from ._observe import BatchStats, Observer, RunInfo, WorkerInfo

if TYPE_CHECKING:
    from ._report import DeadLetter, PipelineReport

__all__ = ["TraceFile", "check_trace"]

_PID = 1  # one process in the trace: the pipeline's


def check_trace(path: str | os.PathLike[str] | None, name: str = "trace") -> str | None:
    """A file argument (``trace``, or ``name``), checked early: a file we can write."""
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name!r} must be a file path, not {type(path).__name__}")
    text = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise ValueError(f"{name!r} must be a path in an existing directory, got {text!r}")
    if os.path.isdir(text):
        raise ValueError(f"{name!r} must be a file path, not a directory: {text!r}")
    return text


class TraceFile(Observer):
    """Write a run's timeline to ``path`` as Chrome Trace Event JSON when it finishes.

    >>> import json, os, tempfile
    >>> from pipeline import Pipeline, TraceFile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.json")
    >>> _ = Pipeline[int]().map(abs, workers=2).run(range(100), observers=[TraceFile(path)])
    >>> with open(path) as file:
    ...     events = json.load(file)["traceEvents"]
    >>> sorted({e["args"]["name"] for e in events if e["name"] == "thread_name"})
    ['abs-1', 'abs-2']

    ``run(trace=path)`` is the short way to the same.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_events: int = 500_000,
        sample_seconds: float = 0.01,
    ) -> None:
        checked = check_trace(path, "path")
        if checked is None:
            raise TypeError("'path' must be a file path, not None")
        self.path = checked
        self.max_events = max_events
        self._sample_ns = int(sample_seconds * 1e9)
        self._events: list[dict[str, Any]] = []
        self._dropped = 0
        self._origin = perf_counter_ns()
        self._next_sample = 0
        self._run: RunInfo | None = None
        self._tids: dict[str, int] = {}

    # -- the events -----------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        self._run = run
        self._origin = perf_counter_ns()
        self._add({"name": "process_name", "ph": "M", "pid": _PID, "args": {"name": "pipeline"}})
        tid = 1
        for stage in run.stages:
            for number in range(1, stage.workers + 1):
                name = f"{stage.name}-{number}"
                self._tids[name] = tid
                label = name if stage.executor == "thread" else f"{name} ({stage.executor})"
                self._add(_meta("thread_name", tid, {"name": label}))
                self._add(_meta("thread_sort_index", tid, {"sort_index": tid}))
                tid += 1
        self._sample(self._origin)

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        now = perf_counter_ns()
        duration = batch.seconds * 1e6
        self._add(
            {
                "name": f"{worker.stage} x{batch.size}" if batch.size > 1 else worker.stage,
                "cat": "batch",
                "ph": "X",
                "pid": _PID,
                "tid": self._tids.get(worker.name, 0),
                # The batch ended just before its event: its span ends now.
                "ts": max(0.0, self._us(now) - duration),
                "dur": duration,
                "args": {
                    "size": batch.size,
                    "completed": batch.completed,
                    "emitted": batch.emitted,
                    "dropped": batch.dropped,
                    "failed": batch.failed,
                    "abandoned": batch.abandoned,
                },
            }
        )
        if now >= self._next_sample:
            self._sample(now)

    def item_retried(self, worker: WorkerInfo, item: Any, error: Exception, attempt: int) -> None:
        self._instant(worker, "retry", {"item": _short_repr(item), "error": _short_repr(error),
                                        "attempt": attempt})  # fmt: skip

    def item_dead_lettered(self, worker: WorkerInfo, letter: DeadLetter) -> None:
        self._instant(worker, "dead letter", letter.to_dict())

    def item_failed(self, worker: WorkerInfo, item: Any, error: BaseException) -> None:
        self._instant(worker, "failed the run", {"item": _short_repr(item),
                                                 "error": _short_repr(error)})  # fmt: skip

    def run_finished(self, report: PipelineReport) -> None:
        now = perf_counter_ns()
        self._sample(now)
        if report.status != "completed":
            event = {"name": f"run {report.status}", "ph": "i", "s": "g", "pid": _PID,
                     "ts": self._us(now), "args": {"error": report.error}}  # fmt: skip
            self._events.append(event)  # past the cap too: how the run ended
        document = {
            "traceEvents": self._events,
            "displayTimeUnit": "ms",
            "otherData": {
                "library": "threaded-pipeline",
                "status": report.status,
                "elapsed_seconds": report.elapsed_seconds,
                "dropped_events": self._dropped,
            },
        }
        # One dumps() call: json.dump() writes through the pure-Python
        # iterencode, several times slower, and the run waits for it.
        text = json.dumps(document, separators=(",", ":"))
        with open(self.path, "w", encoding="utf-8") as file:
            file.write(text)

    # -- helpers ------------------------------------------------------------------------

    def _us(self, ns: int) -> float:
        return (ns - self._origin) / 1000

    def _add(self, event: dict[str, Any]) -> None:
        if len(self._events) < self.max_events:
            self._events.append(event)
            return
        if not self._dropped:
            self._events.append({"name": "trace cap reached: later events dropped", "ph": "i",
                                 "s": "g", "pid": _PID, "ts": event.get("ts", 0.0)})  # fmt: skip
        self._dropped += 1

    def _instant(self, worker: WorkerInfo, name: str, args: dict[str, Any]) -> None:
        self._add({"name": name, "cat": "item", "ph": "i", "s": "t", "pid": _PID,
                   "tid": self._tids.get(worker.name, 0), "ts": self._us(perf_counter_ns()),
                   "args": args})  # fmt: skip

    def _sample(self, now: int) -> None:
        # One counter event per queue: each stage's input, then the output.
        self._next_sample = now + self._sample_ns
        run = self._run
        if run is None:
            return
        sizes = run.queue_sizes()
        names = [s.name for s in run.stages] + ["outputs"]
        for name, size in zip(names, sizes, strict=False):
            self._add({"name": f"queue {name}", "ph": "C", "pid": _PID, "ts": self._us(now),
                       "args": {"depth": size}})  # fmt: skip


def _meta(name: str, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": _PID, "tid": tid, "args": args}
