"""Live progress: a plain line per stage with its marks, a total with an ETA, rich on a terminal."""

from __future__ import annotations

import io
import logging
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import Pipeline, Progress
from pipeline._cli import main
from tests.helpers import WAIT

ROOT = Path(__file__).resolve().parent.parent


def slow(x: int) -> int:
    time.sleep(0.01)
    return x


def test_plain_progress_has_a_line_per_stage_the_marks_and_a_total_with_an_eta() -> None:
    out = io.StringIO()
    Pipeline[int]().map(abs, name="fast").map(slow, name="slow", maxsize=1).map(
        abs, name="after"
    ).run(range(40), observers=[Progress(0.05, stream=out, rich=False)])
    lines = out.getvalue().splitlines()
    ticks = [line for line in lines if line.startswith("progress: ") and "items" in line]
    assert len(ticks) >= 3  # a 0.4 s run, a look every 0.05 s, and the last one
    assert ticks[-1].startswith("progress: 40/40 items (100%)")
    assert ticks[-1].endswith("- done")
    assert any(", ETA " in tick for tick in ticks[:-1])
    per_stage = [line.split()[1] for line in lines if "items" not in line]
    assert set(per_stage) == {"fast", "slow", "after"}
    # fast waits for room in front of slow; after waits for slow's outputs.
    assert any(line.split()[1] == "fast" and line.endswith("[blocked]") for line in lines)
    assert any(line.split()[1] == "after" and line.endswith("[starved]") for line in lines)
    last = lines[-3:]
    assert [line.split()[1:3] for line in last] == [["fast", "40"], ["slow", "40"], ["after", "40"]]


def test_progress_true_writes_to_stderr_and_goes_through_logging_when_it_is_set_up(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    Pipeline[int]().map(abs).run(range(5), progress=True)
    assert "progress: 5/5 items (100%)" in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        Pipeline[int]().map(abs).run(range(5), progress=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert messages[0].startswith("progress: 5/5 items (100%)")
    assert messages[1].split()[1:3] == ["abs", "5"]


def test_a_source_without_a_length_gets_no_eta() -> None:
    out = io.StringIO()
    Pipeline[int]().map(slow).run(
        iter(range(10)), observers=[Progress(0.02, stream=out, rich=False)]
    )
    totals = [line for line in out.getvalue().splitlines() if "items in" in line]
    assert totals[-1].startswith("progress: 10 items in ")
    assert not any("ETA" in line for line in totals)


def test_progress_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="'progress' must be True or False, not str"):
        Pipeline[int]().map(abs).run([1], progress="yes")  # type: ignore[arg-type]


def test_the_cli_takes_progress_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--items", "4", "--quiet", "--progress"]) == 0
    captured = capsys.readouterr()
    assert "progress: 4/4 items (100%)" in captured.err
    assert "Success: 4" in captured.out


RICH_SCRIPT = textwrap.dedent(
    """
    import time
    from pipeline import Pipeline, Progress

    def slow(x):
        time.sleep(0.01)
        return x

    Pipeline[int]().map(slow, workers=2, name="resize").run(
        range(60), observers=[Progress(0.05)]
    )
    """
)


def test_on_a_real_terminal_progress_is_a_live_table_drawn_in_place(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    script = tmp_path / "live.py"
    script.write_text(RICH_SCRIPT)
    main_end, child_end = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "30", "TERM": "xterm-256color"}
    child = subprocess.Popen(
        [sys.executable, str(script)], stdin=child_end, stdout=child_end, stderr=child_end,
        cwd=ROOT, env=env, close_fds=True,
    )  # fmt: skip
    os.close(child_end)
    seen = b""
    deadline = time.monotonic() + WAIT * 3
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_end], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main_end, 65536)
            except OSError:  # the terminal closed with the child
                break
            if not chunk:
                break
            seen += chunk
    finally:
        child.wait(WAIT)
        os.close(main_end)
    assert child.returncode == 0, seen.decode(errors="replace")
    text = seen.decode("utf-8", errors="replace")
    assert "\x1b[" in text  # terminal control: the table is redrawn in place
    assert "resize" in text
    assert "60/60 items (100%)" in text
    assert "━" in text or "─" in text  # a rich table's rules
    assert "progress: " not in text  # not the plain lines
