"""The commands' stdout: a reader that leaves early (``| head``) is no failure.

:func:`reader_may_leave` wraps a command's ``main``: when the program
reading its output closes the pipe, the next print raises
``BrokenPipeError``, which becomes exit code 141 (what a shell reports for
a program that SIGPIPE ended) and no traceback.
"""

from __future__ import annotations

import functools
import os
import select
import sys
from collections.abc import Callable
from typing import ParamSpec

__all__ = ["EXIT_READER_LEFT", "reader_may_leave"]

EXIT_READER_LEFT = 141

_P = ParamSpec("_P")


def _stdout_reader_left() -> bool:
    # The write end of a pipe whose reader closed it polls as an error.
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, no fileno, or it is closed
        return False


def reader_may_leave(command: Callable[_P, int]) -> Callable[_P, int]:
    """Make ``command`` exit 141, without a traceback, when its stdout's reader left.

    ``python -m pipeline data | head -3``: ``head`` closes the pipe, and the
    next print raises ``BrokenPipeError``. That is the reader's choice, not
    a failure to report. A ``BrokenPipeError`` from anything but stdout
    propagates as it is.
    """

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            code = command(*args, **kwargs)
            sys.stdout.flush()
        except BrokenPipeError:
            if not _stdout_reader_left():
                raise
            # Point stdout at /dev/null: Python flushes it once more at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_READER_LEFT
        return code

    return run
