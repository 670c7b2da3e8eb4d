"""Stages made from plain functions: map, filter, flat-map, each.

``Pipeline.map``, ``.filter``, ``.flat_map`` and ``.each`` build these; use them
directly to give a function stage hooks or to reuse it across pipelines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .._stage import PipelineStage, StageKind

__all__ = ["EachStage", "FilterStage", "FlatMapStage", "MapStage"]

T = TypeVar("T")
R = TypeVar("R")


def _check_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"{name!r} must be callable, not {type(fn).__name__}")


def _function_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


class MapStage(PipelineStage[T, R], Generic[T, R]):
    """Emit ``fn(item)`` for each item.

    >>> MapStage(str.upper).process("a")
    'A'
    >>> MapStage(str.upper).name
    'upper'
    """

    def __init__(self, fn: Callable[[T], R], *, name: str | None = None) -> None:
        _check_callable(fn, "fn")
        super().__init__(name=name or _function_name(fn))
        self.fn = fn

    def process(self, item: T) -> R:
        """Return ``fn(item)``."""
        return self.fn(item)

    def _fast_path(self) -> tuple[StageKind, Callable[[Any], Any]] | None:
        # Call the function directly, one Python frame less per item, unless a
        # subclass changed what process() does.
        if type(self).process is MapStage.process:
            return StageKind.ONE, self.fn
        return None


class FilterStage(PipelineStage[T, T], Generic[T]):
    """Keep the items for which ``predicate(item)`` is true.

    With ``predicate=None`` (the default) it keeps the items that are true
    themselves, as the built-in ``filter(None, ...)`` does.

    >>> list(FilterStage(str.isdigit).process("7")), list(FilterStage(str.isdigit).process("x"))
    (['7'], [])
    >>> list(FilterStage().process(0)), list(FilterStage().process(5))
    ([], [5])
    """

    def __init__(
        self,
        predicate: Callable[[T], object] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        chosen: Callable[[Any], object] = bool if predicate is None else predicate
        _check_callable(chosen, "predicate")
        super().__init__(name=name)
        self.predicate: Callable[[T], object] = chosen

    def process(self, item: T) -> Iterator[T]:
        """Yield ``item`` if it passes the predicate."""
        if self.predicate(item):
            yield item

    def _fast_path(self) -> tuple[StageKind, Callable[[Any], Any]] | None:
        if type(self).process is FilterStage.process:
            return StageKind.FILTER, self.predicate
        return None


class FlatMapStage(PipelineStage[T, R], Generic[T, R]):
    """Emit every element of ``fn(item)``: zero, one or many outputs per item.

    >>> list(FlatMapStage(str.split).process("a b"))
    ['a', 'b']
    """

    def __init__(self, fn: Callable[[T], Iterable[R]], *, name: str | None = None) -> None:
        _check_callable(fn, "fn")
        super().__init__(name=name or _function_name(fn))
        self.fn = fn

    def process(self, item: T) -> Iterator[R]:
        """Yield the elements of ``fn(item)``."""
        yield from self.fn(item)

    def _fast_path(self) -> tuple[StageKind, Callable[[Any], Any]] | None:
        if type(self).process is FlatMapStage.process:
            return StageKind.MANY, self.fn
        return None


class EachStage(PipelineStage[T, T], Generic[T]):
    """Call ``fn(item)`` for its side effect and pass the item on unchanged.

    >>> seen = []
    >>> EachStage(seen.append).process(1), seen
    (1, [1])
    """

    def __init__(self, fn: Callable[[T], object], *, name: str | None = None) -> None:
        _check_callable(fn, "fn")
        super().__init__(name=name or _function_name(fn))
        self.fn = fn

    def process(self, item: T) -> T:
        """Call ``fn(item)``; return ``item``."""
        self.fn(item)
        return item
