"""A randomized fault-injection harness for pipelines, with a sequential reference model.

Each trial draws a random configuration from a seed: a source (list, range,
list subclass, generator, slow generator, SafeQueue fed by a thread), one to
four stages of every kind (map, filter, flat_map, a generator class stage,
each, a function class stage, batch last), workers, queue sizes, ordering,
``on_error`` and ``Retry``, the executor (in about one trial in six, one stage
runs in worker processes, which may be slow to start or on their first item),
and faults: items on which a stage raises (plain errors, exceptions whose
``__repr__``/``__str__`` raise, ``BaseException`` subclasses,
``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, ``StopIteration``,
filter results whose ``__bool__`` raises), transient or permanent; hooks that
raise; a source that raises or blocks. Then a control lands at a random moment
from another thread: ``cancel()``, ``close()``, a timeout, ``break``,
``Stream.close()``, or SIGINT (once or twice) delivered to the main thread.

The trial runs the pipeline in the calling thread under a watchdog, and
checks the outcome against :func:`model`, which computes sequentially what
the run must produce, and against counts the harness takes itself: items
pulled from the source, items received by the caller, hooks called and
tries per item (in files, for a process stage, whose children count them),
and that no thread or worker process outlives the run. The report's own
arithmetic is never the reference: ``balanced`` is checked, but the figures
are compared with what was counted outside the library.

Run it for a while: ``python -m tests.faults --minutes 10`` (prints how many
configurations ran and fails on the first violation, with its seed);
``python -m tests.faults --seed N`` replays one.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline import (
    BatchStats,
    DeadLetter,
    Observer,
    Pipeline,
    PipelineCancelled,
    PipelineInterrupted,
    PipelineReport,
    PipelineStage,
    PipelineStateError,
    PipelineTimeout,
    Retry,
    SafeQueue,
    ShutDown,
    StageError,
    WorkerInfo,
)
from pipeline.stages import FilterStage

# -- hostile objects ------------------------------------------------------------------


class Fault(ValueError):
    """An ordinary injected error."""


class HostileRepr(ValueError):
    """An error whose __repr__ and __str__ raise."""

    def __repr__(self) -> str:
        raise ValueError("__repr__ of an injected error")

    def __str__(self) -> str:
        raise RuntimeError("__str__ of an injected error")


class ReprRaisesBase(Exception):
    """An error whose __repr__ raises a BaseException."""

    def __repr__(self) -> str:
        raise CustomBase("raised by __repr__")


class CustomBase(BaseException):
    """A BaseException that is not an Exception."""


class HostileBool:
    """A filter result whose truth value cannot be told."""

    def __bool__(self) -> bool:
        raise Fault("__bool__ of a filter result")


class HostileInt(int):
    """An item whose repr raises (it flows like any int)."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of an item")


# What process() raises for each fault kind, and the type the policy sees
# (StopIteration from process() reaches the policy as a RuntimeError).
FAULTS: dict[str, tuple[Callable[[int], BaseException], type[BaseException]]] = {
    "error": (lambda v: Fault(f"fault at {int(v)}"), Fault),
    "hostile_repr": (HostileRepr, HostileRepr),
    "repr_base": (ReprRaisesBase, ReprRaisesBase),
    "stop_iteration": (StopIteration, RuntimeError),
    "base": (CustomBase, CustomBase),
    "keyboard": (KeyboardInterrupt, KeyboardInterrupt),
    "system_exit": (SystemExit, SystemExit),
    "generator_exit": (GeneratorExit, GeneratorExit),
}
MILD = ["error", "hostile_repr", "repr_base", "stop_iteration"]
FATAL = ["base", "keyboard", "system_exit", "generator_exit"]

# -- configuration ---------------------------------------------------------------------

KINDS = ["map", "filter", "flat", "gen", "each", "cls"]
CONTROLS = ["none", "cancel", "close", "timeout", "break", "stream_close", "sigint", "sigint2"]
SOURCES = ["list", "range", "listsub", "gen", "slowgen", "queue"]


@dataclass
class StageConfig:
    """One stage of a random pipeline."""

    kind: str
    workers: int
    ordered: bool
    maxsize: int | None
    on_error: str
    retry: Retry | None
    fault_rate: float
    fault_kinds: list[str]
    failures: int  # failing tries of a faulty item (99: every try)
    hook_fault: str | None  # "on_start", "on_stop" or None
    hook_fault_kind: str
    delay: float
    batch_size: int = 0
    max_wait: float | None = None
    executor: str = "thread"  # or "process"
    stall: str | None = None  # "on_start" or "process": each child is slow there, once


@dataclass
class Config:
    """A whole trial, drawn from one seed."""

    seed: int
    source: str
    items: int
    source_fault_at: int | None
    source_fault_kind: str
    block_at: int | None
    hostile_items: bool
    stages: list[StageConfig]
    batch: tuple[int, float | None] | None
    mode: str  # "run" or "stream"
    control: str
    control_delay: float
    timeout: float | None
    maxsize: int | None

    def describe(self) -> str:
        """A one-line summary, for failure messages."""
        parts = [
            f"seed={self.seed} {self.mode} source={self.source}[{self.items}]",
            f"control={self.control}@{self.control_delay:.3f}",
        ]
        if self.source_fault_at is not None:
            parts.append(f"source raises {self.source_fault_kind} at {self.source_fault_at}")
        if self.block_at is not None:
            parts.append(f"source blocks at {self.block_at}")
        for i, s in enumerate(self.stages):
            executor = "P" if s.executor == "process" else ""  # P: worker processes
            order = "o" if s.ordered else "u"
            text = f"{i}:{s.kind}{executor} w{s.workers}{order} q{s.maxsize} {s.on_error}"
            if s.retry:
                text += f" retry{s.retry.attempts}{'V' if s.retry.on == (ValueError,) else ''}"
            if s.fault_rate:
                text += f" faults {s.fault_rate:.2f} {s.fault_kinds} x{s.failures}"
            if s.hook_fault:
                text += f" {s.hook_fault}:{s.hook_fault_kind}"
            if s.stall:
                text += f" stall:{s.stall}"
            parts.append(text)
        if self.batch:
            parts.append(f"batch{self.batch}")
        return " | ".join(parts)


def draw(seed: int) -> Config:
    """Draw a random configuration from ``seed``."""
    rng = random.Random(seed)
    stages = [_draw_stage(rng) for _ in range(rng.randint(1, 4))]
    _draw_executor(seed, stages)
    source = rng.choice(SOURCES)
    iterator = source in {"listsub", "gen", "slowgen"}
    mode = rng.choice(["run", "stream"])
    controls = [c for c in CONTROLS if mode == "stream" or c not in {"break", "stream_close"}]
    control = rng.choice(["none"] * 3 + controls)
    return Config(
        seed=seed,
        source=source,
        items=rng.choice([0, 1, 2, 5, 20, 100, 500, 2000 if source != "queue" else 800]),
        source_fault_at=rng.randint(0, 60) if iterator and rng.random() < 0.1 else None,
        source_fault_kind=rng.choice(["error", "shutdown", "base", "hostile_repr"]),
        block_at=rng.randint(0, 30) if source == "slowgen" else None,
        hostile_items=rng.random() < 0.1,
        stages=stages,
        batch=(rng.randint(1, 7), rng.choice([None, 0.001, 0.01])) if rng.random() < 0.2 else None,
        mode=mode,
        control=control,
        control_delay=rng.choice([0.0, 0.0005, 0.002, 0.01, 0.03]) * rng.random(),
        timeout=rng.choice([0.0, 0.001, 0.01, 0.05]) if control == "timeout" else None,
        maxsize=rng.choice([None, None, 1, 2, 16]),
    )


def _draw_executor(seed: int, stages: list[StageConfig]) -> None:
    # At most one process stage, with at most two workers: each worker is a
    # child process, costly to start. A generator of its own keeps every
    # other field of a seed's configuration as it was before process stages.
    rng = random.Random(seed * 31 + 5)
    few = [stage for stage in stages if stage.workers <= 2]
    if rng.random() < 0.2 and few:
        stage = rng.choice(few)
        stage.executor = "process"
        # A worker looks for a cancellation only while its child has been
        # quiet for a while (_process.py), longer than a batch of these
        # stages takes: a stall is what lets a control find a child busy,
        # and terminate it.
        stage.stall = rng.choice([None, None, "on_start", "process"])


def _draw_stage(rng: random.Random) -> StageConfig:
    faulty = rng.random() < 0.35
    # A stage's faults are ordinary errors, hostile ones, or (in a quarter
    # of the faulty stages) BaseExceptions only, so that those are the
    # first fault a run meets often enough.
    kinds = rng.sample(MILD, rng.randint(1, 2))
    if rng.random() < 0.25:
        kinds = [rng.choice(FATAL)]
    elif rng.random() < 0.15:
        kinds.append(rng.choice(FATAL))
    kind = rng.choice(KINDS)
    if kind == "filter" and rng.random() < 0.5:
        kinds.append("bool")
    retry = None
    if rng.random() < 0.4:
        retry = Retry(
            attempts=rng.randint(1, 3),
            backoff=rng.choice([0.0, 0.0005]),
            jitter=0.0,
            on=rng.choice([(Exception,), (ValueError,)]),
        )
    return StageConfig(
        kind=kind,
        workers=rng.choice([1, 1, 2, 3, 4]),
        ordered=rng.random() < 0.7,
        maxsize=rng.choice([None, None, 1, 2, 5]),
        on_error=rng.choice(["raise", "skip", "skip"]),
        retry=retry,
        fault_rate=rng.choice([0.02, 0.1, 0.3]) if faulty else 0.0,
        fault_kinds=kinds,
        failures=rng.choice([1, 2, 99]),
        hook_fault=rng.choice(["on_start", "on_stop"]) if rng.random() < 0.02 else None,
        hook_fault_kind=rng.choice(["error", "base", "hostile_repr"]),
        delay=rng.choice([0.0, 0.0, 0.0, 0.0002, 0.001]),
    )


# -- the stages, deterministic and injective on ints ------------------------------------


def _mix(seed: int, stage: int, value: int) -> float:
    return ((value * 2654435761 + seed * 40503 + stage * 9973) % 1_000_003) / 1_000_003


def _fault_of(cfg: Config, index: int, value: int) -> str | None:
    stage = cfg.stages[index]
    if not stage.fault_rate or _mix(cfg.seed, index, value) >= stage.fault_rate:
        return None
    return stage.fault_kinds[int(_mix(cfg.seed + 1, index, value) * len(stage.fault_kinds))]


def _outputs_of(kind: str, value: int) -> list[int]:
    """What a stage of ``kind`` emits for ``value`` when nothing fails."""
    if kind == "map":
        return [value * 2 + 1]
    if kind == "filter":
        return [value] if value % 3 else []
    if kind == "flat":
        return [value * 10 + j for j in range(value % 3)]
    if kind == "gen":
        return [value * 3 + j for j in range(value % 2 + 1)]
    if kind == "cls":
        return [value + 7]
    return [value]  # each


class Tries(Protocol):
    """Counts the tries of each (stage, value) of a stage."""

    def next(self, index: int, value: int) -> int:
        """Count one more try of ``value`` at stage ``index``; return how many so far."""
        ...


class HookCalls(Protocol):
    """Counts the on_start and on_stop calls of one stage."""

    def count(self, which: str) -> None:
        """Count one call of hook ``which`` (``"on_start"`` or ``"on_stop"``)."""
        ...

    @property
    def started(self) -> int:
        """How many on_start calls were counted."""
        ...

    @property
    def stopped(self) -> int:
        """How many on_stop calls were counted."""
        ...


class _Tries:
    """Tries in memory, across the worker threads of thread stages."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[int, int]] = Counter()

    def next(self, index: int, value: int) -> int:
        with self.lock:
            self.counts[index, value] += 1
            return self.counts[index, value]


class _FileTries:
    """Tries of a process stage: one file per try, which its children share.

    The tries of one item are sequential (a retry runs in the worker that
    tried it last), so the first free number is this try's.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def next(self, index: int, value: int) -> int:
        n = 1
        while True:
            path = os.path.join(self.directory, f"{index}-{int(value)}-{n}")
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                n += 1
            else:
                return n


class _Hooks:
    """Hook calls of a thread stage, in memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def count(self, which: str) -> None:
        with self.lock:
            self.calls[which] += 1

    @property
    def started(self) -> int:
        return self.calls["on_start"]

    @property
    def stopped(self) -> int:
        return self.calls["on_stop"]


class _FileHooks:
    """Hook calls of a process stage: a file of a unique name per call, made by the child."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def count(self, which: str) -> None:
        handle, _ = tempfile.mkstemp(prefix=f"{which}-", dir=self.directory)
        os.close(handle)

    def _files(self, which: str) -> int:
        return sum(name.startswith(f"{which}-") for name in os.listdir(self.directory))

    @property
    def started(self) -> int:
        return self._files("on_start")

    @property
    def stopped(self) -> int:
        return self._files("on_stop")


def _raise_for(kind: str, value: int) -> None:
    raise FAULTS[kind][0](value)


STALL_SECONDS = 0.1  # longer than the controls' delays and most timeouts


def _make_call(cfg: Config, index: int, tries: Tries) -> Callable[[int], Any]:
    stage = cfg.stages[index]
    # Popped by the first call. Only a process stage stalls, and each of its
    # children unpickles a list of its own: once per child, one thread each.
    stall = [True] if stage.stall == "process" else []

    def attempt(value: int) -> str | None:
        # The fault this try raises, if any.
        if stall:
            stall.pop()
            time.sleep(STALL_SECONDS)
        if stage.delay:
            time.sleep(stage.delay)
        fault = _fault_of(cfg, index, value)
        if fault is None:
            return None
        return fault if tries.next(index, value) <= stage.failures else None

    if stage.kind == "filter":

        def predicate(value: int) -> object:
            fault = attempt(value)
            if fault == "bool":
                return HostileBool()
            if fault is not None:
                _raise_for(fault, value)
            return value % 3

        return predicate
    if stage.kind in {"flat", "gen"}:

        def many(value: int) -> Iterator[int]:
            fault = attempt(value)
            outputs = _outputs_of(stage.kind, value)
            if fault is not None and fault != "bool":
                yield from outputs[:1]  # a partial output, which a failure takes back
                _raise_for(fault, value)
            yield from outputs

        return many

    def one(value: int) -> int:
        fault = attempt(value)
        if fault is not None and fault != "bool":
            _raise_for(fault, value)
        return _outputs_of(stage.kind, value)[0]

    return one


def _hook(cfg: StageConfig, hooks: HookCalls, which: str) -> None:
    hooks.count(which)  # before the stall: a child terminated there has counted its on_start
    if which == "on_start" and cfg.stall == "on_start":
        time.sleep(STALL_SECONDS)
    if cfg.hook_fault == which:
        _raise_for(cfg.hook_fault_kind, -1)


class _OneStage(PipelineStage[int, int]):
    def __init__(self, fn: Callable[[int], int], cfg: StageConfig, hooks: HookCalls) -> None:
        super().__init__()
        self.fn, self.cfg, self.hooks = fn, cfg, hooks

    def on_start(self) -> None:
        _hook(self.cfg, self.hooks, "on_start")

    def process(self, item: int) -> int:
        return self.fn(item)

    def on_stop(self) -> None:
        _hook(self.cfg, self.hooks, "on_stop")


class _ManyStage(PipelineStage[int, int]):
    def __init__(
        self, fn: Callable[[int], Iterator[int]], cfg: StageConfig, hooks: HookCalls
    ) -> None:
        super().__init__()
        self.fn, self.cfg, self.hooks = fn, cfg, hooks

    def on_start(self) -> None:
        _hook(self.cfg, self.hooks, "on_start")

    def process(self, item: int) -> Iterator[int]:
        yield from self.fn(item)

    def on_stop(self) -> None:
        _hook(self.cfg, self.hooks, "on_stop")


class _HookedFilter(FilterStage[int]):
    # Keeps FilterStage's process (its one-pass fast path) and adds hooks.
    def __init__(self, fn: Callable[[int], object], cfg: StageConfig, hooks: HookCalls) -> None:
        super().__init__(fn)
        self.cfg, self.hooks = cfg, hooks

    def on_start(self) -> None:
        _hook(self.cfg, self.hooks, "on_start")

    def on_stop(self) -> None:
        _hook(self.cfg, self.hooks, "on_stop")


def build(cfg: Config, directory: str) -> tuple[Pipeline[int, Any], list[HookCalls]]:
    """The pipeline of ``cfg``; every stage counts its hooks and tries.

    A process stage counts them in files under ``directory`` (its children
    share no memory with the harness, and a lock does not pickle); thread
    stages count them in memory.
    """
    pipeline: Pipeline[int, Any] = Pipeline[int](maxsize=cfg.maxsize)
    hooks: list[HookCalls] = []
    in_memory = _Tries()
    for index, stage in enumerate(cfg.stages):
        tries: Tries = in_memory
        counted: HookCalls = _Hooks()
        if stage.executor == "process":
            stage_directory = os.path.join(directory, f"s{index}")
            os.mkdir(stage_directory)
            tries, counted = _FileTries(stage_directory), _FileHooks(stage_directory)
        call = _make_call(cfg, index, tries)
        hooks.append(counted)
        options: dict[str, Any] = {
            "workers": stage.workers,
            "ordered": stage.ordered,
            "maxsize": stage.maxsize,
            "on_error": stage.on_error,
            "retry": stage.retry,
            "name": f"s{index}",
            "executor": stage.executor,
        }
        if stage.kind == "filter":
            pipeline.add(_HookedFilter(call, stage, counted), **options)
        elif stage.kind in {"flat", "gen"}:
            pipeline.add(_ManyStage(call, stage, counted), **options)
        else:
            pipeline.add(_OneStage(call, stage, counted), **options)
    if cfg.batch is not None:
        pipeline.batch(cfg.batch[0], max_wait=cfg.batch[1])
    return pipeline, hooks


# -- the source ------------------------------------------------------------------------


class _Counted:
    """Items pulled from an iterator source, counted by the harness."""

    def __init__(self) -> None:
        self.pulled = 0
        self.release = threading.Event()  # lets a blocked source go on


def _source_items(cfg: Config) -> list[int]:
    rng = random.Random(cfg.seed * 7 + 1)
    values = rng.sample(range(1, 10 * cfg.items + 10), cfg.items)
    if cfg.hostile_items:
        values = [HostileInt(v) if v % 5 == 0 else v for v in values]
    return values


class _ListSub(list[int]):
    """A list subclass: read through its iterator, which the harness counts."""

    counter: _Counted

    def __iter__(self) -> Iterator[int]:
        for value in list.__iter__(self):
            self.counter.pulled += 1
            yield value


def _generator(cfg: Config, values: list[int], counter: _Counted) -> Iterator[int]:
    for index, value in enumerate(values):
        if index == cfg.source_fault_at:
            if cfg.source_fault_kind == "shutdown":
                raise ShutDown
            _raise_for(cfg.source_fault_kind, index)
        if index == cfg.block_at:
            counter.release.wait(0.4)  # blocks inside next(); ends by itself
        counter.pulled += 1
        yield value


def make_source(
    cfg: Config, values: list[int], counter: _Counted
) -> tuple[Iterable[int] | SafeQueue[int], threading.Thread | None]:
    """The source of ``cfg`` and, for a queue source, its producer thread (not started)."""
    if cfg.source == "list":
        return list(values), None
    if cfg.source == "range":
        return range(len(values)), None  # values 0..n-1 then
    if cfg.source == "listsub":
        source = _ListSub(values)
        source.counter = counter
        return source, None
    if cfg.source in {"gen", "slowgen"}:
        return _generator(cfg, values, counter), None
    queue = SafeQueue[int](maxsize=cfg.maxsize or 0)
    handle = queue.producer()

    def produce() -> None:
        try:
            for value in values:
                handle.put(value)
                counter.pulled += 1  # put: the pipeline takes what was put and not left
        except ShutDown:
            pass
        finally:
            handle.close()

    return queue, threading.Thread(target=produce, name="harness-producer", daemon=True)


# -- the reference model ------------------------------------------------------------------


@dataclass
class Expected:
    """What a run of the configuration must produce, computed sequentially."""

    outputs: list[Any] = field(default_factory=list)  # if every item gets through
    dead: Counter[tuple[str, int]] = field(default_factory=Counter)
    fatal: set[tuple[str, str, int | None]] = field(default_factory=set)  # (stage, where, item)
    fatal_types: set[type[BaseException]] = field(default_factory=set)
    ordered: bool = True


def model(cfg: Config, values: list[int]) -> Expected:
    """Compute the outputs, dead letters and possible fatal errors of ``cfg``."""
    expected = Expected()
    expected.ordered = all(s.ordered or s.workers == 1 for s in cfg.stages)
    items = values
    fault_at = cfg.source_fault_at if cfg.source in {"gen", "slowgen"} else None
    if fault_at is not None and fault_at < len(values):
        expected.fatal.add(("source", "source", None))
        kind = cfg.source_fault_kind
        expected.fatal_types.add(ShutDown if kind == "shutdown" else FAULTS[kind][1])
        items = values[:fault_at]
    for index, stage in enumerate(cfg.stages):
        name = f"s{index}"
        if stage.hook_fault is not None:
            expected.fatal.add((name, stage.hook_fault, None))
            expected.fatal_types.add(FAULTS[stage.hook_fault_kind][1])
        passed: list[int] = []
        for value in items:
            fault = _fault_of(cfg, index, value)
            if fault is None:
                passed += _outputs_of(stage.kind, value)
                continue
            seen = Fault if fault == "bool" else FAULTS[fault][1]
            tries = 1
            if stage.retry is not None and issubclass(seen, stage.retry.on):
                tries = stage.retry.attempts
            if not issubclass(seen, Exception):
                tries = 1
            if stage.failures < tries:
                passed += _outputs_of(stage.kind, value)
            elif stage.on_error == "skip" and issubclass(seen, Exception):
                expected.dead[name, int(value)] += 1
            else:
                expected.fatal.add((name, "process", int(value)))
                expected.fatal_types.add(seen)
        items = passed
    if cfg.batch is not None:
        size = cfg.batch[0]
        expected.outputs = [items[i : i + size] for i in range(0, len(items), size)]
    else:
        expected.outputs = items
    return expected


# -- one trial ---------------------------------------------------------------------------


class Violation(AssertionError):
    """The run broke a promise; the message says which, with the configuration."""


class Ledger(Observer):
    """An observer that adds up every event per stage, to check them against the report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, Counter[str]] = defaultdict(Counter)
        self.finished: list[PipelineReport] = []

    def _count(self, stage: str, **counts: int) -> None:
        with self.lock:
            self.totals[stage].update(counts)

    def worker_started(self, worker: WorkerInfo) -> None:
        self._count(worker.stage, started=1)

    def worker_stopped(self, worker: WorkerInfo) -> None:
        self._count(worker.stage, stopped=1)

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        if batch.size != batch.completed + batch.failed + batch.abandoned:
            self._count(worker.stage, broken_batches=1)
        if batch.abandoned:
            self._count(worker.stage, abandoned_batches=1)
        self._count(
            worker.stage,
            size=batch.size,
            completed=batch.completed,
            emitted=batch.emitted,
            dropped=batch.dropped,
            failed=batch.failed,
        )

    def item_dead_lettered(self, worker: WorkerInfo, letter: DeadLetter) -> None:
        self._count(worker.stage, dead=1)

    def run_finished(self, report: PipelineReport) -> None:
        self.finished.append(report)


class FlakyObserver(Observer):
    """Raises a hostile error at its ``fail_at``-th event: it must be removed, harming nothing."""

    def __init__(self, fail_at: int) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_at = fail_at

    def batch_done(self, worker: WorkerInfo, batch: BatchStats) -> None:
        with self.lock:
            self.calls += 1
            if self.calls == self.fail_at:
                raise HostileRepr


@dataclass
class Result:
    """What one trial saw."""

    outcome: str
    report: PipelineReport | None
    received: list[Any]
    error: BaseException | None = None


_MAIN = threading.main_thread()
WATCHDOG_SECONDS = 30.0


def run_trial(seed: int) -> Result:
    """Run the configuration of ``seed``; raise :class:`Violation` on a broken promise."""
    directory = tempfile.mkdtemp(prefix=f"faults-{seed}-")  # a process stage's counts
    try:
        return _trial(draw(seed), directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _trial(cfg: Config, directory: str) -> Result:
    seed = cfg.seed
    children = set(multiprocessing.active_children())
    pipeline, hooks = build(cfg, directory)
    values = _source_items(cfg)
    counter = _Counted()
    source, producer = make_source(cfg, values, counter)
    if cfg.source == "range":
        values = list(range(len(values)))
    expected = model(cfg, values)
    before = set(threading.enumerate())
    state = _ControlState()
    control = threading.Thread(
        target=_control, args=(cfg, pipeline, state), name="harness-control", daemon=True
    )
    done = threading.Event()
    watchdog = threading.Thread(
        target=_watchdog, args=(cfg, pipeline, done, state), name="harness-watchdog", daemon=True
    )
    watchdog.start()
    if producer is not None:
        producer.start()
    result = Result("completed", None, [])
    ledger = Ledger()
    observers: list[Observer] = [ledger]
    if seed % 4 == 0:
        observers.insert(0, FlakyObserver(1 + seed % 3))
    try:
        result = _execute(cfg, pipeline, source, control, state, observers)
    finally:
        _finish_control(control, state, result)
        counter.release.set()
        done.set()
        watchdog.join(WATCHDOG_SECONDS)
        if producer is not None:
            if result.outcome == "refused" and isinstance(source, SafeQueue):
                source.shutdown()  # no run ever consumed it: let its producer go
            producer.join(5.0)
    if state.hung:
        raise Violation(f"the run hung: {cfg.describe()}")
    try:
        _check(cfg, expected, result, counter, source, hooks, values)
        _check_ledger(cfg, ledger, result, hooks)
        _check_threads(cfg, before, result)
        _check_processes(children)
    except AssertionError as exc:
        raise Violation(f"{exc}\n  config: {cfg.describe()}") from exc
    return result


class _ControlState:
    def __init__(self) -> None:
        self.running = False  # the run (or stream) is going on in the main thread
        self.stream: Any = None
        self.stop = threading.Event()
        self.hung = False
        self.signals = 0


def _execute(  # noqa: PLR0911 (one return per way a run ends)
    cfg: Config,
    pipeline: Pipeline[int, Any],
    source: Iterable[int] | SafeQueue[int],
    control: threading.Thread,
    state: _ControlState,
    observers: list[Observer],
) -> Result:
    received: list[Any] = []
    finished: list[Any] = []  # the run's result, once run() returned
    try:
        if cfg.mode == "run":
            state.running = True
            control.start()
            try:
                finished.append(pipeline.run(source, timeout=cfg.timeout, observers=observers))
            finally:
                state.running = False
            return Result("completed", finished[0].report, finished[0].outputs)
        stream = pipeline.stream(source, timeout=cfg.timeout, observers=observers)
        state.stream = stream
        state.running = True
        control.start()
        try:
            with stream:
                for item in stream:
                    received.append(item)
                    if cfg.control == "break" and len(received) >= 1 + cfg.seed % 7:
                        break
        finally:
            state.running = False
        outcome = (
            "closed"
            if stream.report is not None and stream.report.status == "closed"
            else "completed"
        )
        return Result(outcome, stream.report, received)
    except PipelineInterrupted as exc:
        return Result("interrupted", exc.report, received, exc)
    except PipelineTimeout as exc:
        return Result("timed out", exc.report, received, exc)
    except PipelineCancelled as exc:
        return Result("cancelled", exc.report, received, exc)
    except StageError as exc:
        return Result("failed", exc.report, received, exc)
    except PipelineStateError as exc:  # closed before the run could start
        return Result("refused", None, received, exc)
    except KeyboardInterrupt as exc:
        # A plain KeyboardInterrupt: a SIGINT that arrived just after the run
        # had ended, or a second one raised in the stream's loop body.
        if finished:
            return Result("completed", finished[0].report, finished[0].outputs, exc)
        report = state.stream.report if state.stream is not None else None
        return Result("raw interrupt", report, received, exc)


def _control(cfg: Config, pipeline: Pipeline[int, Any], state: _ControlState) -> None:
    if cfg.control in {"none", "timeout", "break"}:
        return
    if state.stop.wait(cfg.control_delay):
        return
    if cfg.control == "cancel":
        pipeline.cancel()
    elif cfg.control == "close":
        pipeline.close()
    elif cfg.control == "stream_close" and state.stream is not None:
        state.stream.close()
    elif cfg.control in {"sigint", "sigint2"}:
        # Only while the run is registered, which it is only while the
        # library handles SIGINT (the run registers after, and unregisters
        # before, it routes the signal): else the KeyboardInterrupt would
        # land in the harness.
        while not pipeline._runs:
            if state.stop.wait(0.0005):
                return
        for n in range(2 if cfg.control == "sigint2" else 1):
            if n and state.stop.wait(0.005):
                return
            if state.running and pipeline._runs and _MAIN.ident is not None:
                state.signals += 1
                signal.pthread_kill(_MAIN.ident, signal.SIGINT)


def _finish_control(control: threading.Thread, state: _ControlState, result: Result) -> None:
    # The control thread may send SIGINT until it ends: a KeyboardInterrupt
    # raised here, after the run, is that signal arriving late.
    state.stop.set()
    for _ in range(3):
        try:
            while control.ident is not None and control.is_alive():
                control.join(0.05)
            time.sleep(0)  # a pending signal is handled here, if anywhere
            break
        except KeyboardInterrupt:
            result.error = result.error or KeyboardInterrupt("late")


def _watchdog(
    cfg: Config, pipeline: Pipeline[int, Any], done: threading.Event, state: _ControlState
) -> None:
    if done.wait(WATCHDOG_SECONDS):
        return
    state.hung = True
    print(f"\nHANG: {cfg.describe()}", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    pipeline.close()  # try to let the test go on, to report the hang


# -- the checks ----------------------------------------------------------------------------


def _sub_multiset(small: list[Any], big: list[Any]) -> bool:
    have = Counter(map(repr_safe, big))
    need = Counter(map(repr_safe, small))
    return all(have[k] >= n for k, n in need.items())


def repr_safe(value: Any) -> Any:
    """A hashable key for an output (lists of ints for batches)."""
    return tuple(int(v) for v in value) if isinstance(value, list) else int(value)


def _check(
    cfg: Config,
    expected: Expected,
    result: Result,
    counter: _Counted,
    source: Iterable[int] | SafeQueue[int],
    hooks: list[HookCalls],
    values: list[int],
) -> None:
    if result.outcome == "refused":
        assert cfg.control == "close", cfg.control
        assert not result.received
        return
    report = result.report
    assert report is not None, f"no report for outcome {result.outcome}"
    assert report.balanced, f"the books do not balance: {report.to_dict()}"
    # Counted outside the library: items pulled from the source, items received.
    if isinstance(source, SafeQueue):
        left = source.qsize()
        assert report.items_read == counter.pulled - left, (report.items_read, counter.pulled, left)
    elif cfg.source in {"listsub", "gen", "slowgen"}:
        # A source thread left inside next() may return one more item after
        # the report was made; the run never reads it.
        late = any(entry.startswith("pipeline-source ") for entry in report.left_running)
        assert counter.pulled - report.items_read in ({0, 1} if late else {0}), (
            report.items_read,
            counter.pulled,
            report.left_running,
        )
    else:
        assert report.items_read <= len(values)
    assert report.outputs == len(result.received), (report.outputs, len(result.received))
    if cfg.batch is not None:
        for batch in result.received:
            assert 1 <= len(batch) <= cfg.batch[0], batch
    # Hooks: every worker whose on_start returned ran on_stop (threads left
    # behind aside).
    if not report.left_running:
        for stage, counted in zip(cfg.stages, hooks, strict=True):
            assert counted.started <= stage.workers, counted.started
            stopped = 0 if stage.hook_fault == "on_start" else counted.started
            if stage.executor == "process" and report.status != "completed":
                # A cancellation terminates the children it finds busy with
                # a batch or still in on_start, and those run no on_stop
                # (_process.py); the idle ones run it. _check_ledger bounds
                # how many may miss it.
                assert counted.stopped <= stopped, (counted.started, counted.stopped)
            else:
                assert counted.stopped == stopped, (
                    stage.hook_fault,
                    counted.started,
                    counted.stopped,
                )
    dead = Counter((d.stage, int(d.item)) for d in report.dead_letters)
    assert all(expected.dead[k] >= n for k, n in dead.items()), (dead, expected.dead)
    outcome = result.outcome
    status = report.status
    if outcome == "completed":
        assert status == "completed", status
        assert not expected.fatal, f"completed, but the model fails on {expected.fatal}"
        assert report.items_read == len(values)
        _check_outputs(expected, result.received, cfg)
        assert dead == expected.dead, (dead, expected.dead)
        return
    if outcome == "failed":
        error = result.error
        assert isinstance(error, StageError)
        key = (error.stage, error.where, int(error.item) if error.has_item else None)  # type: ignore[call-overload]
        some = sorted(expected.fatal, key=repr)[:6]
        assert key in expected.fatal, f"unexpected StageError {key}; the model fails on {some}..."
        assert isinstance(error.__cause__, tuple(expected.fatal_types)), repr(type(error.__cause__))
        assert status == "failed", status
        str(error)  # the message never raises
    elif outcome == "timed out":
        assert cfg.control == "timeout", cfg.control
        assert status in {"timed out", "failed"}, status
    elif outcome == "cancelled":
        assert cfg.control in {"cancel", "close"}, cfg.control
        assert status in {"cancelled", "failed"}, status
    elif outcome == "closed":
        assert cfg.control in {"break", "stream_close", "close"}, cfg.control
    elif outcome in {"interrupted", "raw interrupt"}:
        assert cfg.control in {"sigint", "sigint2"}, cfg.control
    else:
        raise AssertionError(f"unknown outcome {outcome}")
    # Ended early: what came out is part of what would have come out (items
    # of batches, which an early end or max_wait may cut differently).
    got, want = result.received, expected.outputs
    if cfg.batch is not None:
        got = [v for batch in got for v in batch]
        want = [v for batch in want for v in batch]
    assert _sub_multiset(got, want), "an output the model never produces"
    if expected.ordered and cfg.batch is None and not expected.fatal and not expected.dead:
        got = [repr_safe(v) for v in result.received]
        want = [repr_safe(v) for v in expected.outputs[: len(got)]]
        assert got == want, "outputs out of order"


def _check_ledger(cfg: Config, ledger: Ledger, result: Result, hooks: list[HookCalls]) -> None:
    # The observer saw every event the report was built from: the same
    # figures per stage, and as many workers started as on_start returned
    # (the harness counted those calls itself).
    report = result.report
    if report is None:
        assert ledger.finished == [], "run_finished for a run that never started"
        return
    if report.left_running:
        return  # a worker left inside user code has not sent its last events yet
    if ledger.finished:
        assert ledger.finished == [report], "run_finished got another report"
    for index, stage in enumerate(report.stages):
        seen = ledger.totals[stage.name]
        assert seen["broken_batches"] == 0, f"{stage.name}: a batch's counts do not add up"
        figures = (stage.completed, stage.emitted, stage.dropped, stage.failed)
        observed = (seen["completed"], seen["emitted"], seen["dropped"], seen["failed"])
        assert observed == figures, (stage.name, observed, figures)
        assert seen["dead"] == sum(d.stage == stage.name for d in report.dead_letters)
        assert seen["size"] <= stage.received, (stage.name, seen["size"], stage.received)
        if index < len(hooks) and ledger.finished:
            counted = hooks[index]
            assert seen["started"] <= counted.started, (seen["started"], counted.started)
            assert seen["stopped"] == stage.workers or seen["stopped"] == seen["started"]
            if cfg.stages[index].executor == "process":
                # A child without on_stop was terminated by the cancellation,
                # busy with a batch (which its worker then records as
                # abandoned), or one whose on_start raised or was cut short
                # (its worker never reported it started).
                missing = counted.started - counted.stopped
                unreported = counted.started - seen["started"]
                assert missing <= seen["abandoned_batches"] + unreported, (
                    stage.name,
                    counted.started,
                    counted.stopped,
                    dict(seen),
                )


def _check_outputs(expected: Expected, received: list[Any], cfg: Config) -> None:
    got = [repr_safe(v) for v in received]
    if cfg.batch is not None:
        flat = [v for batch in got for v in batch]
        want = [v for batch in expected.outputs for v in batch]
        if expected.ordered:
            assert flat == want, "batched outputs differ from the model"
            if cfg.batch[1] is None:
                assert got == [repr_safe(b) for b in expected.outputs], "batches cut differently"
        else:
            assert Counter(flat) == Counter(want), "batched outputs differ from the model"
        return
    want = [repr_safe(v) for v in expected.outputs]
    if expected.ordered:
        assert got == want, f"outputs differ from the model ({len(got)} vs {len(want)})"
    else:
        assert Counter(got) == Counter(want), "outputs differ from the model"


def _check_threads(cfg: Config, before: set[threading.Thread], result: Result) -> None:
    report = result.report
    left = set(report.left_running) if report is not None else set()
    deadline = time.monotonic() + 5.0
    for thread in [t for t in threading.enumerate() if t not in before]:
        if thread.name.startswith("harness-"):
            thread.join(max(0.0, deadline - time.monotonic()))
            continue
        named = any(entry.startswith(thread.name + " ") for entry in left)
        # A thread left behind ends once the user code it is in returns.
        thread.join(max(0.0, deadline - time.monotonic()) if named else 0.5)
        assert not thread.is_alive(), f"thread {thread.name} outlived the run (left: {left})"


def _check_processes(before: set[multiprocessing.process.BaseProcess]) -> None:
    # The run ends every worker process it started before it returns (or
    # raises); a child may take a moment to exit once told to.
    deadline = time.monotonic() + 5.0
    for child in set(multiprocessing.active_children()) - before:
        child.join(max(0.0, deadline - time.monotonic()))
    left = set(multiprocessing.active_children()) - before
    assert not left, f"worker processes outlived the run: {sorted(map(repr, left))}"


# -- the command line ---------------------------------------------------------------------


def soak(seconds: float, first_seed: int, *, quiet: bool = False) -> int:
    """Run trials from ``first_seed`` on for ``seconds``; return how many ran."""
    deadline = time.monotonic() + seconds
    seed = first_seed
    outcomes: Counter[str] = Counter()
    processes = 0  # configurations with a process stage
    while time.monotonic() < deadline:
        result = run_trial(seed)
        outcomes[result.outcome] += 1
        processes += any(stage.executor == "process" for stage in draw(seed).stages)
        seed += 1
        if not quiet and (seed - first_seed) % 500 == 0:
            print(f"  {seed - first_seed} configurations, {dict(outcomes)}", flush=True)
    if not quiet:
        print(
            f"{seed - first_seed} configurations clean ({processes} with a process stage): "
            f"{dict(outcomes)}",
            flush=True,
        )
    return seed - first_seed


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.faults``: soak for a while, or replay one seed."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--first-seed", type=int, default=random.randrange(10**9))
    parser.add_argument("--seed", type=int, help="replay this one configuration")
    args = parser.parse_args(argv)
    if args.seed is not None:
        print(draw(args.seed).describe())
        result = run_trial(args.seed)
        print(result.outcome, result.report.to_dict() if result.report else None)
        return 0
    print(f"{sys.version.split()[0]}: soaking from seed {args.first_seed}", flush=True)
    # Every fourth trial has an observer that raises on purpose; its removal
    # is logged, which would bury the soak's own lines.
    logging.getLogger("pipeline").addHandler(logging.NullHandler())
    logging.getLogger("pipeline").propagate = False
    soak(args.minutes * 60, args.first_seed)
    return 0


if __name__ == "__main__":
    # Run as tests.faults rather than as __main__: the classes of a process
    # stage and of the faults it raises then travel to and from its children
    # by reference, as they do under pytest, and come back as the classes
    # the checks know.
    # Each worker process then runs this file again as __mp_main__ after the
    # fork server imported it as tests.faults (the stages' module), and runpy
    # warns of that once per child, which would bury the soak's lines. The
    # fork server, and so every child, takes its warning filters from here.
    rerun = "ignore:'tests.faults' found in sys.modules:RuntimeWarning"
    given = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = f"{given},{rerun}" if given else rerun
    raise SystemExit(importlib.import_module("tests.faults").main())
