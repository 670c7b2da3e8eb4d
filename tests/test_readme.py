"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert capsys.readouterr().err == ""


def test_readme_test_command_is_marked_for_ci() -> None:
    text = README.read_text(encoding="utf-8")
    marker = text.index("<!-- test-command")
    command = text[marker:].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command.endswith("python -m pytest")
