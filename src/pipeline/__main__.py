"""``python -m pipeline``: run the demo (see ``pipeline._cli``)."""

from ._cli import main

raise SystemExit(main())
