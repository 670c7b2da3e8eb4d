"""The benchmark suite: every scenario against its baselines, from one command.

Run ``python -m benchmarks`` from the repository root (``--help`` for the
options). Every figure is compared with baselines measured in the same
process and run, interleaved round by round so a noisy phase of a shared
machine hits the candidate and its baseline alike; each figure is the median
over ``--repeat`` rounds.

Modules:

- :mod:`benchmarks.harness`: rows, interleaved timing, the table and the JSON.
- :mod:`benchmarks.baselines`: the sequential loop, the hand-written
  ``queue.Queue`` + poison-pill pipeline, pypeln, bare threads.
- :mod:`benchmarks.scenarios`: the six scenarios on threads and their
  floors, and ``SCENARIOS``, every scenario by name in the order they run.
- :mod:`benchmarks.processes`: the two on worker processes (``cpu_bound``,
  ``process_cheap``).
- :mod:`benchmarks.cluster`: the two on a Dask cluster (``dask_io``,
  ``dask_cpu``).
- :mod:`benchmarks.observed`: what live progress and the timeline cost.
- :mod:`benchmarks.migration`: the file migration (``s3_copy``,
  ``migration``).
- :mod:`benchmarks.memory_probe`: the memory scenario's subprocess.
- :mod:`benchmarks.cli`: ``main(argv)``.
"""
