"""The arithmetic stages of the demo: multiply, add."""

from __future__ import annotations

from .._stage import PipelineStage

__all__ = ["AddStage", "MultiplyStage"]


class MultiplyStage(PipelineStage[int]):
    """Multiply each item by ``factor`` (default 2).

    >>> MultiplyStage().process(21)
    42
    >>> MultiplyStage(factor=3, name="triple").name
    'triple'
    """

    def __init__(self, factor: int = 2, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.factor = factor

    def process(self, item: int) -> int:
        """Return ``item * factor``."""
        return item * self.factor


class AddStage(PipelineStage[int]):
    """Add ``amount`` (default 10) to each item.

    >>> AddStage().process(2)
    12
    """

    def __init__(self, amount: int = 10, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.amount = amount

    def process(self, item: int) -> int:
        """Return ``item + amount``."""
        return item + self.amount
