"""The command line: ``main(argv)`` in-process, plus subprocess smoke tests."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline._cli import main
from tests.helpers import WAIT

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


def test_trace_writes_the_demo_run_as_a_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.json"
    code, out, _ = _run(["--items", "6", "--quiet", "--trace", str(path)], capsys)
    assert code == 0
    assert "Success: 6" in out
    events = json.loads(path.read_text(encoding="utf-8"))["traceEvents"]
    tracks = sorted(e["args"]["name"] for e in events if e["name"] == "thread_name")
    assert tracks == ["Add Stage-1", "Filter Stage-1", "Multiply Stage-1"]
    first = [e for e in events if e["ph"] == "X" and e["name"].startswith("Multiply")]
    assert sum(e["args"]["size"] for e in first) == 6


def test_a_bad_trace_path_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["--trace", "/no/such/directory/run.json"], capsys)
    assert code == 2
    assert "argument --trace: must be a path in an existing directory" in err


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
        ["--trace", "/no/such/directory/run.json"],
        ["--trace", "."],
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


def _subprocess(argv: list[str], *, timeout: float = WAIT * 3) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the checkout's root; capture its output as text."""
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def test_python_m_pipeline_smoke() -> None:
    done = _subprocess([sys.executable, "-m", "pipeline", "--items", "3"])
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout
    assert "Expected: 3" in done.stdout
    assert "[INFO] Multiply Stage processing item: 1" in done.stderr
    assert "[INFO] Final output: 16" in done.stderr


def test_run_pipeline_script_smoke() -> None:
    script = ROOT / "run_pipeline.py"
    done = _subprocess([sys.executable, str(script), "--items", "3"])
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout
    assert "Expected: 3" in done.stdout
    assert "[INFO] Final output: 16" in done.stderr


# -- bad values, named, exit 2; messages users read ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "99999999999"], "argument --workers: must be at least 1 and at most 1024"),
        (["--workers", "30000"], "argument --workers: must be at least 1 and at most 1024"),
        (["--items", "abc"], "argument --items: expected a whole number, got 'abc'"),
        (["--items", "-3"], "argument --items: must be at least 0, got -3"),
        (["--fail-at", "-5"], "argument --fail-at: must be at least 1, got -5"),
        (["--delay", "inf"], "argument --delay: must be a finite number from 0 to 3600, got inf"),
        (["--delay", "nan"], "argument --delay: must be a finite number from 0 to 3600, got nan"),
        (["--timeout", "1e400"], "argument --timeout: must be a finite number at least 0"),
        (["--timeout", "soon"], "argument --timeout: expected a number of seconds, got 'soon'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert "_int" not in err
    assert "Traceback" not in err
    assert out == ""


def test_a_failure_is_logged_once_and_the_report_counts_the_failing_item(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["--items", "10", "--fail-at", "3"], capsys)
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("[ERROR]")] == [
        "[ERROR] stage 'Multiply Stage' failed on item 3: _DemoError('--fail-at 3')"
    ]
    assert "Failed: 1" in out.splitlines()
    table = out.split("=== STAGES ===")[1].splitlines()
    multiply = next(row for row in table if row.startswith("Multiply Stage"))
    assert multiply.split()[6] == "1"  # its "failed" column
    assert "Error: StageError: stage 'Multiply Stage' failed on item 3" in out


def test_after_a_timeout_the_report_still_expects_the_whole_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--items", "100000", "--delay", "0.001", "--timeout", "0.1", "--quiet"]
    code, out, _ = _run(argv, capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[1] == "Expected: 100000"
    assert lines[2].startswith("Read: ")
    assert "Error: PipelineTimeout: the run's timeout elapsed" in lines


def test_timeout_zero_times_out_at_once_with_no_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--items", "5", "--timeout", "0"], capsys)
    assert code == 1
    assert "Final output" not in err
    assert "Status: timed out" in out


def test_the_installed_command_names_itself_in_its_usage() -> None:
    command = Path(sys.executable).with_name("threaded-pipeline")
    done = _subprocess([str(command), "--help"], timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: threaded-pipeline ")


@pytest.mark.parametrize(
    ("launcher", "argv", "message"),
    [
        ("run_data_example.py", ["--files", "-3"], "argument --files: must be at least 0"),
        ("run_custom_example.py", ["--workers", "0"], "argument --workers: must be at least 1"),
        ("run_custom_example.py", ["--images", "x"], "expected a whole number, got 'x'"),
        ("run_custom_example.py", ["--executor", "fork"], "argument --executor: invalid choice"),
        ("run_custom_example.py", ["--input", "no/such/dir"], "argument --input: not a folder"),
    ],
)
def test_the_examples_refuse_bad_values_naming_the_option(
    launcher: str, argv: list[str], message: str
) -> None:
    done = _subprocess([sys.executable, launcher, *argv])
    assert done.returncode == 2
    assert message in done.stderr
    assert f"usage: {launcher}" in done.stderr


# Runs a launcher as a bare Python would: typing_extensions cannot be imported.
WITHOUT_TYPING_EXTENSIONS = (
    "import runpy, sys; sys.modules['typing_extensions'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize(
    ("launcher", "argv"),
    [
        ("run_pipeline.py", ["--items", "3", "--quiet"]),
        ("run_data_example.py", ["--files", "2", "--quiet"]),
        ("examples/basic.py", []),
    ],
)
def test_the_launchers_run_from_a_checkout_without_typing_extensions(
    launcher: str, argv: list[str], tmp_path: Path
) -> None:
    if launcher == "run_data_example.py":
        argv = [*argv, "--root", str(tmp_path)]  # its embedded database and buckets
    # -S: no site-packages, so neither the installed library nor
    # typing_extensions is there; the launcher finds the checkout's source.
    done = _subprocess([sys.executable, "-S", "-c", WITHOUT_TYPING_EXTENSIONS, launcher, *argv])
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout


def test_the_data_launcher_runs_on_a_python_without_the_library_installed(
    tmp_path: Path,
) -> None:
    # This venv's base Python has not the library: the launcher finds the
    # checkout, and so must the metadata API's process it starts.
    names = ("python3", Path(sys.executable).name)
    found = [Path(sys.base_prefix) / "bin" / name for name in names]
    found = [path for path in found if path.exists()]
    if not found:
        pytest.skip(f"no Python in {sys.base_prefix}/bin")
    base = found[0]
    probe = subprocess.run(
        [str(base), "-c", "import pipeline"], capture_output=True, timeout=60, check=False
    )
    if probe.returncode == 0:
        pytest.skip(f"{base} has the library installed: not a bare Python")
    argv = [str(base), "run_data_example.py", "--files", "2", "--quiet", "--root", str(tmp_path)]
    done = _subprocess(argv)
    assert done.returncode == 0, done.stderr
    assert "Success: 2" in done.stdout


def test_the_custom_example_on_a_bare_python_says_it_needs_pillow() -> None:
    # As above, but the image example needs Pillow, which a bare Python has
    # not: it says what to install and exits 2, with no traceback. (With
    # Pillow and no site-packages, see tests/test_custom_example.py.)
    argv = [sys.executable, "-S", "-c", WITHOUT_TYPING_EXTENSIONS, "run_custom_example.py"]
    done = _subprocess([*argv, "--images", "1", "--quiet"])
    assert done.returncode == 2, done.stderr
    assert "pip install 'threaded-pipeline[examples]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "pipeline", "--items", "20", "--quiet"],
        ["-m", "pipeline", "data", "--files", "3", "--quiet", "--json"],
        ["run_data_example.py", "--files", "3", "--dry-run"],
    ],
)
def test_a_reader_that_leaves_early_ends_the_command_with_141_and_no_traceback(
    argv: list[str], tmp_path: Path
) -> None:
    # As `python -m pipeline | head -0`: the reader is gone before the first print.
    if "data" in argv or "run_data_example.py" in argv:
        argv = [*argv, "--root", str(tmp_path)]
    read, write = os.pipe()
    os.close(read)
    with subprocess.Popen(
        [sys.executable, *argv], stdout=write, stderr=subprocess.PIPE, text=True, cwd=ROOT
    ) as command:
        os.close(write)
        _, err = command.communicate(timeout=120)
    assert command.returncode == 141, err[-2000:]
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


def test_a_broken_pipe_that_is_not_stdout_still_propagates() -> None:
    from pipeline._stdout import reader_may_leave

    @reader_may_leave
    def command() -> int:
        raise BrokenPipeError("a socket of the program's own")

    with pytest.raises(BrokenPipeError, match="socket"):
        command()
