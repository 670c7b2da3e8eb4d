#!/usr/bin/env python3
"""Run the seed's file-migration example from a checkout, installed or not."""

import sys
from pathlib import Path

root = Path(__file__).resolve().parent
sys.path[:0] = [str(root / "src"), str(root)]

from examples.data_migration import main  # noqa: E402 (after the path is set)

if __name__ == "__main__":
    raise SystemExit(main())
