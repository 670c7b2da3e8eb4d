"""Argument checks shared by the builder, the queue, the policies and the CLI.

Each raises ``TypeError`` or ``ValueError`` naming the parameter, at the call
that received it, so a bad value never travels into a thread to fail there.
``bool`` is refused where an ``int`` is asked for: ``workers=True`` is a bug.
"""

from __future__ import annotations

import math
import threading

__all__ = ["MAX_SECONDS", "check_int", "check_number", "check_seconds"]

MAX_SECONDS = threading.TIMEOUT_MAX
"""The longest wait the threading primitives accept (about 292 years on Linux)."""


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[minimum, maximum]``, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name!r} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name!r} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name!r} must be at most {maximum}, got {value}")
    return value


def check_number(name: str, value: object, *, minimum: float, maximum: float) -> float:
    """Return ``value`` as a float if it is a finite number in range, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name!r} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and minimum <= value <= maximum):  # NaN fails too
        raise ValueError(f"{name!r} must be a number from {minimum} to {maximum}, got {value!r}")
    return float(value)


def check_seconds(name: str, value: object) -> float | None:
    """Return ``value`` as seconds to wait (``None`` stays ``None``), else raise naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name!r} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise ValueError(
            f"{name!r} must be a finite, non-negative number of seconds, got {value!r}"
        )
    return float(value)
