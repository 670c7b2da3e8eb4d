"""Rows, interleaved measurement, the machine header, the table and the JSON.

A scenario measures several *variants* (the library and its baselines) with
:func:`interleave`: round after round, every variant runs once, in an order
that reverses every other round (A B C, C B A, A B C, ...), so a noisy phase
of a shared machine hits every variant alike. Each figure is the median over
the rounds, and each ratio is the median of the per-round ratios of a candidate
and its baseline (:func:`paired_ratio`), so the pair shares its round's noise.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ROOT",
    "Config",
    "Kind",
    "Row",
    "ScenarioResult",
    "compare",
    "format_table",
    "interleave",
    "machine_info",
    "median",
    "paired_ratio",
    "write_json",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``benchmarks/``)."""

Kind = Literal["floor", "expect", "info", "base", "skip", "error"]
"""What a row is: a checked floor, an expectation (shown, never fails ``--check``),
an informational comparison, a baseline's own figure, a skipped or failed row."""


@dataclass(frozen=True, slots=True)
class Config:
    """How the scenarios run: sizes (``quick``) and rounds (``repeat``)."""

    quick: bool = False
    repeat: int = 5


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table.

    ``value`` is the figure in ``unit``. When ``baseline`` is given, ``ratio``
    is ``value / baseline_value`` (for rates: candidate over baseline, so
    higher is better) and the floor applies to the ratio; otherwise the floor
    applies to the value itself.
    """

    scenario: str
    name: str
    value: float | None
    unit: str
    kind: Kind = "info"
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    floor: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def checked(self) -> float | None:
        """The number the floor applies to: the ratio if any, else the value."""
        return self.ratio if self.baseline is not None else self.value

    @property
    def meets_floor(self) -> bool | None:
        """Whether the floor is met; ``None`` for a row without a floor or figure."""
        checked = self.checked
        if self.floor is None or checked is None:
            return None
        return checked >= self.floor if self.higher_is_better else checked <= self.floor

    @property
    def status(self) -> str:
        """PASS/FAIL for floors, met/missed for expectations, else the kind."""
        if self.kind == "error":
            return "ERROR"
        if self.kind == "skip" or self.value is None:
            return "skip"
        met = self.meets_floor
        if self.kind == "floor" and met is not None:
            return "PASS" if met else "FAIL"
        if self.kind == "expect" and met is not None:
            return "met" if met else "missed"
        return self.kind

    @property
    def failed(self) -> bool:
        """Whether this row makes ``--check`` fail."""
        return self.status in {"FAIL", "ERROR"}

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready dict, status included."""
        data = asdict(self)
        data["status"] = self.status
        return data


def compare(
    scenario: str,
    name: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    *,
    ratio: float | None = None,
    kind: Kind = "info",
    floor: float | None = None,
    higher_is_better: bool = True,
    note: str = "",
) -> Row:
    """Build a row comparing ``value`` with a baseline's figure.

    ``ratio`` defaults to ``value / baseline_value``; pass the median of the
    per-round ratios (:func:`paired_ratio`) when there are samples.
    """
    if ratio is None and baseline_value:
        ratio = value / baseline_value
    return Row(
        scenario=scenario,
        name=name,
        value=value,
        unit=unit,
        kind=kind,
        baseline=baseline,
        baseline_value=baseline_value,
        ratio=ratio,
        floor=floor,
        higher_is_better=higher_is_better,
        note=note,
    )


@dataclass(slots=True)
class ScenarioResult:
    """What a scenario hands back: its rows and every raw sample by variant."""

    rows: list[Row] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (which must not be empty)."""
    return float(statistics.median(values))


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """The median of the per-round ratios ``candidate[i] / baseline[i]``.

    Round ``i`` of both ran back to back, so a noisy phase of the machine
    that slows round ``i`` slows both sides of its ratio.
    """
    ratios = [c / b for c, b in zip(candidate, baseline, strict=True) if b]
    return median(ratios) if ratios else math.nan


def interleave(
    variants: Mapping[str, Callable[[], float]],
    repeat: int,
    *,
    warmups: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Run every variant once per round, ``repeat`` rounds; return the samples.

    Each variant returns its measurement (seconds, a rate, a latency...). The
    order reverses every other round. A full collection runs before each call
    so that no variant pays for another's garbage. ``warmups`` run once, in
    the same order, before the first round and are not measured.
    """
    names = list(variants)
    for name in names:
        warm = (warmups or {}).get(name)
        if warm is not None:
            gc.collect()
            warm()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(repeat):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            samples[name].append(variants[name]())
    return samples


# -- the machine -----------------------------------------------------------------


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Describe the machine and the software under test, for the header and JSON."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "load_average": list(load) if load is not None else None,
        "threaded_pipeline": _version("threaded-pipeline"),
        "pypeln": _version("pypeln"),
        "git": _git_revision(),
    }


def format_header(info: Mapping[str, Any], config: Config) -> str:
    """The lines printed above the table."""
    cpus = f"{info['cpu_count']} CPUs"
    if info["cpus_usable"] is not None and info["cpus_usable"] != info["cpu_count"]:
        cpus += f" ({info['cpus_usable']} usable)"
    gil = "" if info["gil_enabled"] else ", free-threaded"
    load = info["load_average"]
    load_text = "" if load is None else " load " + "/".join(f"{x:.2f}" for x in load)
    sizes = "quick sizes" if config.quick else "full sizes"
    pypeln = f"pypeln {info['pypeln'] or 'not installed'}"
    rounds = (
        f"figures are medians of {config.repeat} interleaved rounds, "
        "ratios medians of the per-round ratios"
    )
    return "\n".join(
        [
            f"machine: {info['platform']}, {cpus}{load_text}",
            f"python:  {info['python']}{gil}, switch interval {info['switch_interval_ms']:g} ms",
            f"library: threaded-pipeline {info['threaded_pipeline']} (git {info['git']}), {pypeln}",
            f"run:     {sizes}; {rounds}",
        ]
    )


# -- the table -------------------------------------------------------------------


def format_value(value: float | None, unit: str) -> str:
    """Format a figure with its unit, scaled for reading."""
    if value is None:
        return "-"
    if unit == "items/s":
        scaled = f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"
        return f"{scaled} items/s"
    formats = {"s": "{:.3f} s", "ms": "{:.3f} ms", "MB": "{:.1f} MB"}
    return formats.get(unit, "{:.4g} " + unit).format(value)


def format_ratio(ratio: float | None) -> str:
    """Format a ratio with the precision its size deserves."""
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.3f}x"


def format_floor(row: Row) -> str:
    """Format a row's floor: ``>= 0.5x``, ``<= 1.03x``, ``<= 20 MB``..."""
    if row.floor is None:
        return "-"
    sign = ">=" if row.higher_is_better else "<="
    text = (
        f"{sign} {row.floor:g}x" if row.baseline is not None else f"{sign} {row.floor:g} {row.unit}"
    )
    return f"({text})" if row.kind == "expect" else text


def format_table(rows: Sequence[Row]) -> str:
    """Render rows as an aligned text table, one line per row, notes last."""
    headers = ("scenario", "row", "figure", "vs baseline", "ratio", "floor", "status")
    cells: list[tuple[str, ...]] = []
    for row in rows:
        against = "-"
        if row.baseline is not None:
            against = f"{row.baseline} ({format_value(row.baseline_value, row.unit)})"
        cells.append(
            (
                row.scenario,
                row.name,
                format_value(row.value, row.unit),
                against,
                format_ratio(row.ratio),
                format_floor(row),
                row.status,
            )
        )
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    right = {2, 4, 5}

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    previous = None
    for row, cell in zip(rows, cells, strict=True):
        if previous is not None and row.scenario != previous:
            out.append("")
        previous = row.scenario
        out.append(line(cell))
    notes = [f"  {row.scenario} / {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def write_json(
    path: Path,
    info: Mapping[str, Any],
    config: Config,
    results: Mapping[str, ScenarioResult],
    wall_seconds: float,
) -> None:
    """Write the machine, options, rows and raw samples to ``path``."""
    document: dict[str, Any] = {
        "machine": dict(info),
        "options": {"quick": config.quick, "repeat": config.repeat},
        "wall_seconds": wall_seconds,
        "rows": [row.to_json() for result in results.values() for row in result.rows],
        "scenarios": {
            name: {"seconds": result.seconds, "samples": result.samples}
            for name, result in results.items()
        },
    }
    path.write_text(json.dumps(_finite(document), indent=2) + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    # NaN (a stalled or skipped measurement) becomes null: strict JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
