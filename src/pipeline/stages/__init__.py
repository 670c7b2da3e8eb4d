"""The stages in the box.

- Arithmetic: :class:`MultiplyStage` (x2 by default) and :class:`AddStage`
  (+10 by default), the demo's first two stages.
- Function adapters (what ``Pipeline.map`` and friends build):
  :class:`MapStage`, :class:`FilterStage`, :class:`FlatMapStage`,
  :class:`EachStage`. The demo's third stage is a ``FilterStage`` that
  keeps even numbers.
- The file migration: :class:`FileRecord`, :class:`S3Uploader`,
  :class:`APIUploader`, :class:`Verifier` (simulated I/O unless given a
  callable that does it for real).

>>> from pipeline import Pipeline
>>> from pipeline.stages import AddStage, FilterStage, MultiplyStage
>>> even = FilterStage(lambda x: x % 2 == 0)
>>> Pipeline[int]().add(MultiplyStage()).add(AddStage(3)).add(even).run([1, 2, 3]).outputs
[]
>>> Pipeline[int]().add(MultiplyStage()).add(AddStage()).add(even).run([1, 2]).outputs
[12, 14]
"""

from ._arithmetic import AddStage as AddStage
from ._arithmetic import MultiplyStage as MultiplyStage
from ._functions import EachStage as EachStage
from ._functions import FilterStage as FilterStage
from ._functions import FlatMapStage as FlatMapStage
from ._functions import MapStage as MapStage
from ._migration import APIUploader as APIUploader
from ._migration import FileRecord as FileRecord
from ._migration import S3Uploader as S3Uploader
from ._migration import VerificationReport as VerificationReport
from ._migration import Verifier as Verifier

__all__ = [
    "APIUploader",
    "AddStage",
    "EachStage",
    "FileRecord",
    "FilterStage",
    "FlatMapStage",
    "MapStage",
    "MultiplyStage",
    "S3Uploader",
    "VerificationReport",
    "Verifier",
]
