"""A picture of a run: busy workers, queue depths and throughput per stage (the ``plot`` extra).

:class:`PlotFile` is an observer that keeps every batch's span and samples
the queue depths while the run goes on, then draws three panels sharing the
time axis into a PNG when the run finishes: how many of each stage's workers
were busy, how full each stage's input queue was, and how many items per
second each stage finished. A stage that holds the pipeline back is the one
whose workers stay busy while the queue in front of it stays full. The
report's verdict is the picture's caption.

It draws with matplotlib's object API (a ``Figure`` on an Agg canvas), so
it never touches pyplot's global state or the program's backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import textwrap
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from ._observe import BatchStats, Observer, RunInfo, WorkerInfo
from ._trace import check_trace

if TYPE_CHECKING:
    from ._report import PipelineReport

__all__ = ["PlotFile"]

_BINS = 120  # time slices of the picture


class PlotFile(Observer):
    """Draw the run into a PNG at ``path`` when it finishes.

    >>> import os, tempfile
    >>> from pipeline import Pipeline, PlotFile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.png")
    >>> _ = Pipeline[int]().map(abs).run(range(100), observers=[PlotFile(path)])
    >>> with open(path, "rb") as file:
    ...     file.read(4)[1:]
    b'PNG'
    """

    tick_seconds = 0.02  # how often the queue depths are sampled

    def __init__(self, path: str | os.PathLike[str], *, size: tuple[float, float] = (10, 7.5),
                 dpi: int = 100) -> None:  # fmt: skip
        checked = check_trace(path, "path")
        if checked is None:
            raise TypeError("'path' must be a file path, not None")
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("a plot needs matplotlib: pip install 'threaded-pipeline[plot]'")
        self.path = checked
        self.size = size
        self.dpi = dpi
        self._origin = perf_counter_ns()
        self._stages: list[tuple[str, int]] = []  # (name, workers)
        self._index: dict[str, int] = {}
        self._spans: list[tuple[int, int, int, int]] = []  # (stage, start, end ns, completed)
        self._depths: list[tuple[int, tuple[int, ...]]] = []  # (ns, depth per stage)

    def run_started(self, run: RunInfo) -> None:
        self._origin = perf_counter_ns()
        self._stages = [(s.name, s.workers) for s in run.stages]
        self._index = {s.name: s.index for s in run.stages}
        self._sample(run)

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        end = perf_counter_ns()
        start = end - int(batch.seconds * 1e9)
        self._spans.append((worker.index, start, end, batch.completed + batch.failed))

    def tick(self, run: RunInfo) -> None:
        self._sample(run)

    def _sample(self, run: RunInfo) -> None:
        depths = run.queue_sizes()  # cheap: this runs 50 times a second
        self._depths.append((perf_counter_ns(), depths))

    def run_finished(self, report: PipelineReport) -> None:
        end = perf_counter_ns()
        self._depths.append((end, tuple(s.queue.size for s in report.stages)))
        figure = self._draw(end, report)
        backend = importlib.import_module("matplotlib.backends.backend_agg")
        backend.FigureCanvasAgg(figure).print_png(self.path)

    # -- drawing -----------------------------------------------------------------------

    def _draw(self, end: int, report: PipelineReport) -> Any:
        figure_module = importlib.import_module("matplotlib.figure")
        width = max(end - self._origin, 1)
        edges = [self._origin + width * i // _BINS for i in range(_BINS + 1)]
        seconds = [(edge - self._origin) / 1e9 for edge in edges[:-1]]
        slice_s = width / _BINS / 1e9
        busy = [[0.0] * _BINS for _ in self._stages]
        done = [[0.0] * _BINS for _ in self._stages]
        for stage, start, stop, count in self._spans:
            first = max(0, (start - self._origin) * _BINS // width)
            last = min(_BINS - 1, (stop - self._origin) * _BINS // width)
            for slot in range(first, last + 1):
                overlap = min(stop, edges[slot + 1]) - max(start, edges[slot])
                if overlap > 0:
                    busy[stage][slot] += overlap / (edges[slot + 1] - edges[slot])
            done[stage][last] += count / slice_s
        figure = figure_module.Figure(figsize=self.size, dpi=self.dpi, layout="constrained")
        top, middle, bottom = figure.subplots(3, 1, sharex=True)
        # Stages that move in step draw the same line: the earlier ones are
        # drawn wider, so that every one stays visible.
        widths = [1.2 + 2.4 * (len(self._stages) - 1 - i) / max(len(self._stages) - 1, 1)
                  for i in range(len(self._stages))]  # fmt: skip
        for index, (name, workers) in enumerate(self._stages):
            label = f"{name} ({workers} worker{'s' if workers > 1 else ''})"
            style = {"linewidth": widths[index], "alpha": 0.85}
            top.plot(seconds, busy[index], label=label, drawstyle="steps-post", **style)
            bottom.plot(seconds, _smooth(done[index]), label=name, **style)
        times = [(ns - self._origin) / 1e9 for ns, _ in self._depths]
        for index, (name, _) in enumerate(self._stages):
            depth = [depths[index] if index < len(depths) else 0 for _, depths in self._depths]
            style = {"linewidth": widths[index], "alpha": 0.85}
            middle.plot(times, depth, label=f"in front of {name}", drawstyle="steps-post", **style)
        top.set_ylabel("workers busy")
        middle.set_ylabel("queue depth")
        bottom.set_ylabel("items/s finished\n(moving average)")
        bottom.set_xlabel("seconds since the run started")
        for axes in (top, middle, bottom):
            axes.grid(alpha=0.3)
            axes.set_ylim(bottom=0)
            axes.legend(loc="upper right", fontsize="small")
        verdict = report.verdict
        caption = str(verdict) if verdict is not None else "the run was too short to tell"
        title = f"pipeline run: {report.status} in {report.elapsed_seconds:.2f} s"
        figure.suptitle(title + "\n" + "\n".join(textwrap.wrap(caption, 110)), fontsize="medium")
        return figure


def _smooth(values: list[float]) -> list[float]:
    # A centred moving average over about a twelfth of the run: items finish
    # one at a time, and a rate per slice of the run would be all spikes.
    half = max(1, _BINS // 24)
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half) : i + half + 1]
        out.append(sum(window) / len(window))
    return out
