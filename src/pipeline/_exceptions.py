"""The library's exceptions, all in one place.

The tree::

    BaseException
     ├── Exception
     │    ├── ShutDown                 queue.ShutDown on 3.13+, our own class before
     │    └── PipelineError            base of every error the library raises itself
     │         ├── ProducerError       producer handles misused (late registration, put after close)
     │         ├── PipelineStateError  a pipeline used in a state that forbids it
     │         ├── StageError          a stage, a hook or the source raised (fail-fast)
     │         ├── WorkerDied          a stage's worker process died (an item's error)
     │         └── PipelineCancelled   a run ended by cancel() or by its timeout
     │              └── PipelineTimeout   run(timeout=...) elapsed (also a TimeoutError)
     └── KeyboardInterrupt
          └── PipelineInterrupted      Ctrl-C stopped a run (carries the report)

The standard library's ``queue.Empty`` and ``queue.Full`` are raised unchanged
by :class:`~pipeline.SafeQueue`, so code written for ``queue.Queue`` keeps its
``except`` clauses. Bad arguments raise the built-in ``ValueError`` or
``TypeError`` naming the parameter, at the call that received them.

``StageError`` versus ``PipelineCancelled``: the first means the pipeline broke
from the inside (user code raised), the second that it was stopped from the
outside (``cancel()``, a timeout). ``PipelineInterrupted`` is Ctrl-C: it is a
``KeyboardInterrupt``, so ``except KeyboardInterrupt`` still catches it. All
three carry the partial report as ``.report``.

Nothing here calls a user object's ``__repr__`` or ``__str__`` without a
guard: a message names an item or an exception through :func:`_short_repr`,
which never raises, so a hostile object cannot turn one error into another.
"""

from __future__ import annotations

import queue
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._report import PipelineReport

__all__ = [
    "PipelineCancelled",
    "PipelineError",
    "PipelineInterrupted",
    "PipelineStateError",
    "PipelineTimeout",
    "ProducerError",
    "ShutDown",
    "StageError",
    "WorkerDied",
]

if sys.version_info >= (3, 13):
    ShutDown = queue.ShutDown
else:

    class ShutDown(Exception):  # noqa: N818 (the standard library's name)
        """Raised by put and get on a queue that was shut down.

        This is ``queue.ShutDown`` on Python 3.13 and newer; on older Pythons it
        is the library's own class with the same meaning, so ``except
        pipeline.ShutDown`` works on every supported version.
        """


class PipelineError(Exception):
    """Base class of every error the library raises itself.

    >>> issubclass(StageError, PipelineError)
    True
    """


class ProducerError(PipelineError):
    """A producer handle was misused.

    Raised by :meth:`SafeQueue.producer` on a queue that is already shut down
    (registering too late would otherwise miscount the end of stream), and by
    :meth:`Producer.put` on a handle that was closed.
    """


class PipelineStateError(PipelineError):
    """A pipeline was used in a state that forbids the call.

    Raised when a stage is added to a pipeline that has already started, or
    when a closed pipeline is run.

    >>> from pipeline import Pipeline
    >>> p = Pipeline[int]().map(abs)
    >>> p.run([-1]).outputs
    [1]
    >>> p.map(str)
    Traceback (most recent call last):
    ...
    pipeline.PipelineStateError: stages cannot be added once the pipeline has started
    """


_REPR_LIMIT = 200


def _short_repr(value: object, limit: int = _REPR_LIMIT) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters; never raises.

    A ``__repr__`` that raises anything (``BaseException`` included), returns
    a ``str`` subclass with hostile methods, or loops through other hostile
    objects gives a placeholder that names the type instead.
    """
    try:
        text = str.__str__(repr(value))  # a plain str, whatever repr() returned
        if str.__len__(text) > limit:
            text = str.__getitem__(text, slice(0, limit - 3)) + "..."
        return text
    except BaseException as exc:  # noqa: BLE001 (a broken __repr__ must not hide the real error)
        return f"<{_type_name(value)} object; repr() raised {_type_name(exc)}>"


def _short_str(value: BaseException) -> str:
    """Return ``"Type: message"`` for an exception, as a traceback ends; never raises."""
    try:
        text = str.__str__(str(value))
    except BaseException:  # noqa: BLE001 (same as _short_repr)
        return f"{_type_name(value)}: <str() raised>"
    if str.__len__(text) > _REPR_LIMIT:
        text = str.__getitem__(text, slice(0, _REPR_LIMIT - 3)) + "..."
    name = _type_name(value)
    return f"{name}: {text}" if text else name


def _type_name(value: object) -> str:
    try:
        name = type(value).__qualname__
        return name if type(name) is str else "object"
    except BaseException:  # noqa: BLE001 (a metaclass can make even this raise)
        return "object"


class StageError(PipelineError):
    """A stage's ``process()``, one of its hooks, or the source raised.

    Under the default fail-fast policy the first such exception cancels the
    pipeline, and ``run()`` / ``stream()`` raise this error. The original
    exception object is attached unchanged as ``__cause__`` (with its
    traceback), so ``raise ... from`` chains print both.

    >>> from pipeline import Pipeline
    >>> try:
    ...     Pipeline[int]().map(lambda x: 1 // x, name="invert").run([2, 0, 1])
    ... except StageError as error:
    ...     print(error.stage, error.item, repr(error.__cause__), error.report.status)
    invert 0 ZeroDivisionError('integer division or modulo by zero') failed

    Attributes:
        stage: the name of the stage that raised (``"source"`` for the source
            iterator).
        item: the item being processed, or ``None`` when there was none (a hook
            or the source raised); ``has_item`` tells the two apart, since
            ``None`` is ordinary data.
        has_item: whether ``item`` is meaningful.
        where: ``"process"``, ``"on_start"``, ``"on_stop"``, ``"source"``, or
            ``"copy"`` (``copy.copy`` of the stage, made for each worker after
            the first, raised).
        report: the partial :class:`~pipeline.PipelineReport` of the run.
    """

    def __init__(
        self,
        stage: str,
        cause: BaseException,
        *,
        item: object = None,
        has_item: bool = False,
        where: str = "process",
    ) -> None:
        self.stage = stage
        self.item = item
        self.has_item = has_item
        self.where = where
        self.report: PipelineReport | None = None
        reason = _short_repr(cause)
        if has_item:
            message = f"stage {stage!r} failed on item {_short_repr(item)}: {reason}"
        elif where == "source":
            message = f"the source iterator raised {reason}"
        elif where == "copy":
            message = f"stage {stage!r} could not be copied for another worker: {reason}"
        else:
            message = f"stage {stage!r} failed in {where}(): {reason}"
        super().__init__(message)
        self.__cause__ = cause


class WorkerDied(PipelineError):  # noqa: N818 (reads as what happened)
    """A worker process of an ``executor="process"`` stage died.

    It exited (``os._exit``), was killed by a signal (the OOM killer, a
    segfault in an extension), or could not start. The item it was
    processing gets this error under the stage's policy: fail-fast raises a
    :class:`StageError` with it as ``__cause__``, ``on_error="skip"`` makes
    the item a dead letter, and a :class:`~pipeline.Retry` tries it again in
    a fresh process. The other items of the batch are processed again, in a
    fresh process, one at a time.
    """


class PipelineCancelled(PipelineError):  # noqa: N818 (reads as the state it reports)
    """A run was stopped from the outside: ``cancel()``, ``close()`` or its timeout.

    Every worker finished the item in hand and ran ``on_stop`` before this was
    raised.

    >>> import threading
    >>> from pipeline import Pipeline
    >>> pipeline = Pipeline[int]().map(abs)
    >>> timer = threading.Timer(0.05, pipeline.cancel)
    >>> timer.start()
    >>> try:
    ...     pipeline.run(iter(int, 1))  # an endless source of zeros
    ... except PipelineCancelled as error:
    ...     print(error.report.status, error.report.balanced)
    cancelled True
    >>> timer.join()

    Attributes:
        report: the partial :class:`~pipeline.PipelineReport` of the run; its
            ``not_processed`` count says how many items were left unfinished.
    """

    def __init__(self, message: str = "the pipeline was cancelled") -> None:
        super().__init__(message)
        self.report: PipelineReport | None = None


class PipelineTimeout(PipelineCancelled, TimeoutError):  # noqa: N818
    """``run(timeout=...)`` or ``stream(timeout=...)`` ran out of time.

    It is also a built-in ``TimeoutError``, so either ``except`` clause works.
    The run is cancelled when the time is up: the workers finish the items in
    hand (here the 0.05 s one) and then the error is raised.

    >>> import time
    >>> from pipeline import Pipeline
    >>> try:
    ...     Pipeline[float]().each(time.sleep).run([0.05] * 100, timeout=0.1)
    ... except TimeoutError as error:
    ...     print(type(error).__name__, error.report.status)
    PipelineTimeout timed out
    """


class PipelineInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; it is a ``KeyboardInterrupt``.

    Raised by ``run()``, or by the ``next()`` of a stream, once the run was
    cancelled and its threads joined, so ``except KeyboardInterrupt`` keeps
    working and the partial report is at hand. See the README's "Ctrl-C"
    section for what a first and a second Ctrl-C do.

    Attributes:
        report: the partial :class:`~pipeline.PipelineReport` of the run.
        left_running: the names of threads still inside user code that the
            run stopped waiting for after a second Ctrl-C (empty when every
            thread was joined).
    """

    def __init__(self, message: str = "interrupted by Ctrl-C") -> None:
        super().__init__(message)
        self.report: PipelineReport | None = None
        self.left_running: tuple[str, ...] = ()
