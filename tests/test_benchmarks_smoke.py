"""Smoke tests of the benchmark suite: it runs, and reports a figure per row.

No timing is asserted here, never a floor: the machine is shared and noisy.
The floors are checked by ``python -m benchmarks --check``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import cli, cluster, scenarios
from benchmarks.harness import ROOT, Config, Row, ScenarioResult, format_table, interleave
from benchmarks.scenarios import SCENARIOS

# Scenarios that print one skipped row when an optional package is missing.
_NEEDS = {"dask_io": "distributed", "dask_cpu": "distributed"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(120)
def test_quick_run_reports_every_scenario_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--repeat", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["machine"]["cpu_count"] >= 1
    assert document["options"] == {"quick": True, "repeat": 1}
    rows = document["rows"]

    errors = [f"{r['scenario']} / {r['name']}: {r['note']}" for r in rows if r["status"] == "ERROR"]
    assert not errors, "\n".join(errors)
    for name in SCENARIOS:
        assert name in done.stdout
        needs = _NEEDS.get(name)
        if needs is not None and importlib.util.find_spec(needs) is None:
            continue
        numeric = [r for r in rows if r["scenario"] == name and _is_number(r["value"])]
        assert numeric, f"no figure for {name}"
    for row in rows:
        if row["status"] == "skip":
            assert row["note"], row
            continue
        assert _is_number(row["value"]), row
        if row["baseline"] is not None:
            assert _is_number(row["baseline_value"]), row
            assert _is_number(row["ratio"]), row
        if row["floor"] is not None:
            assert row["status"] in {"PASS", "FAIL", "met", "missed"}, row


def test_main_runs_one_scenario_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--only", "start_stop", "--quick", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out
    assert "Pipeline.run([])" in out
    assert "12 bare threads" in out
    assert "throughput" not in out


def _fake_scenario(config: Config) -> ScenarioResult:
    return ScenarioResult(
        [Row("fake", "slow", 2.0, "s", kind="floor", floor=1.0, higher_is_better=False)]
    )


def _broken_scenario(config: Config) -> ScenarioResult:
    raise RuntimeError("boom")


def test_check_turns_a_missed_floor_into_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "SCENARIOS", {"fake": _fake_scenario})
    assert cli.main(["--quick", "--repeat", "1"]) == 0
    assert cli.main(["--quick", "--repeat", "1", "--check"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_scenario_that_raises_becomes_an_error_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "SCENARIOS", {"broken": _broken_scenario})
    assert cli.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out
    assert "RuntimeError: boom" in out


def test_only_takes_known_names_in_suite_order() -> None:
    assert cli.parse_only("memory,throughput") == ["throughput", "memory"]
    with pytest.raises(argparse.ArgumentTypeError, match="nope"):
        cli.parse_only("throughput,nope")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--only", "nope"])


def test_floors_apply_to_the_ratio_or_else_the_value() -> None:
    higher = Row("s", "r", 10.0, "items/s", kind="floor", baseline="b", baseline_value=4.0,
                 ratio=2.5, floor=2.0)  # fmt: skip
    lower = Row("s", "r", 30.0, "MB", kind="floor", floor=20.0, higher_is_better=False)
    expect = Row("s", "r", 1.0, "x", kind="expect", baseline="b", baseline_value=1.0, ratio=1.0,
                 floor=15.0)  # fmt: skip
    skipped = Row("s", "r", None, "items/s", kind="skip", note="not installed")
    assert (higher.status, lower.status, expect.status, skipped.status) == (
        "PASS",
        "FAIL",
        "missed",
        "skip",
    )
    assert lower.failed
    assert not expect.failed
    table = format_table([higher, lower, expect, skipped])
    assert ">= 2x" in table
    assert "<= 20 MB" in table
    assert "(>= 15x)" in table
    assert "not installed" in table


def test_interleave_reverses_the_order_every_other_round() -> None:
    calls: list[str] = []

    def variant(name: str) -> float:
        calls.append(name)
        return float(len(calls))

    samples = interleave({"a": lambda: variant("a"), "b": lambda: variant("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert samples == {"a": [1.0, 4.0, 5.0], "b": [2.0, 3.0, 6.0]}


@pytest.mark.parametrize("scenario", [cluster.dask_io, cluster.dask_cpu])
def test_dask_scenarios_without_distributed_print_one_skipped_row(
    monkeypatch: pytest.MonkeyPatch, scenario: Callable[[Config], ScenarioResult]
) -> None:
    monkeypatch.setattr(cluster, "load_distributed", lambda: None)
    result = scenario(Config(quick=True, repeat=1))
    assert [(row.status, row.note) for row in result.rows] == [
        ("skip", "distributed is not installed (pip install .[dask])")
    ]
    assert "distributed is not installed" in format_table(result.rows)


def test_throughput_without_pypeln_skips_its_rows_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scenarios, "load_pypeln", lambda: None)
    result = scenarios.throughput(Config(quick=True, repeat=1))
    skipped = [row for row in result.rows if row.status == "skip"]
    assert [row.note for row in skipped] == ["pypeln not installed (pip install .[bench])"]
    assert not any("pypeln" in row.name for row in result.rows if row.status != "skip")
    assert all(row.value is not None and row.value > 0 for row in result.rows if row not in skipped)
