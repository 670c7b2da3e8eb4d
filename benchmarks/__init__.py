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
- :mod:`benchmarks.scenarios`: the six scenarios and their floors.
- :mod:`benchmarks.memory_probe`: the memory scenario's subprocess.
- :mod:`benchmarks.cli`: ``main(argv)``.
"""
