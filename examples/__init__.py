"""Runnable examples; each module has a ``main(argv=None) -> int``."""
