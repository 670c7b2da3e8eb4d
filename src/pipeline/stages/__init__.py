"""The stages in the box.

>>> from pipeline import Pipeline
>>> from pipeline.stages import AddStage, FilterStage, MultiplyStage
>>> Pipeline[int]().add(MultiplyStage()).add(AddStage()).add(FilterStage()).run([1, 2]).outputs
[12, 14]
"""

from ._arithmetic import AddStage as AddStage
from ._arithmetic import MultiplyStage as MultiplyStage
from ._functions import EachStage as EachStage
from ._functions import FilterStage as FilterStage
from ._functions import FlatMapStage as FlatMapStage
from ._functions import MapStage as MapStage

__all__ = [
    "AddStage",
    "EachStage",
    "FilterStage",
    "FlatMapStage",
    "MapStage",
    "MultiplyStage",
]
