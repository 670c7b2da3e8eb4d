"""Error policies: what a stage does when ``process()`` raises."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from ._validate import MAX_SECONDS, check_int, check_number

__all__ = ["OnError", "Retry"]

OnError = Literal["raise", "skip"]
"""``"raise"`` (fail-fast, the default) or ``"skip"`` (record a dead letter, go on)."""

_ON_ERROR_VALUES = ("raise", "skip")


def check_on_error(on_error: object) -> OnError:
    """Return ``on_error`` if valid, else raise ``ValueError`` naming it."""
    if on_error == "raise":
        return "raise"
    if on_error == "skip":
        return "skip"
    raise ValueError(f"'on_error' must be one of {_ON_ERROR_VALUES}, got {on_error!r}")


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a failing item with exponential backoff and jitter.

    The item is tried up to ``attempts`` times in all. Before try ``n + 1`` the
    worker waits ``min(max_delay, backoff * 2 ** (n - 1))`` seconds, scaled by
    a random factor in ``[1 - jitter, 1 + jitter]``; a cancellation cuts the
    wait short. Only exceptions that are instances of ``on`` are retried; when
    the tries run out (or the exception is not retryable), the stage's
    ``on_error`` policy applies: fail-fast, or a dead letter.

    >>> policy = Retry(attempts=4, backoff=0.1, max_delay=0.3, jitter=0.0)
    >>> [policy.delay(n) for n in (1, 2, 3)]
    [0.1, 0.2, 0.3]

    Raises:
        ValueError: ``attempts < 1``, a negative or non-finite delay,
            ``jitter`` outside ``[0, 1]``, or an empty ``on``.
        TypeError: a non-numeric value, or ``on`` not ``Exception`` types.
    """

    attempts: int = 3
    backoff: float = 0.1
    max_delay: float = 10.0
    jitter: float = 0.1
    on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        check_int("attempts", self.attempts, 1)
        check_number("backoff", self.backoff, minimum=0.0, maximum=MAX_SECONDS)
        check_number("max_delay", self.max_delay, minimum=0.0, maximum=MAX_SECONDS)
        check_number("jitter", self.jitter, minimum=0.0, maximum=1.0)
        on: object = self.on
        if isinstance(on, type):
            on = (on,)
            object.__setattr__(self, "on", on)
        if not isinstance(on, tuple) or not on:
            raise ValueError("'on' must be a non-empty tuple of exception types")
        for kind in on:
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                raise TypeError(f"'on' must hold Exception subclasses, got {kind!r}")

    def retries(self, exception: BaseException) -> bool:
        """Return whether ``exception`` is one this policy retries."""
        return isinstance(exception, self.on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.backoff * 2.0 ** (attempt - 1))
        if self.jitter:
            base *= 1.0 + self.jitter * random.uniform(-1.0, 1.0)
        return max(0.0, base)
