"""User code is hostile: whatever it raises, and whatever its __repr__, __str__ or
__bool__ do, no library thread dies of it, nothing is lost, and the error names
the stage and the item with the original exception as its cause."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline import (
    Pipeline,
    PipelineReport,
    Retry,
    SafeQueue,
    ShutDown,
    StageError,
)
from pipeline._exceptions import _short_repr, _short_str
from pipeline.stages import MapStage


class ReprRaises(Exception):
    def __repr__(self) -> str:
        raise ValueError("__repr__ raised")

    def __str__(self) -> str:
        raise TypeError("__str__ raised")


class ReprRaisesBase(Exception):
    def __repr__(self) -> str:
        raise KeyboardInterrupt  # a BaseException out of __repr__


class Custom(BaseException):
    pass


class ItemReprRaises(int):
    def __repr__(self) -> str:
        raise RuntimeError("item __repr__ raised")


class NoTruth:
    def __bool__(self) -> bool:
        raise ValueError("no truth value")


def _books(report: PipelineReport | None, *, read: int, received: int) -> PipelineReport:
    assert report is not None
    assert report.balanced, report.to_dict()
    assert report.items_read == read
    assert report.outputs == received
    return report


def _counting(n: int) -> tuple[Iterator[int], list[int]]:
    pulled: list[int] = []

    def gen() -> Iterator[int]:
        for i in range(n):
            pulled.append(i)
            yield i

    return gen(), pulled


# -- item 3: an exception whose __repr__ raises ---------------------------------------


@pytest.mark.parametrize("error_type", [ReprRaises, ReprRaisesBase])
@pytest.mark.parametrize("shape", ["bounded queue", "generator source", "two workers", "list"])
def test_an_exception_whose_repr_raises_fails_the_run_with_itself_as_cause(
    error_type: type[Exception], shape: str
) -> None:
    raised: list[BaseException] = []

    def fail_at_3(x: int) -> int:
        if x == 3:
            error = error_type(x)
            raised.append(error)
            raise error
        return x

    source, pulled = _counting(10)
    workers, maxsize = (
        (2, None) if shape == "two workers" else (1, 1 if shape == "bounded queue" else None)
    )
    pipeline = Pipeline[int](maxsize=maxsize).map(fail_at_3, name="f", workers=workers)
    with pytest.raises(StageError) as caught:
        pipeline.run(source if shape == "generator source" else list(range(10)))
    error = caught.value
    assert error.__cause__ is raised[0]  # the original, not the repr's error
    assert (error.stage, error.has_item, error.item) == ("f", True, 3)
    assert f"<{error_type.__qualname__} object; repr() raised" in str(error)
    read = len(pulled) if shape == "generator source" else error.report.items_read  # type: ignore[union-attr]
    _books(error.report, read=read, received=0)


def test_an_item_whose_repr_raises_is_named_by_a_placeholder() -> None:
    def fail(x: int) -> int:
        raise ValueError("bad")

    with pytest.raises(StageError) as caught:
        Pipeline[int]().map(fail, name="f").run([ItemReprRaises(5)])
    assert caught.value.item == 5
    assert "<ItemReprRaises object; repr() raised RuntimeError>" in str(caught.value)


def test_the_safe_repr_and_str_never_raise() -> None:
    class StrSubclass(str):
        def __len__(self) -> int:
            raise RuntimeError("hostile __len__")

    class ReturnsHostileStr:
        def __repr__(self) -> str:
            return StrSubclass("x" * 500)

    class Meta(type):
        def __getattribute__(cls, name: str) -> Any:
            if name == "__qualname__":
                raise RuntimeError("hostile metaclass")
            return super().__getattribute__(name)

    class Hostile(Exception, metaclass=Meta):
        def __repr__(self) -> str:
            raise RuntimeError

    assert _short_repr(ReturnsHostileStr()) == "x" * 197 + "..."
    assert _short_repr(Hostile()) == "<object object; repr() raised RuntimeError>"
    assert _short_str(ReprRaises()) == "ReprRaises: <str() raised>"


def test_a_dead_letter_of_a_hostile_exception_is_json_ready() -> None:
    def fail(x: int) -> int:
        raise ReprRaises(x)

    report = Pipeline[int]().map(fail, on_error="skip").run([1]).report
    (letter,) = report.to_dict()["dead_letters"]
    assert letter["exception"] == "<ReprRaises object; repr() raised ValueError>"


# -- item 4: a BaseException from process() ---------------------------------------------


@pytest.mark.parametrize("error_type", [SystemExit, KeyboardInterrupt, GeneratorExit, Custom])
@pytest.mark.parametrize("kind", ["map", "flat_map", "filter", "class"])
def test_a_base_exception_in_process_fails_the_run_naming_the_item_with_a_queue_source(
    error_type: type[BaseException], kind: str
) -> None:
    def fail_at_50(x: int) -> Any:
        if x == 50:
            raise error_type("from process")
        return [x] if kind == "flat_map" else x

    source = SafeQueue[int]()
    source.put_many(range(100))
    source.shutdown()
    pipeline = Pipeline[int]()
    if kind == "map":
        pipeline.map(fail_at_50, name="s", on_error="skip", retry=Retry(attempts=3, backoff=0))
    elif kind == "flat_map":
        pipeline.flat_map(fail_at_50, name="s", on_error="skip")
    elif kind == "filter":
        pipeline.filter(fail_at_50, name="s", on_error="skip")
    else:
        pipeline.add(MapStage(fail_at_50, name="s"), on_error="skip")
    with pytest.raises(StageError) as caught:
        pipeline.run(source)
    error = caught.value
    assert isinstance(error.__cause__, error_type)  # never retried, never a dead letter
    assert (error.stage, error.has_item, error.item) == ("s", True, 50)
    report = _books(error.report, read=100 - source.qsize(), received=0)
    assert report.failed == report.stages[0].failed == 1
    assert report.dead_letters == ()


def test_a_base_exception_after_a_dead_letter_in_the_same_batch_still_names_its_item() -> None:
    # The path after a first failure in a batch (the rest of the batch is
    # called one by one from there) must treat a BaseException the same way.
    def fail(x: int) -> int:
        if x == 3:
            raise ValueError("skip me")
        if x == 6:
            raise Custom("stop")
        return x

    stage = MapStage(fail, name="s")
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(stage, on_error="skip").run(list(range(10)))
    assert (caught.value.item, type(caught.value.__cause__)) == (6, Custom)
    report = _books(caught.value.report, read=10, received=0)
    assert [d.item for d in report.dead_letters] == [3]
    assert report.failed == 2


def test_retry_refuses_base_exception_types() -> None:
    with pytest.raises(TypeError, match="'on' must hold Exception subclasses"):
        Retry(on=(KeyboardInterrupt,))


# -- item 9: a source that raises ShutDown ------------------------------------------------


def test_a_generator_source_raising_shutdown_fails_the_run() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise ShutDown("a wrapped queue of the caller's")

    for read_by in ("feeder", "first worker"):
        pipeline = Pipeline[int]().map(abs)
        if read_by == "feeder":
            with pytest.raises(StageError) as caught:
                pipeline.run(source())
        else:
            with pytest.raises(StageError) as caught:
                Pipeline[int]().map(abs).run(_ShutDownList([1, 2]))
        assert caught.value.stage == "source"
        assert isinstance(caught.value.__cause__, ShutDown)
        assert caught.value.report is not None
        assert caught.value.report.status == "failed"


class _ShutDownList(list[int]):
    """A list whose iterator raises ShutDown after its items: read in chunks by a lone worker."""

    def __iter__(self) -> Iterator[int]:
        yield from list.__iter__(self)
        raise ShutDown


# -- item 10: a filter result whose __bool__ raises ----------------------------------------


@pytest.mark.parametrize("retry", [None, Retry(attempts=2, backoff=0.0)])
@pytest.mark.parametrize("batch_of_one", [True, False])
def test_a_filter_result_whose_bool_raises_is_that_items_error(
    retry: Retry | None, batch_of_one: bool
) -> None:
    def predicate(x: int) -> object:
        return NoTruth() if x == 2 else x % 2

    source = [2] if batch_of_one else [1, 2, 3, 4, 5]
    report = Pipeline[int]().filter(predicate, on_error="skip", retry=retry).run(source).report
    (letter,) = report.dead_letters
    assert letter.item == 2
    assert isinstance(letter.exception, ValueError)
    assert letter.attempts == (2 if retry else 1)
    _books(report, read=len(source), received=report.outputs)


def test_a_filter_result_whose_bool_raises_fails_fast_naming_the_item() -> None:
    with pytest.raises(StageError) as caught:
        Pipeline[int]().filter(lambda x: NoTruth() if x == 3 else True).run([1, 2, 3, 4])
    assert (caught.value.has_item, caught.value.item) == (True, 3)


# -- no library thread dies -------------------------------------------------------------


@pytest.mark.parametrize(
    "hook",
    [
        lambda: (_ for _ in ()).throw(ReprRaises()),
        lambda: (_ for _ in ()).throw(Custom()),
    ],
)
def test_a_hook_raising_anything_fails_the_run_and_every_thread_ends(
    hook: Callable[[], None],
) -> None:
    class Hooked(MapStage[int, int]):
        def on_start(self) -> None:
            hook()

    before = set(threading.enumerate())
    with pytest.raises(StageError) as caught:
        Pipeline[int]().add(Hooked(abs), workers=3).map(abs).run(range(100))
    assert caught.value.where == "on_start"
    assert [t for t in threading.enumerate() if t not in before] == []
