"""threaded-pipeline: typed, fast assembly-line concurrency for Python threads.

>>> from pipeline import Pipeline
>>> Pipeline[int]().map(lambda x: x * 2).filter(lambda x: x > 2).run([1, 2, 3]).outputs
[4, 6]

The pieces:

- :class:`SafeQueue`: a bounded, thread-safe queue, a drop-in for
  ``queue.Queue`` plus producer handles, batch operations and statistics.
- :class:`PipelineStage`: subclass it and implement ``process(item)``.
- :class:`Pipeline`: wires stages with bounded queues, runs each in its own
  worker threads, shuts down cleanly and reports what happened to every item.
- :class:`Observer`: receives a run's events, for progress, traces, metrics.
- :class:`Dask`: a stage's ``executor=`` for a Dask cluster (as is a
  ``distributed.Client`` or ``"dask://HOST:PORT"``).
- :mod:`pipeline.stages`: the stages in the box.
"""

from ._dask import Dask as Dask
from ._exceptions import PipelineCancelled as PipelineCancelled
from ._exceptions import PipelineError as PipelineError
from ._exceptions import PipelineInterrupted as PipelineInterrupted
from ._exceptions import PipelineStateError as PipelineStateError
from ._exceptions import PipelineTimeout as PipelineTimeout
from ._exceptions import ProducerError as ProducerError
from ._exceptions import ShutDown as ShutDown
from ._exceptions import StageError as StageError
from ._exceptions import WorkerDied as WorkerDied
from ._interrupt import INTERRUPT_GRACE as INTERRUPT_GRACE
from ._observe import BatchStats as BatchStats
from ._observe import Observer as Observer
from ._observe import RunInfo as RunInfo
from ._observe import StageInfo as StageInfo
from ._observe import StageSnapshot as StageSnapshot
from ._observe import WorkerInfo as WorkerInfo
from ._pipeline import MAX_WORKERS as MAX_WORKERS
from ._pipeline import Pipeline as Pipeline
from ._pipeline import RunResult as RunResult
from ._pipeline import StageOptions as StageOptions
from ._pipeline import Stream as Stream
from ._plot import PlotFile as PlotFile
from ._policy import OnError as OnError
from ._policy import Retry as Retry
from ._progress import Progress as Progress
from ._prometheus import PrometheusMetrics as PrometheusMetrics
from ._report import DeadLetter as DeadLetter
from ._report import ItemTimes as ItemTimes
from ._report import PipelineReport as PipelineReport
from ._report import RunStatus as RunStatus
from ._report import StageReport as StageReport
from ._report import WorkerTimes as WorkerTimes
from ._run import DEFAULT_MAXSIZE as DEFAULT_MAXSIZE
from ._run import DEFAULT_QUEUE_BYTES as DEFAULT_QUEUE_BYTES
from ._run import MIN_DEFAULT_MAXSIZE as MIN_DEFAULT_MAXSIZE
from ._safequeue import Empty as Empty
from ._safequeue import Full as Full
from ._safequeue import Producer as Producer
from ._safequeue import QueueStats as QueueStats
from ._safequeue import SafeQueue as SafeQueue
from ._stage import PipelineStage as PipelineStage
from ._trace import TraceFile as TraceFile
from ._verdict import Verdict as Verdict

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAXSIZE",
    "DEFAULT_QUEUE_BYTES",
    "INTERRUPT_GRACE",
    "MAX_WORKERS",
    "MIN_DEFAULT_MAXSIZE",
    "BatchStats",
    "Dask",
    "DeadLetter",
    "Empty",
    "Full",
    "ItemTimes",
    "Observer",
    "OnError",
    "Pipeline",
    "PipelineCancelled",
    "PipelineError",
    "PipelineInterrupted",
    "PipelineReport",
    "PipelineStage",
    "PipelineStateError",
    "PipelineTimeout",
    "PlotFile",
    "Producer",
    "ProducerError",
    "Progress",
    "PrometheusMetrics",
    "QueueStats",
    "Retry",
    "RunInfo",
    "RunResult",
    "RunStatus",
    "SafeQueue",
    "ShutDown",
    "StageError",
    "StageInfo",
    "StageOptions",
    "StageReport",
    "StageSnapshot",
    "Stream",
    "TraceFile",
    "Verdict",
    "WorkerDied",
    "WorkerInfo",
    "WorkerTimes",
]
