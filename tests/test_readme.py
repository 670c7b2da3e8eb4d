"""The README's examples run as written and print what the README says they print."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline._cli import main
from tests.helpers import WAIT

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
# A ```python block, and the ```text block right after it, if any: its output.
BLOCKS = re.findall(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```)?", TEXT, flags=re.S)


# Dask's own race as a worker closes (distributed.worker; seen about one run
# in sixty with the machine busy): a heartbeat in flight as the worker shuts
# its connections logs their CommClosedError. The only thing an example may
# leave on stderr, as it is Dask's, not the library's: nothing else passes.
DASK_SHUTDOWN_RACE = re.compile(
    r"^[\d-]+ [\d:,]+ - distributed\.worker - ERROR - "
    r"Failed to communicate with scheduler during heartbeat\.\n"
    r"(?:.*\n)*?distributed\.comm\.core\.CommClosedError: .*\n",
    flags=re.M,
)


def _matches(want: str, got: str) -> bool:
    checker = doctest.OutputChecker()
    return checker.check_output(want, got, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)


def test_readme_has_python_examples_with_their_outputs() -> None:
    assert len(BLOCKS) >= 4
    assert sum(1 for _, output in BLOCKS if output) >= 4


@pytest.mark.parametrize(("code", "output"), BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_prints_what_the_readme_shows(
    code: str, output: str, tmp_path: Path
) -> None:
    # Each example runs as a user runs it: a script of its own, in a fresh
    # interpreter. Run inside the test process, it shared the heap of a
    # thousand tests before it, and a full garbage collection of that heap
    # in a worker thread is CPU time of that thread: it made the first
    # example's 10 ms sleeps read as a CPU-bound stage in CI (3.11; a 0.3 s
    # gc.collect() in a worker reproduces the "busy 1.8 core of 2").
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=WAIT * 5,
        check=False,
        cwd=tmp_path,
    )
    assert (done.returncode, DASK_SHUTDOWN_RACE.sub("", done.stderr)) == (0, "")
    if output:
        assert _matches(output, done.stdout), done.stdout


def test_the_cli_sample_is_what_the_demo_prints(capsys: pytest.CaptureFixture[str]) -> None:
    section = TEXT.split("## Command line", 1)[1]
    sample = re.findall(r"```text\n(.*?)```", section, flags=re.S)[0]
    assert main([]) == 0
    captured = capsys.readouterr()
    assert _matches(sample, captured.err + captured.out), captured.err + captured.out


def test_readme_test_command_is_marked_for_ci() -> None:
    marker = TEXT.index("<!-- test-command")
    command = TEXT[marker:].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command.endswith("python -m pytest")


def test_no_word_of_the_projects_private_history_reaches_users() -> None:
    # "the seed" was the project's name for the documents it grew from; users
    # never saw them. (A random seed, --seed, is another matter.)
    sources = [
        README,
        *sorted((ROOT / "src").rglob("*.py")),
        *sorted((ROOT / "examples").glob("*.py")),
    ]
    found = [
        f"{path.name}:{n}"
        for path in sources
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bthe seed\b|\bseed's\b|\bseed-style\b", line, flags=re.I)
    ]
    assert found == []
