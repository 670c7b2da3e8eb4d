#!/usr/bin/env python3
"""Run the basic demo (``python -m pipeline``) from a checkout, installed or not."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from pipeline._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
