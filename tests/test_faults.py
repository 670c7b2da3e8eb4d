"""The randomized fault-injection harness (tests/faults.py) as tests.

A quick slice runs in the default suite: fixed seeds, so a failure replays
with ``python -m tests.faults --seed N``, plus fresh ones each run. The long
soak runs under ``-m slow``.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests import faults

FIXED = range(1, 61)
FRESH = random.Random().sample(range(10**6, 10**9), 20)


@pytest.mark.parametrize("seed", [*FIXED, *FRESH])
def test_a_random_pipeline_keeps_every_promise(seed: int) -> None:
    faults.run_trial(seed)


def test_the_harness_covers_every_outcome() -> None:
    # The configurations drawn must reach each way a run can end, or the
    # slice above tests less than it seems to.
    seen = {faults.run_trial(seed).outcome for seed in range(1000, 1120)}
    assert {"completed", "failed", "cancelled", "timed out", "closed", "interrupted"} <= seen


def test_the_fixed_seeds_run_process_stages() -> None:
    # Worker processes have their own ways to end (a busy child is
    # terminated, runs no on_stop): some fixed seeds must take them there.
    drawn = [faults.draw(seed) for seed in FIXED]
    process = [s for cfg in drawn for s in cfg.stages if s.executor == "process"]
    assert len(process) >= 5, len(process)
    assert {"on_start", "process"} <= {s.stall for s in process}


@pytest.mark.slow
@pytest.mark.timeout(int(os.environ.get("FAULT_SOAK_SECONDS", "180")) + 120)
def test_random_pipelines_for_minutes_keep_every_promise() -> None:
    seconds = float(os.environ.get("FAULT_SOAK_SECONDS", "180"))
    started = time.monotonic()
    ran = faults.soak(seconds, random.randrange(10**9), quiet=True)
    print(f"{ran} configurations in {time.monotonic() - started:.0f} s")
    assert ran > 0
