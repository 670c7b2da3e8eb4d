"""TypeVar with a default (PEP 696) on every supported Python.

Type checkers read ``typing_extensions``; at run time the standard library's
``TypeVar`` takes ``default=`` from 3.13 on, ``typing_extensions`` provides it
before, and when even that is missing (a bare checkout run with a bare
Python) the default is dropped: it only matters to type checkers.
"""

from __future__ import annotations

import sys
import typing
from typing import TYPE_CHECKING, Any

__all__ = ["TypeVar"]

if TYPE_CHECKING:
    from typing_extensions import TypeVar
elif sys.version_info >= (3, 13):
    TypeVar = typing.TypeVar
else:
    try:
        from typing_extensions import TypeVar
    except ImportError:  # pragma: no cover (typing_extensions is a dependency)

        def TypeVar(name: str, *constraints: Any, default: Any = None, **kwargs: Any) -> Any:  # noqa: N802
            return typing.TypeVar(name, *constraints, **kwargs)
