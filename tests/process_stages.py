"""Stage helpers that pickle, for tests that run stages in worker processes.

Worker processes import this module to unpickle what it defines, so it
imports next to nothing (a test module would bring hypothesis and pytest
into every worker process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Injected(Exception):
    """The fault the tests inject."""


@dataclass(frozen=True)
class Unlucky:
    """``fn``, except that it raises Injected for the values in ``bad``; stateless."""

    bad: frozenset[Any]
    fn: Callable[[Any], Any]

    def __call__(self, x: Any) -> Any:
        if x in self.bad:
            raise Injected(x)
        return self.fn(x)
