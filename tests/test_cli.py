"""The command line: ``main(argv)`` in-process, plus subprocess smoke tests."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline._cli import main
from tests.conftest import WAIT

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_pipeline_logger() -> Iterator[None]:
    """Keep one test's logging configuration from leaking into the next."""
    logger = logging.getLogger("pipeline")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_main_runs_the_demo_and_prints_the_seed_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--items", "5"], capsys)
    assert code == 0
    assert out.splitlines()[:5] == [
        "=== VERIFICATION REPORT ===",
        "Expected: 5",
        "Processed: 5",
        "Success: 5",
        "Failed: 0",
    ]
    assert "Status: completed" in out
    assert "Multiply Stage" in out  # the per-stage table


def test_main_logs_seed_style_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--items", "3"], capsys)
    assert code == 0
    lines = err.splitlines()
    for expected in [
        "[INFO] Multiply Stage processing item: 1",
        "[INFO] Add Stage processing item: 2",
        "[INFO] Filter Stage processing item: 12",
        "[INFO] Final output: 12",
        "[INFO] Final output: 14",
        "[INFO] Final output: 16",
    ]:
        assert expected in lines
    assert [line for line in lines if "Final output" in line] == [
        "[INFO] Final output: 12",
        "[INFO] Final output: 14",
        "[INFO] Final output: 16",
    ]
    assert "[INFO]" not in out  # logs go to stderr, the report to stdout


def test_main_defaults_to_ten_items(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--quiet"], capsys)
    assert code == 0
    assert "Expected: 10" in out
    assert "Success: 10" in out


def test_main_with_zero_items_reports_nothing_processed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(["--items", "0", "--quiet"], capsys)
    assert code == 0
    assert "Expected: 0" in out
    assert "Success: 0" in out


def test_main_prints_the_report_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--items", "4", "--json", "--quiet"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["status"] == "completed"
    assert (report["items_read"], report["outputs"], report["failed"]) == (4, 4, 0)
    assert report["balanced"] is True
    assert [s["name"] for s in report["stages"]] == ["Multiply Stage", "Add Stage", "Filter Stage"]


def test_main_applies_workers_queue_size_and_unordered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--items", "50", "--workers", "3", "--queue-size", "2", "--unordered", "--json"]
    code, out, err = _run(argv, capsys)
    assert code == 0
    report = json.loads(out)
    assert [s["workers"] for s in report["stages"]] == [3, 3, 3]
    assert [s["queue_maxsize"] for s in report["stages"]] == [2, 2, 2]
    finals = sorted(int(line.rsplit(" ", 1)[1]) for line in err.splitlines() if "Final" in line)
    assert finals == [2 * i + 10 for i in range(1, 51)]


def test_quiet_prints_no_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--items", "3", "--quiet"], capsys)
    assert code == 0
    assert err == ""
    assert "=== VERIFICATION REPORT ===" in out


def test_log_level_warning_hides_the_info_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["--items", "3", "--log-level", "warning"], capsys)
    assert code == 0
    assert "[INFO]" not in err


def test_log_level_debug_shows_worker_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["--items", "2", "--log-level", "DEBUG"], capsys)
    assert code == 0
    assert "[INFO] Final output: 12" in err
    assert "[DEBUG]" in err


def test_fail_at_exits_1_with_a_stage_error_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--items", "10", "--fail-at", "3"], capsys)
    assert code == 1
    assert "[ERROR] stage 'Multiply Stage' failed on item 3" in err
    assert "--fail-at 3" in err  # the cause
    assert "Status: failed" in out


def test_fail_at_with_json_prints_the_failed_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--items", "10", "--fail-at", "3", "--json", "--quiet"], capsys)
    assert code == 1
    report = json.loads(out)
    assert report["status"] == "failed"
    assert report["balanced"] is True


def test_fail_at_an_item_never_reached_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--items", "3", "--fail-at", "99", "--quiet"], capsys)
    assert code == 0
    assert "Success: 3" in out


def test_timeout_exits_1_and_reports_timed_out(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--items", "100000", "--delay", "0.001", "--timeout", "0.1", "--json", "--quiet"]
    code, out, _ = _run(argv, capsys)
    assert code == 1
    report = json.loads(out)
    assert report["status"] == "timed out"
    assert report["balanced"] is True


def test_help_returns_0_and_describes_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: python -m pipeline")
    assert "Exit codes: 0 success, 1 pipeline error, 2 usage error, 130 interrupted." in " ".join(
        out.split()
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--items", "-1"],
        ["--items", "many"],
        ["--workers", "0"],
        ["--queue-size", "0"],
        ["--delay", "-0.5"],
        ["--delay", "nan"],
        ["--timeout", "-1"],
        ["--fail-at", "x"],
        ["--log-level", "LOUD"],
        ["--quiet", "--log-level", "INFO"],
        ["--bogus"],
        ["extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert "usage: python -m pipeline" in err
    assert out == ""


def test_main_leaves_the_pipeline_logger_as_it_found_it(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("pipeline")
    level, handlers = logger.level, list(logger.handlers)
    assert main(["--items", "1", "--quiet"]) == 0
    assert main(["--items", "1", "--log-level", "DEBUG"]) == 0
    capsys.readouterr()
    assert logger.handlers == handlers
    assert logger.level == level


# -- subprocess smoke tests ------------------------------------------------------------


def test_python_m_pipeline_smoke() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--items", "3"],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout
    assert "Expected: 3" in done.stdout
    assert "[INFO] Multiply Stage processing item: 1" in done.stderr
    assert "[INFO] Final output: 16" in done.stderr


def test_run_pipeline_script_smoke() -> None:
    script = ROOT / "run_pipeline.py"
    if not script.exists():
        pytest.skip("run_pipeline.py is not there yet")
    done = subprocess.run(
        [sys.executable, str(script), "--items", "3"],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout
    assert "Expected: 3" in done.stdout
    assert "[INFO] Final output: 16" in done.stderr
