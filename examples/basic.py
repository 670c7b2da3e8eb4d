"""The library in ten lines: three stages, each in its own worker threads.

Run it with ``python examples/basic.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python examples/x.py): use the checkout's library
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline import Pipeline
from pipeline.stages import AddStage, FilterStage, MultiplyStage


def main() -> int:
    """Push 1..10 through Multiply, Add and Filter; print outputs and report."""
    pipeline = (
        Pipeline[int]()
        .add(MultiplyStage(), workers=2)  # x * 2, in two threads, order kept
        .add(AddStage())  # x + 10
        .add(FilterStage(lambda x: x % 2 == 0))  # keep even numbers
    )
    result = pipeline.run(range(1, 11))
    print(result.outputs)
    print(result.report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
