"""The stages in the box.

- Arithmetic: :class:`MultiplyStage` (x2 by default) and :class:`AddStage`
  (+10 by default), the demo's first two stages.
- Function adapters (what ``Pipeline.map`` and friends build):
  :class:`MapStage`, :class:`FilterStage`, :class:`FlatMapStage`,
  :class:`EachStage`. The demo's third stage is a ``FilterStage`` that
  keeps even numbers.
- The file migration: the dispatcher :func:`claim_files`, and
  :class:`S3Uploader`, :class:`APIUploader`, :class:`Verifier` over a real
  files table, object store and metadata API (see :mod:`pipeline.migration`).

>>> from pipeline import Pipeline
>>> from pipeline.stages import AddStage, FilterStage, MultiplyStage
>>> even = FilterStage(lambda x: x % 2 == 0)
>>> Pipeline[int]().add(MultiplyStage()).add(AddStage(3)).add(even).run([1, 2, 3]).outputs
[]
>>> Pipeline[int]().add(MultiplyStage()).add(AddStage()).add(even).run([1, 2]).outputs
[12, 14]
"""

import typing

from ._arithmetic import AddStage as AddStage
from ._arithmetic import MultiplyStage as MultiplyStage
from ._functions import EachStage as EachStage
from ._functions import FilterStage as FilterStage
from ._functions import FlatMapStage as FlatMapStage
from ._functions import MapStage as MapStage

if typing.TYPE_CHECKING:
    from ._migration import APIUploader as APIUploader
    from ._migration import Failure as Failure
    from ._migration import FileRecord as FileRecord
    from ._migration import InMemoryAPI as InMemoryAPI
    from ._migration import MetadataAPI as MetadataAPI
    from ._migration import S3Uploader as S3Uploader
    from ._migration import VerificationReport as VerificationReport
    from ._migration import Verifier as Verifier
    from ._migration import claim_files as claim_files

# The migration's names are imported when first used: they bring the files
# table, the stores and sqlite3, which a pipeline of other stages never needs.
_MIGRATION = frozenset(
    {
        "APIUploader",
        "Failure",
        "FileRecord",
        "InMemoryAPI",
        "MetadataAPI",
        "S3Uploader",
        "VerificationReport",
        "Verifier",
        "claim_files",
    }
)


def __getattr__(name: str) -> typing.Any:
    """Import the file migration's stages when first asked for."""
    if name not in _MIGRATION:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _migration  # noqa: PLC0415

    value = getattr(_migration, name)
    globals()[name] = value
    return value


__all__ = [
    "APIUploader",
    "AddStage",
    "EachStage",
    "Failure",
    "FileRecord",
    "FilterStage",
    "FlatMapStage",
    "InMemoryAPI",
    "MapStage",
    "MetadataAPI",
    "MultiplyStage",
    "S3Uploader",
    "VerificationReport",
    "Verifier",
    "claim_files",
]
