"""Live progress of a run: a line per stage, and a total with an ETA when the source has a length.

``run(progress=True)``, ``stream(progress=True)`` and ``--progress`` on the
command line add a :class:`Progress` observer. Every ``seconds`` (from the
run's ticker thread) it reads :meth:`~pipeline.RunInfo.snapshot` and shows,
per stage: items done, throughput since the last look, workers busy of
workers, the input queue's fill, and a mark when the stage is *starved*
(a worker waits for input) or *blocked* (a worker waits for room in the
queue after it). The total counts the source's items through every stage,
with an ETA when the source's length is known.

Where it goes: on a terminal, with rich installed (the ``progress`` extra), a
live table redrawn in place on stderr; otherwise plain lines through the
``pipeline.progress`` logger (or straight to stderr when logging is not set
up), so that progress in a log file reads as log lines.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from time import monotonic
from typing import IO, TYPE_CHECKING, Any

from ._observe import Observer, RunInfo, StageSnapshot

if TYPE_CHECKING:
    from ._report import PipelineReport

__all__ = ["Progress"]

logger = logging.getLogger("pipeline.progress")


class Progress(Observer):
    """Show a run's progress every ``seconds``: rich on a terminal, plain lines otherwise.

    ``rich``: ``None`` picks by itself (rich when ``stream`` is a terminal and
    rich is installed); ``False`` always writes plain lines.

    >>> from pipeline import Pipeline, Progress
    >>> _ = Pipeline[int]().map(abs).run(range(10), observers=[Progress(rich=False)])
    """

    def __init__(
        self, seconds: float = 1.0, *, stream: IO[str] | None = None, rich: bool | None = None
    ) -> None:
        self.tick_seconds = seconds
        self._stream = stream
        self._rich = rich
        self._lock = threading.Lock()  # a tick and the final look never interleave
        self._run: RunInfo | None = None
        self._last: tuple[float, dict[str, int]] = (monotonic(), {})
        self._began = monotonic()
        self._live: Any = None

    def run_started(self, run: RunInfo) -> None:
        self._run = run
        self._began = monotonic()
        self._last = (self._began, {})
        stream = self._stream if self._stream is not None else sys.stderr
        if self._rich is not False and _is_terminal(stream):
            self._live = _start_live(stream)

    def tick(self, run: RunInfo) -> None:
        with self._lock:
            self._show(run.snapshot(), final=False)

    def run_finished(self, report: PipelineReport) -> None:
        with self._lock:
            if self._run is not None:
                self._show(self._run.snapshot(), final=True)
            if self._live is not None:
                self._live.stop()
                self._live = None

    # -- rendering ----------------------------------------------------------------

    def _show(self, stages: tuple[StageSnapshot, ...], *, final: bool) -> None:
        now = monotonic()
        then, before = self._last
        span = max(now - then, 1e-9)
        self._last = (now, {s.name: s.completed for s in stages})
        rows = [_row(s, (s.completed - before.get(s.name, 0)) / span) for s in stages]
        total = self._total(stages, now, final=final)
        if self._live is not None:
            self._live.update(_table(rows, total), refresh=True)
            return
        lines = [f"progress: {total}"] + [f"progress: {row}" for row in _plain(rows)]
        self._write(lines)

    def _total(self, stages: tuple[StageSnapshot, ...], now: float, *, final: bool) -> str:
        if not stages:
            return "no stages"
        done = _through(stages)
        elapsed = now - self._began
        rate = done / elapsed if elapsed > 0 else 0.0
        expected = self._run.expected if self._run is not None else None
        text = f"{done} items in {elapsed:.1f}s ({rate:.0f}/s)"
        if expected:
            text = (
                f"{done}/{expected} items ({done / expected:.0%}) in {elapsed:.1f}s ({rate:.0f}/s)"
            )
            if not final and rate > 0 and done < expected:
                text += f", ETA {(expected - done) / rate:.0f}s"
        return text + (" - done" if final else "")

    def _write(self, lines: list[str]) -> None:
        if self._stream is None and logger.hasHandlers() and logger.isEnabledFor(logging.INFO):
            for line in lines:
                logger.info("%s", line)
            return
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()


def _through(stages: tuple[StageSnapshot, ...]) -> int:
    # Source items through the whole pipeline so far: the fewest any stage
    # has finished, counting those dropped or failed before it as finished
    # there too. Past a stage that turns n items into m (flat_map, batch),
    # later stages count other items, so they are left out.
    done: int | None = None
    gone = 0  # source items dropped or failed by the stages before
    for stage in stages:
        here = stage.completed + stage.failed + gone
        done = here if done is None else min(done, here)
        if stage.emitted != stage.completed - stage.dropped:
            break
        gone += stage.dropped + stage.failed
    return done or 0


def _row(stage: StageSnapshot, rate: float) -> tuple[str, ...]:
    mark = "starved" if stage.starved else ""
    if stage.blocked:
        mark = "blocked"
    bound = str(stage.queue_maxsize) if stage.queue_maxsize > 0 else "-"
    return (
        stage.name,
        f"{stage.completed} done",
        f"{rate:.0f}/s",
        f"{stage.busy}/{stage.workers} busy",
        f"queue {stage.queue_size}/{bound}",
        mark,
    )


def _plain(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        mark = f"[{row[-1]}]" if row[-1] else ""
        lines.append("  ".join([*cells[:-1], mark]).rstrip())
    return lines


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _start_live(stream: IO[str]) -> Any:
    # A rich Live display on `stream`, or None when rich is not installed.
    try:
        console_module = importlib.import_module("rich.console")
        live_module = importlib.import_module("rich.live")
    except ImportError:
        return None
    console = console_module.Console(file=stream)
    live = live_module.Live(console=console, auto_refresh=False, transient=False)
    live.start()
    return live


def _table(rows: list[tuple[str, ...]], total: str) -> Any:
    table_module = importlib.import_module("rich.table")
    table = table_module.Table(title=total, title_justify="left")
    for column in ("stage", "done", "rate", "busy", "queue", ""):
        table.add_column(column, justify="left" if column in {"stage", ""} else "right")
    for row in rows:
        mark = row[-1]
        style = {"blocked": "[red]blocked[/red]", "starved": "[yellow]starved[/yellow]"}
        table.add_row(*row[:-1], style.get(mark, ""))
    return table
