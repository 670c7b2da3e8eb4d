"""``python -m benchmarks``: run the scenarios, print the table, optionally write JSON."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .harness import (
    Config,
    Row,
    ScenarioResult,
    format_header,
    format_table,
    machine_info,
    write_json,
)
from .scenarios import SCENARIOS

__all__ = ["main", "parse_only", "run_scenarios"]


def parse_only(text: str) -> list[str]:
    """Parse ``--only NAME[,NAME]`` into scenario names, in the suite's order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - SCENARIOS.keys())
    if unknown or not names:
        known = ", ".join(SCENARIOS)
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or '(none)'}; choose from {known}"
        )
    return [name for name in SCENARIOS if name in names]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the threaded-pipeline benchmarks against baselines measured in the "
        "same run; print figures, ratios, floors and PASS/FAIL.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=5,
        metavar="N",
        help="interleaved rounds per scenario; the median is reported (default 5)",
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        metavar="NAME[,NAME]",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if any floor is missed"
    )
    return parser


def run_scenarios(
    names: Sequence[str], config: Config, *, progress: bool = True
) -> dict[str, ScenarioResult]:
    """Run the named scenarios in order; a scenario that raises yields an ERROR row."""
    results: dict[str, ScenarioResult] = {}
    for name in names:
        if progress:
            print(f"running {name} ...", end="", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            result = SCENARIOS[name](config)
        except Exception as exc:
            error = Row(
                name, "scenario", None, "", kind="error", note=f"{type(exc).__name__}: {exc}"
            )
            result = ScenarioResult([error])
        result.seconds = time.perf_counter() - started
        results[name] = result
        if progress:
            print(f" {result.seconds:.1f} s", file=sys.stderr, flush=True)
    return results


def _summary(rows: Sequence[Row]) -> str:
    floors = [row for row in rows if row.kind == "floor"]
    missed = sum(row.status == "FAIL" for row in floors)
    errors = sum(row.status == "ERROR" for row in rows)
    text = f"floors: {len(floors) - missed} of {len(floors)} met"
    return text + (f"; {errors} scenario error(s)" if errors else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return 0, or 1 with ``--check`` when a floor is missed."""
    args = build_parser().parse_args(argv)
    config = Config(quick=args.quick, repeat=args.repeat)
    names: list[str] = args.only or list(SCENARIOS)
    info = machine_info()
    print(format_header(info, config), flush=True)
    started = time.perf_counter()
    results = run_scenarios(names, config)
    wall = time.perf_counter() - started
    rows = [row for result in results.values() for row in result.rows]
    print()
    print(format_table(rows))
    failed = [row for row in rows if row.failed]
    timings = ", ".join(f"{name} {result.seconds:.1f} s" for name, result in results.items())
    print(f"\nwall time {wall:.1f} s ({timings})")
    print(_summary(rows))
    if args.json is not None:
        write_json(args.json, info, config, results, wall)
        print(f"wrote {args.json}")
    return 1 if args.check and failed else 0
