"""The memory scenario's subprocess: stream items of 1 KB, print the peak RSS growth.

``python -m benchmarks.memory_probe --items N [--size BYTES] [--mode pipeline|plain]``
prints one JSON object. It runs in a process of its own so that the parent's
allocations do not pollute the figure. The baseline is the resident set after
the imports; the peak is the kernel's high-water mark (``VmHWM``), reset to the
current RSS first by writing ``5`` to ``/proc/self/clear_refs``. Where that is
refused, a thread samples ``VmRSS`` every 2 ms instead.

Modes: ``pipeline`` streams the items through three stages with
``Pipeline.stream()``; ``plain`` calls the same three functions in a loop,
which shows what the generator and the interpreter cost by themselves.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline import Pipeline

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def read_status_kb() -> dict[str, int]:
    """Return ``VmRSS`` and ``VmHWM`` from ``/proc/self/status``, in kB."""
    found: dict[str, int] = {}
    for line in STATUS.read_text(encoding="ascii").splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            found[key] = int(rest.split()[0])
    return found


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS; return whether the kernel allowed it."""
    try:
        CLEAR_REFS.write_text("5", encoding="ascii")
    except OSError:
        return False
    status = read_status_kb()
    return status["VmHWM"] <= status["VmRSS"] + 64


class RssSampler:
    """Sample ``VmRSS`` from a thread every ``interval`` seconds; keep the maximum."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_kb = read_status_kb()["VmRSS"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, read_status_kb()["VmRSS"])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, read_status_kb()["VmRSS"])


def blobs(count: int, size: int) -> Iterator[bytes]:
    """Yield ``count`` distinct bytes objects of ``size`` bytes, made on demand."""
    # `size` is a variable, so the compiler cannot fold b"x" * size into one
    # shared constant: every item is a fresh object.
    for _ in range(count):
        yield b"x" * size


def same(blob: bytes) -> bytes:
    """An idle stage."""
    return blob


def nonempty(blob: bytes) -> bool:
    """Keep every item (they are never empty)."""
    return len(blob) > 0


def consume_pipeline(count: int, size: int) -> int:
    """Stream the blobs through three stages; return how many came out."""
    seen = 0
    pipeline = Pipeline[bytes]().map(same).map(same).filter(nonempty)
    with pipeline.stream(blobs(count, size)) as outputs:
        for _ in outputs:
            seen += 1
    return seen


def consume_plain(count: int, size: int) -> int:
    """Call the same three functions in a loop; return how many passed."""
    seen = 0
    for blob in blobs(count, size):
        if nonempty(same(same(blob))):
            seen += 1
    return seen


def measure(count: int, size: int, mode: str) -> dict[str, object]:
    """Run one mode and return the figures (sizes in MiB)."""
    if not STATUS.exists():
        return {"error": "/proc/self/status is not available on this platform"}
    consume = consume_pipeline if mode == "pipeline" else consume_plain
    gc.collect()
    baseline_kb = read_status_kb()["VmRSS"]
    method = "VmHWM after clear_refs" if reset_peak() else "VmRSS sampled every 2 ms"
    started = time.perf_counter()
    if method.startswith("VmHWM"):
        seen = consume(count, size)
        peak_kb = read_status_kb()["VmHWM"]
    else:
        with RssSampler() as sampler:
            seen = consume(count, size)
        peak_kb = sampler.peak_kb
    seconds = time.perf_counter() - started
    if seen != count:
        return {"error": f"{seen} items came out of {count}"}
    return {
        "mode": mode,
        "items": count,
        "item_bytes": size,
        "baseline_mb": baseline_kb / 1024,
        "peak_mb": peak_kb / 1024,
        "growth_mb": (peak_kb - baseline_kb) / 1024,
        "seconds": seconds,
        "method": method,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, measure, print one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_probe")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--mode", choices=["pipeline", "plain"], default="pipeline")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.items, args.size, args.mode)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
