"""The file migration, for real: dispatcher, S3 uploaders, API uploaders, verifier.

    dispatcher (claims rows) -> S3 Uploader x3 -> API Uploader x2 -> Verifier x1

Files listed in a database are copied between buckets, their metadata
registered with a REST API, and both checked; every step is written to the
database, so a rerun after Ctrl-C or ``kill -9`` does only what is left. With
no options everything is embedded (SQLite, a folder per bucket, the API
served in-process) under ``--root``; ``--db postgresql://...``,
``--s3-endpoint`` and ``--api-url`` point it at real parts. The tool lives in
the package (``src/pipeline/_examples/migration.py``) so that ``python -m
pipeline data`` runs it installed; this script is its entry point from a
checkout. ``--help`` lists the options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python examples/x.py): use the checkout's library
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline._examples.migration import main as migrate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the migration; print the verification and pipeline reports; return the exit code."""
    return migrate(argv, prog="run_data_example.py")


if __name__ == "__main__":
    raise SystemExit(main())
