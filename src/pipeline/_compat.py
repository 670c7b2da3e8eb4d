"""TypeVar defaults (PEP 696) on every supported Python, installed or not.

Type checkers read ``typing_extensions``. At run time the standard library's
``TypeVar`` takes ``default=`` from 3.13 on and ``typing_extensions``
provides it before. When even that is missing (a checkout run by a bare
Python 3.11 or 3.12, as the launchers allow), the two generic classes whose
second parameter defaults to the first (``PipelineStage[In, Out=In]`` and
``Pipeline[In, Out=In]``) fill it in themselves through
:func:`fill_defaults`, so ``PipelineStage[int]`` works there too.
"""

from __future__ import annotations

import sys
import typing
from typing import TYPE_CHECKING, Any

__all__ = ["RUNTIME_DEFAULTS", "TypeVar", "fill_defaults"]

RUNTIME_DEFAULTS = True
"""Whether ``TypeVar(default=...)`` works at run time here."""

if TYPE_CHECKING:
    from typing_extensions import TypeVar
elif sys.version_info >= (3, 13):
    TypeVar = typing.TypeVar
else:
    try:
        from typing_extensions import TypeVar
    except ImportError:
        RUNTIME_DEFAULTS = False

        def TypeVar(name: str, *constraints: Any, default: Any = None, **kwargs: Any) -> Any:  # noqa: N802
            return typing.TypeVar(name, *constraints, **kwargs)


def fill_defaults(cls: Any, params: Any) -> Any:
    """The parameters for ``cls[params]``, a missing second one set to the first.

    For the ``__class_getitem__`` of a generic class ``C[In, Out=In]`` where
    TypeVar defaults do not work at run time; a subclass with parameters of
    its own keeps what it was given.
    """
    given = params if isinstance(params, tuple) else (params,)
    if len(given) == 1 and len(getattr(cls, "__parameters__", ())) == 2:
        return (given[0], given[0])
    return params
