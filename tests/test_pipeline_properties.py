"""Property tests: random pipelines agree with the sequential composition of their stages.

Each example builds a pipeline of map / filter / flat_map / batch stages with
random worker counts, queue sizes and ordering, runs it, and compares the
outputs and every count of the report with a plain sequential model. Faults
are injected at random items of a random stage under each error policy, and
runs are cancelled from another thread at random moments.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline import (
    DEFAULT_MAXSIZE,
    DEFAULT_QUEUE_BYTES,
    MIN_DEFAULT_MAXSIZE,
    OnError,
    Pipeline,
    PipelineCancelled,
    PipelineReport,
    Retry,
    StageError,
)
from tests.helpers import WAIT, child_processes, owned_by_dask
from tests.process_stages import Injected as ProcessInjected
from tests.process_stages import Unlucky

# -- the stage functions: simple, deterministic, ints to ints -------------------------


def _map_fn(k: int) -> Callable[[int], int]:
    def fn(x: int) -> int:
        return (x * 7 + k) % 1009

    return fn


def _keep_fn(k: int) -> Callable[[int], bool]:
    def fn(x: int) -> bool:
        return x % (k + 2) != 0

    return fn


def _spread_fn(k: int) -> Callable[[int], list[int]]:
    def fn(x: int) -> list[int]:
        return [x + i for i in range((x + k) % 3)]  # zero, one or two outputs

    return fn


def _encode(batch: list[int]) -> int:
    """A batch as one int that depends on its exact contents and size."""
    return len(batch) * 1_000_000 + sum(v * (i + 1) for i, v in enumerate(batch)) % 1_000_000


class _Unbatch:
    """Flatten a batch again; note any batch of the wrong size."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.bad_sizes: list[int] = []

    def __call__(self, batch: list[int]) -> list[int]:
        if not 1 <= len(batch) <= self.size:
            self.bad_sizes.append(len(batch))
        return batch


# -- the random pipeline description --------------------------------------------------

Kind = Literal["one", "filter", "many", "batch"]


@dataclass(frozen=True)
class Op:
    """One operation drawn by hypothesis (a batch op becomes two stages)."""

    kind: Literal["map", "filter", "flat_map", "batch"]
    k: int
    workers: int
    maxsize: int
    ordered: bool


@dataclass
class Step:
    """One pipeline stage, with what the model needs to replay it."""

    name: str
    kind: Kind
    fn: Callable[[Any], Any]
    workers: int
    maxsize: int
    ordered: bool
    size: int = 0  # batch size
    checker: _Unbatch | None = None
    reads_batches: bool = False  # the stage right after a batch


@dataclass
class Counts:
    arrived: int = 0
    completed: int = 0
    emitted: int = 0
    dropped: int = 0
    failed: int = 0


op_strategy = st.builds(
    Op,
    kind=st.sampled_from(["map", "filter", "flat_map", "batch"]),
    k=st.integers(1, 5),
    workers=st.integers(1, 8),
    maxsize=st.integers(1, 64),
    ordered=st.booleans(),
)
ops_strategy = st.lists(op_strategy, min_size=1, max_size=4)
inputs_strategy = st.lists(st.integers(0, 1000), max_size=300)


def _all_ordered(ops: list[Op]) -> bool:
    return all(op.ordered or op.workers == 1 for op in ops)


def _steps(ops: list[Op]) -> list[Step]:
    ordered = _all_ordered(ops)
    steps: list[Step] = []
    for op in ops:
        name = f"s{len(steps)}"
        options = (op.workers, op.maxsize, op.ordered)
        if op.kind == "map":
            steps.append(Step(name, "one", _map_fn(op.k), *options))
        elif op.kind == "filter":
            steps.append(Step(name, "filter", _keep_fn(op.k), *options))
        elif op.kind == "flat_map":
            steps.append(Step(name, "many", _spread_fn(op.k), *options))
        else:
            steps.append(Step(name, "batch", list, 1, op.maxsize, True, size=op.k))
            after = f"s{len(steps)}"
            if ordered:
                # groups are deterministic: check each one exactly
                steps.append(Step(after, "one", _encode, *options, reads_batches=True))
            else:
                # groups depend on the schedule: check sizes, keep the items
                unbatch = _Unbatch(op.k)
                steps.append(
                    Step(after, "many", unbatch, *options, checker=unbatch, reads_batches=True)
                )
    return steps


def _build(
    steps: list[Step],
    maxsize: int,
    *,
    faulty: str | None = None,
    wrap: Callable[[Callable[[Any], Any]], Callable[[Any], Any]] | None = None,
    on_error: OnError = "raise",
    retry: Retry | None = None,
    in_process: frozenset[str] = frozenset(),
    remote: Any = "process",
) -> Pipeline[int, Any]:
    """The pipeline of ``steps``; those named in ``in_process`` run on ``remote``.

    ``remote`` is ``"process"`` (worker processes) or a Dask client.
    """
    pipeline: Pipeline[int, Any] = Pipeline[int](maxsize=maxsize)
    for step in steps:
        fn = step.fn
        policy: OnError = "raise"
        step_retry = None
        if step.name == faulty:
            assert wrap is not None
            fn = wrap(fn)
            policy = on_error
            step_retry = retry
        options: dict[str, Any] = {
            "name": step.name,
            "workers": step.workers,
            "maxsize": step.maxsize,
            "ordered": step.ordered,
            "on_error": policy,
            "retry": step_retry,
            "executor": remote if step.name in in_process else "thread",
        }
        if step.kind == "one":
            pipeline.map(fn, **options)
        elif step.kind == "filter":
            pipeline.filter(fn, **options)
        elif step.kind == "many":
            pipeline.flat_map(fn, **options)
        else:
            pipeline.batch(step.size, name=step.name, maxsize=step.maxsize)
    return pipeline


def _model(
    steps: list[Step], inputs: Iterable[int], *, failing: Callable[[str, Any], bool] | None = None
) -> tuple[list[Any], list[list[Any]], list[Counts]]:
    """Run the steps sequentially; return outputs, what arrived at each step, counts.

    ``failing(step, item)`` says whether the item fails there (a dead letter).
    """
    items: list[Any] = list(inputs)
    arrivals: list[list[Any]] = []
    counts: list[Counts] = []
    for step in steps:
        arrivals.append(items)
        c = Counts(arrived=len(items))
        out: list[Any] = []
        if step.kind == "batch":
            out = [items[i : i + step.size] for i in range(0, len(items), step.size)]
            c.completed = len(items)
        else:
            for item in items:
                if failing is not None and failing(step.name, item):
                    c.failed += 1
                    continue
                c.completed += 1
                if step.kind == "one":
                    produced = [step.fn(item)]
                elif step.kind == "filter":
                    produced = [item] if step.fn(item) else []
                else:
                    produced = list(step.fn(item))
                if not produced:
                    c.dropped += 1
                out.extend(produced)
        c.emitted = len(out)
        counts.append(c)
        items = out
    return items, arrivals, counts


def _alive() -> set[threading.Thread]:
    # Less Dask's: a nanny that restarts a worker process starts new watchers.
    return {t for t in threading.enumerate() if t.is_alive() and not owned_by_dask(t)}


def _check_shape(report: PipelineReport, steps: list[Step], maxsize: int) -> None:
    """The identities every report must satisfy, however the run ended."""
    assert report.balanced
    assert [s.name for s in report.stages] == [step.name for step in steps]
    assert report.stages[0].arrived == report.items_read
    for before, after in zip(report.stages, report.stages[1:], strict=False):
        assert after.arrived == before.emitted
    for stage, step in zip(report.stages, steps, strict=True):
        assert stage.arrived == stage.completed + stage.failed + stage.not_processed
        assert stage.completed + stage.failed <= stage.received <= stage.arrived
        assert stage.not_processed >= 0
        assert stage.workers == step.workers
        assert stage.queue.maxsize == step.maxsize
        assert stage.queue.peak_size <= step.maxsize
    created = sum(s.emitted - s.completed + s.dropped for s in report.stages)
    assert report.created == created
    assert report.outputs + report.dropped + report.failed + report.not_processed == (
        report.items_read + created
    )


def _check_counts(report: PipelineReport, counts: list[Counts]) -> None:
    for stage, c in zip(report.stages, counts, strict=True):
        assert (stage.arrived, stage.completed) == (c.arrived, c.completed)
        assert stage.emitted == c.emitted
        assert (stage.dropped, stage.failed, stage.not_processed) == (c.dropped, c.failed, 0)
        assert stage.received == stage.arrived


# -- 1. outputs equal the sequential composition --------------------------------------


@settings(max_examples=400)
@given(ops=ops_strategy, inputs=inputs_strategy, maxsize=st.integers(1, 64))
def test_outputs_equal_the_sequential_composition(
    ops: list[Op], inputs: list[int], maxsize: int
) -> None:
    steps = _steps(ops)
    expected, _, counts = _model(steps, inputs)
    before = _alive()
    result = _build(steps, maxsize).run(inputs, timeout=WAIT)
    assert _alive() <= before, "a thread of the run is still alive"
    if _all_ordered(ops):
        assert result.outputs == expected
    else:
        assert Counter(result.outputs) == Counter(expected)
    for step in steps:
        assert step.checker is None or step.checker.bad_sizes == []
    report = result.report
    assert report.status == "completed"
    assert report.items_read == len(inputs)
    assert report.outputs == len(result.outputs)
    assert (report.failed, report.not_processed, report.dead_letters) == (0, 0, ())
    _check_shape(report, steps, maxsize)
    _check_counts(report, counts)


@settings(max_examples=100)
@given(ops=ops_strategy, inputs=inputs_strategy, maxsize=st.integers(1, 64))
def test_stream_outputs_equal_the_sequential_composition(
    ops: list[Op], inputs: list[int], maxsize: int
) -> None:
    steps = _steps(ops)
    expected, _, _ = _model(steps, inputs)
    with _build(steps, maxsize).stream(iter(inputs), timeout=WAIT) as outputs:
        received = list(outputs)
    if _all_ordered(ops):
        assert received == expected
    else:
        assert Counter(received) == Counter(expected)
    report = outputs.report
    assert report is not None
    assert report.status == "completed"
    _check_shape(report, steps, maxsize)


# -- 2. fault injection under each policy ---------------------------------------------


class Injected(Exception):
    """The fault the tests inject."""


@dataclass
class Faults:
    """Raise Injected for chosen values; ``budget`` limits how often per value."""

    bad: set[Any]
    budget: Counter[Any] | None = None  # None: fail every time
    lock: threading.Lock = field(default_factory=threading.Lock)
    raised: list[Any] = field(default_factory=list)

    def wrap(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def faulty(x: Any) -> Any:
            with self.lock:
                if x in self.bad and (self.budget is None or self.budget[x] > 0):
                    if self.budget is not None:
                        self.budget[x] -= 1
                    self.raised.append(x)
                    raise Injected(x)
            return fn(x)

        return faulty


@st.composite
def faulty_pipelines(draw: st.DrawFn) -> tuple[list[Op], list[int], int, list[Step], int, set[Any]]:
    """Ops whose stages include one that can fail, the inputs, and the bad values."""
    ops = draw(ops_strategy.filter(lambda ops: any(op.kind != "batch" for op in ops)))
    inputs = draw(inputs_strategy)
    maxsize = draw(st.integers(1, 64))
    steps = _steps(ops)
    candidates = [
        i for i, step in enumerate(steps) if step.kind != "batch" and not step.reads_batches
    ]
    index = draw(st.sampled_from(candidates))
    _, arrivals, _ = _model(steps, inputs)
    values = sorted(set(arrivals[index]), key=repr)
    bad = set(draw(st.lists(st.sampled_from(values), max_size=5))) if values else set()
    return ops, inputs, maxsize, steps, index, bad


@settings(max_examples=200)
@given(case=faulty_pipelines())
def test_fail_fast_raises_stage_error_naming_the_faulty_stage(
    case: tuple[list[Op], list[int], int, list[Step], int, set[Any]],
) -> None:
    _, inputs, maxsize, steps, index, bad = case
    name = steps[index].name
    _, arrivals, _ = _model(steps, inputs)
    hits = [item for item in arrivals[index] if item in bad]
    faults = Faults(bad)
    pipeline = _build(steps, maxsize, faulty=name, wrap=faults.wrap)
    before = _alive()
    if not hits:
        assert pipeline.run(inputs, timeout=WAIT).report.status == "completed"
        return
    with pytest.raises(StageError) as caught:
        pipeline.run(inputs, timeout=WAIT)
    assert _alive() <= before, "a thread of the run is still alive"
    error = caught.value
    assert (error.stage, error.where, error.has_item) == (name, "process", True)
    assert error.item in bad
    assert isinstance(error.__cause__, Injected)
    assert error.__cause__.args == (error.item,)
    report = error.report
    assert report is not None
    assert report.status == "failed"
    _check_shape(report, steps, maxsize)
    assert report.dead_letters == ()


@settings(max_examples=200)
@given(case=faulty_pipelines())
def test_skip_turns_exactly_the_injected_items_into_dead_letters(
    case: tuple[list[Op], list[int], int, list[Step], int, set[Any]],
) -> None:
    ops, inputs, maxsize, steps, index, bad = case
    name = steps[index].name
    expected, arrivals, counts = _model(
        steps, inputs, failing=lambda step, item: step == name and item in bad
    )
    hits = [item for item in arrivals[index] if item in bad]
    faults = Faults(bad)
    before = _alive()
    pipeline = _build(steps, maxsize, faulty=name, wrap=faults.wrap, on_error="skip")
    result = pipeline.run(inputs, timeout=WAIT)
    assert _alive() <= before, "a thread of the run is still alive"
    if _all_ordered(ops):
        assert result.outputs == expected
    else:
        assert Counter(result.outputs) == Counter(expected)
    report = result.report
    assert report.status == "completed"
    letters = report.dead_letters
    assert Counter(d.item for d in letters) == Counter(hits)
    assert all(d.stage == name and d.attempts == 1 for d in letters)
    assert all(isinstance(d.exception, Injected) for d in letters)
    assert report.failed == len(hits)
    _check_shape(report, steps, maxsize)
    _check_counts(report, counts)


@settings(max_examples=200)
@given(case=faulty_pipelines(), failures=st.integers(1, 2))
def test_retry_recovers_injected_faults_that_stop_in_time(
    case: tuple[list[Op], list[int], int, list[Step], int, set[Any]], failures: int
) -> None:
    ops, inputs, maxsize, steps, index, bad = case
    name = steps[index].name
    expected, arrivals, counts = _model(steps, inputs)
    occurrences = Counter(item for item in arrivals[index] if item in bad)
    hits = sum(occurrences.values())
    # Each bad value fails `failures` times per occurrence in all; however the
    # failures fall on its occurrences, none runs out of tries.
    budget = Counter({value: failures * n for value, n in occurrences.items()})
    attempts = failures * max(occurrences.values(), default=1) + 1
    faults = Faults(bad, budget)
    retry = Retry(attempts=attempts, backoff=0.0, jitter=0.0)
    before = _alive()
    pipeline = _build(steps, maxsize, faulty=name, wrap=faults.wrap, retry=retry)
    result = pipeline.run(inputs, timeout=WAIT)
    assert _alive() <= before, "a thread of the run is still alive"
    if _all_ordered(ops):
        assert result.outputs == expected
    else:
        assert Counter(result.outputs) == Counter(expected)
    report = result.report
    assert report.status == "completed"
    assert report.dead_letters == ()
    assert len(faults.raised) == failures * hits
    assert [s.retried for s in report.stages] == [
        failures * hits if step.name == name else 0 for step in steps
    ]
    _check_shape(report, steps, maxsize)
    _check_counts(report, counts)


# -- 3. cancel at random moments ------------------------------------------------------


@settings(max_examples=250)
@given(
    ops=ops_strategy,
    maxsize=st.integers(1, 64),
    after=st.integers(1, 300),
    position=st.integers(0, 8),
)
def test_cancel_at_a_random_moment_leaves_a_balanced_report(
    ops: list[Op], maxsize: int, after: int, position: int
) -> None:
    _cancel_at_random(ops, maxsize, after, position)


def _cancel_at_random(
    ops: list[Op],
    maxsize: int,
    after: int,
    position: int,
    in_process: frozenset[str] = frozenset(),
    remote: Any = "process",
) -> None:
    # The watcher stage (a thread stage) cancels the run from another thread
    # once `after` items went through it.
    steps = _steps(ops)
    trigger = threading.Event()
    seen = 0

    def watch(item: Any) -> Any:
        nonlocal seen
        seen += 1  # one worker: no race
        if seen == after:
            trigger.set()
        return item

    # The watcher sits at the drawn position, or earlier if too few items
    # would ever reach it there (a filter may drop nearly everything).
    # It never sits between a batch and the stage that reads its lists.
    final, arrivals, _ = _model(steps, range(3000))
    arrivals.append(final)
    at = min(position, len(steps))
    while at > 0 and (len(arrivals[at]) < after or (at < len(steps) and steps[at].reads_batches)):
        at -= 1
    steps.insert(at, Step("watch", "one", watch, 1, maxsize, True))
    pipeline = _build(steps, maxsize, in_process=in_process, remote=remote)

    def cancel() -> None:
        if trigger.wait(WAIT):
            pipeline.cancel()

    before = _alive()
    canceller = threading.Thread(target=cancel, name="canceller")
    canceller.start()
    received: list[Any] = []
    try:
        with pytest.raises(PipelineCancelled) as caught:
            received.extend(pipeline.stream(count(), timeout=WAIT))
    finally:
        trigger.set()
        canceller.join(WAIT)
    assert not canceller.is_alive()
    assert _alive() <= before, "a thread of the run is still alive"
    report = caught.value.report
    assert report is not None
    assert report.status == "cancelled"
    # The watcher saw `after` items, each made from an item read: what was
    # read makes at least that many there (a flat_map before the watcher
    # may make several of one, so this is not items_read >= after).
    _, made, _ = _model(steps, range(report.items_read))
    assert len(made[at]) >= after, (report.items_read, len(made[at]), after)
    assert report.outputs == len(received)
    assert report.failed == 0
    _check_shape(report, steps, maxsize)
    # what came out is what the sequential model makes of what was read
    expected, _, _ = _model(steps, range(report.items_read))
    if _all_ordered(ops):
        assert received == expected[: len(received)]
    else:
        assert not Counter(received) - Counter(expected)
    for step in steps:
        assert step.checker is None or step.checker.bad_sizes == []


# -- 5. queue bounds set from the first item ------------------------------------------


def _resize(size: int) -> Callable[[bytes], bytes]:
    def stage(item: bytes) -> bytes:
        return item[:4] + bytes(size)  # the first 4 bytes carry the item's number

    return stage


@settings(max_examples=60)
@given(
    sizes=st.lists(st.sampled_from([0, 100, 5_000, 60_000, 300_000]), min_size=1, max_size=4),
    workers=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    n_items=st.integers(0, 40),
)
def test_default_bounds_follow_the_first_item_of_each_queue(
    sizes: list[int], workers: list[int], n_items: int
) -> None:
    pipeline = Pipeline[bytes]()
    for index, size in enumerate(sizes):
        pipeline.map(_resize(size), name=f"s{index}", workers=workers[index], ordered=True)
    source = [n.to_bytes(4, "big") for n in range(n_items)]
    with pipeline.stream(iter(source), timeout=WAIT) as outputs:
        numbers = [int.from_bytes(item[:4], "big") for item in outputs]
    assert numbers == list(range(n_items))
    report = outputs.report
    assert report is not None
    # Stage i's input is the source's items for i == 0, else stage i-1's outputs.
    first_items = [source[0] if source else None] + [
        bytes(4 + size) if source else None for size in sizes[:-1]
    ]
    for stage, first in zip(report.stages, first_items, strict=True):
        expected = DEFAULT_MAXSIZE
        if first is not None:
            fitted = DEFAULT_QUEUE_BYTES // sys.getsizeof(first)
            expected = max(MIN_DEFAULT_MAXSIZE, min(DEFAULT_MAXSIZE, fitted))
        assert stage.queue.maxsize == expected
        assert stage.queue.peak_size <= expected
    assert report.balanced


# -- 6. the same properties with stages on worker processes, and on Dask --------------
# Fewer examples and at most 2 workers per process stage: each example starts
# its worker processes. The faults are stateless (a process cannot share the
# thread tests' counters), so Retry is covered by tests/test_executors.py.


@st.composite
def process_pipelines(draw: st.DrawFn) -> tuple[list[Op], list[int], int, frozenset[str]]:
    """Ops with at most 2 workers a stage, inputs, a bound, and which stages run in processes."""
    ops = [
        Op(op.kind, op.k, min(op.workers, 2), op.maxsize, op.ordered)
        for op in draw(ops_strategy.filter(lambda ops: any(op.kind != "batch" for op in ops)))
    ]
    inputs = draw(st.lists(st.integers(0, 1000), max_size=120))
    maxsize = draw(st.integers(1, 64))
    names = [step.name for step in _steps(ops) if step.kind != "batch"]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    return ops, inputs, maxsize, frozenset(chosen)


@pytest.fixture(scope="session", params=["process", "dask"])
def remote(request: pytest.FixtureRequest) -> Any:
    """Where the chosen stages run: worker processes, or a Dask LocalCluster."""
    if request.param == "dask":
        return request.getfixturevalue("dask_client")
    return request.param


def _no_process_left() -> None:
    left = child_processes()
    for child in left:
        child.join(WAIT)
    assert left == [], f"worker processes left running: {left}"


@settings(max_examples=15)
@given(case=process_pipelines())
def test_process_stages_equal_the_sequential_composition(
    case: tuple[list[Op], list[int], int, frozenset[str]], remote: Any
) -> None:
    ops, inputs, maxsize, in_process = case
    steps = _steps(ops)
    expected, _, counts = _model(steps, inputs)
    pipeline = _build(steps, maxsize, in_process=in_process, remote=remote)
    result = pipeline.run(inputs, timeout=WAIT)
    _no_process_left()
    if _all_ordered(ops):
        assert result.outputs == expected
    else:
        assert Counter(result.outputs) == Counter(expected)
    assert result.report.status == "completed"
    _check_shape(result.report, steps, maxsize)
    _check_counts(result.report, counts)


@settings(max_examples=15)
@given(case=process_pipelines(), policy=st.sampled_from(["raise", "skip"]), data=st.data())
def test_process_stages_apply_the_error_policy_to_exactly_the_bad_items(
    case: tuple[list[Op], list[int], int, frozenset[str]],
    policy: OnError,
    data: st.DataObject,
    remote: Any,
) -> None:
    ops, inputs, maxsize, in_process = case
    steps = _steps(ops)
    candidates = sorted(s.name for s in steps if s.name in in_process and not s.reads_batches)
    assume(candidates)  # a stage after a batch() takes lists: no value to pick as bad
    name = data.draw(st.sampled_from(candidates))
    index = [step.name for step in steps].index(name)
    _, arrivals, _ = _model(steps, inputs)
    values = sorted(set(arrivals[index]))
    bad = frozenset(data.draw(st.lists(st.sampled_from(values), max_size=4)) if values else ())
    hits = [item for item in arrivals[index] if item in bad]

    def wrap(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return Unlucky(bad, fn)

    pipeline = _build(
        steps,
        maxsize,
        faulty=name,
        wrap=wrap,
        on_error=policy,
        in_process=in_process,
        remote=remote,
    )
    if policy == "raise" and hits:
        with pytest.raises(StageError) as caught:
            pipeline.run(inputs, timeout=WAIT)
        _no_process_left()
        error = caught.value
        assert (error.stage, error.where) == (name, "process")
        assert error.item in bad
        assert type(error.__cause__) is ProcessInjected
        assert error.__cause__.args == (error.item,)
        assert error.report is not None
        _check_shape(error.report, steps, maxsize)
        return
    result = pipeline.run(inputs, timeout=WAIT)
    _no_process_left()
    expected, _, counts = _model(
        steps, inputs, failing=lambda step, item: step == name and item in bad
    )
    if _all_ordered(ops):
        assert result.outputs == expected
    else:
        assert Counter(result.outputs) == Counter(expected)
    letters = result.report.dead_letters
    assert Counter(d.item for d in letters) == Counter(hits)
    assert all(type(d.exception) is ProcessInjected for d in letters)
    _check_shape(result.report, steps, maxsize)
    _check_counts(result.report, counts)


@settings(max_examples=15)
@given(case=process_pipelines(), after=st.integers(1, 300), position=st.integers(0, 8))
def test_process_stages_cancelled_at_a_random_moment_leave_a_balanced_report(
    case: tuple[list[Op], list[int], int, frozenset[str]], after: int, position: int, remote: Any
) -> None:
    ops, _, maxsize, in_process = case
    if remote != "process":
        # A Dask task costs the cluster tens of milliseconds, and with a queue
        # of one a task has one item: a few hundred items may take longer than
        # the watchdog's timeout. The moment stays random, within 40 items.
        after = 1 + (after - 1) % 40
    _cancel_at_random(ops, maxsize, after, position, in_process, remote)
    _no_process_left()
