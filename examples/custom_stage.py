"""An image pipeline built from your own stages: load, filter, compute features, save.

    paths -> LoadImage x2 (threads, dead letters for unreadable files)
          -> Enhance (a filter chain)
          -> ComputeFeatures x N (worker processes: edges, colours, dHash in pure Python)
          -> SaveResults x1 (thumbnails/*.jpg and features.csv, opened in on_start)

The stages, the items passed between them and the pipeline are in
``src/pipeline/_examples/images.py``: copy that file to start a pipeline of
your own. The code lives in the package so that ``python -m pipeline
custom`` runs it from an installed copy too, where this folder is not; this
script is its entry point from a checkout.

Needs Pillow (``pip install 'threaded-pipeline[examples]'``; without it the
script says so and exits with code 2). Run it with ``./run_custom_example.py``,
``python examples/custom_stage.py`` or ``python -m pipeline custom``; ``--help``
lists the options. Without ``--input DIR`` it generates sample images, one
of them truncated, into the output folder (by default a new temporary one,
kept and named in the output).

A script that runs a stage on worker processes (``executor="process"``)
keeps its entry point under ``if __name__ == "__main__":``: each worker
process imports the main module again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python examples/x.py): use the checkout's library
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline._examples import run_images


def main(argv: Sequence[str] | None = None) -> int:
    """Run the image pipeline; print where the results went and the report; return the exit code."""
    return run_images(argv, prog="run_custom_example.py")


if __name__ == "__main__":
    raise SystemExit(main())
