#!/usr/bin/env python3
"""Run the image-pipeline example (your own stages, worker processes) from a checkout."""

import sys
from pathlib import Path

root = Path(__file__).resolve().parent
sys.path[:0] = [str(root / "src"), str(root)]

from examples.custom_stage import main  # noqa: E402 (after the path is set)

if __name__ == "__main__":
    raise SystemExit(main())
