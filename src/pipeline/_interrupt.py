"""Ctrl-C while a run holds the main thread: cancel the run, raise at a safe point.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be
when SIGINT arrives. Inside ``logging`` on Python 3.11 and 3.12 that can leave
a handler's lock held for ever, and every worker that logs then blocks on it:
the run can never be joined. So while ``run()`` or an open ``stream()`` holds
the main thread, the library handles SIGINT itself, as trio does:

- The first Ctrl-C cancels the run; nothing is raised where the signal
  landed. The run's workers finish the items in hand and run ``on_stop``,
  and ``run()`` (or the stream's next ``next()``) raises
  :class:`~pipeline.PipelineInterrupted`, a ``KeyboardInterrupt``, once every
  thread has been joined.
- Inside the body of a ``for`` loop over a stream, the first Ctrl-C likewise
  only cancels; the body runs to its end and the loop's next ``next()``
  raises. A body that does not come back to the loop is interrupted by a
  second Ctrl-C, which raises ``KeyboardInterrupt`` in the body at once, as
  Python would; unless it lands in a gc callback or a ``__del__``, where
  Python would print and drop it (see :func:`dropped_if_raised`).
- A second Ctrl-C while the library waits for the workers stops the wait
  from being open-ended: workers still inside user code get
  :data:`INTERRUPT_GRACE` seconds more, then the run raises anyway, naming
  the threads it left behind (daemon threads: they end when that code
  returns).

The handler is installed only from the main thread, only while SIGINT has
Python's default handler (a program's own handler is left alone), and only
for as long as some run needs it. It takes no lock and touches no queue:
it counts the signal on each run and, the first time, starts the thread that
cancels that run (see ``_Run.interrupted``); the main thread may be holding any
lock at that moment.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from types import FrameType
from typing import Protocol

__all__ = [
    "INTERRUPT_GRACE",
    "Interruptible",
    "delivered",
    "dropped_if_raised",
    "guard",
    "in_library",
    "release",
]

INTERRUPT_GRACE = 2.0
"""Seconds a run still waits for its workers after a second Ctrl-C."""


_LIBRARY = os.path.dirname(os.path.abspath(__file__))
_STANDARD_LIBRARY = os.path.dirname(os.path.abspath(threading.__file__))


def in_library(frame: FrameType | None) -> bool:
    """Whether the main thread, at ``frame``, is inside this library's code.

    The innermost frame that is not the standard library's decides: the
    library waits inside ``threading``, and user code calls ``logging`` or
    ``time``, so those frames say nothing. Nor does generated code
    (``<string>``: the ``__init__`` of a dataclass the library builds), nor
    a frozen module's. Read from the stack when a signal comes, so the hot
    path writes nothing for it.
    """
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_LIBRARY):
            return True
        if not path.startswith((_STANDARD_LIBRARY, "<")):
            return False
        frame = frame.f_back
    return False


def dropped_if_raised(frame: FrameType | None) -> bool:
    """Whether an exception raised at ``frame`` would be printed and dropped.

    So it is inside a garbage-collector callback (``gc.callbacks``; Dask's
    scheduler installs one) or a ``__del__``: Python runs those wherever the
    collector or a finaliser happens to run, and reports an exception that
    leaves them as "Exception ignored" without raising it. A second Ctrl-C
    that lands there is not raised: the run is cancelled already, and the
    next safe point raises :class:`~pipeline.PipelineInterrupted`.
    """
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class Interruptible(Protocol):
    """What the handler needs from a run."""

    def interrupted(self) -> bool:
        """Count one SIGINT; return whether it is not the first. Takes no lock."""


class _Router:
    """The process's one SIGINT handler while runs hold the main thread."""

    def __init__(self) -> None:
        # Changed by the main thread (or, for a stream closed from another
        # thread, by that thread) and read by the handler, which runs in the
        # main thread between two of its bytecodes: list operations are
        # single C calls, so the handler never sees one half done.
        self.runs: list[Interruptible] = []
        # A SIGINT was taken and no KeyboardInterrupt has been raised for it yet.
        self.pending = False
        # The one handler object installed: each `self.handle` is a new bound
        # method, which `is` would never match.
        self.handler = self.handle

    def guard(self, run: Interruptible) -> bool:
        """Route SIGINT to ``run`` while it holds the main thread; False if it cannot."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGINT)
        if current is not self.handler:
            if current is not signal.default_int_handler:
                return False  # the program's own handler, or SIGINT ignored: keep it
            signal.signal(signal.SIGINT, self.handler)
        self.runs.append(run)
        return True

    def release(self, run: Interruptible) -> None:
        """Stop routing SIGINT to ``run``; restore the default handler after the last."""
        if run in self.runs:
            self.runs.remove(run)
        if (
            not self.runs
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is self.handler
        ):
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        runs = list(self.runs)
        if not runs:  # left installed by a stream closed from another thread
            signal.default_int_handler(signum, frame)
        self.pending = True
        repeated = False
        for run in runs:
            repeated = run.interrupted() or repeated
        if repeated and not in_library(frame) and not dropped_if_raised(frame):
            # A second Ctrl-C while the main thread runs user code (the body
            # of a loop over a stream that did not come back): interrupt it.
            self.pending = False
            raise KeyboardInterrupt

    def delivered(self) -> bool:
        """Note that a KeyboardInterrupt is being raised; return whether one was pending."""
        pending, self.pending = self.pending, False
        return pending


_router = _Router()
guard = _router.guard
release = _router.release
delivered = _router.delivered
