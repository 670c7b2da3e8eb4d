"""Examples that ship inside the package, so that ``python -m pipeline custom`` runs installed.

Not public API: nothing here is exported from :mod:`pipeline`. The image
pipeline is :mod:`pipeline._examples.images` (its stages are the template to
copy); ``examples/custom_stage.py`` in the repository is its entry point.
This module imports no third-party code: Pillow is imported only by
:func:`run_images`, which says what to install when it is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["PILLOW_HINT", "run_images"]

PILLOW_HINT = (
    "the image example needs Pillow, which is not installed: "
    "pip install 'threaded-pipeline[examples]' (or pip install pillow)"
)
"""What the example prints, with exit code 2, when Pillow cannot be imported."""

EXIT_USAGE = 2


def run_images(argv: Sequence[str] | None = None, *, prog: str) -> int:
    """Run the image pipeline with ``argv``; return its exit code (2 if Pillow is missing)."""
    try:
        from .images import main  # noqa: PLC0415 (Pillow on demand)
    except ImportError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "PIL":
            raise
        print(PILLOW_HINT, file=sys.stderr)  # noqa: T201 (a command-line message)
        return EXIT_USAGE
    return main(argv, prog=prog)
