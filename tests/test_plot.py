"""The picture of a run: a PNG of the size asked for, with something drawn on it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline import Pipeline, PlotFile
from pipeline._cli import main

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


def slow(x: int) -> int:
    time.sleep(0.005)
    return x


def test_a_run_is_drawn_into_a_png_of_the_size_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "run.png"
    plot = PlotFile(path, size=(8, 6), dpi=50)
    Pipeline[int]().map(abs, name="fast").map(slow, workers=2, name="slow").run(
        range(60), observers=[plot]
    )
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.size == (400, 300)
        colours = picture.convert("RGB").getcolors(maxcolors=100_000)
    assert colours is not None
    assert len(colours) > 50  # lines, labels and text, not a blank canvas
    white = max(colours)[1]
    assert white == (255, 255, 255)  # the background is most of it...
    assert max(colours)[0] < 0.97 * 400 * 300  # ...but not all of it


def test_the_cli_draws_the_run_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.png"
    assert main(["--items", "5", "--quiet", "--plot", str(path)]) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert main(["--plot", str(tmp_path / "missing" / "x.png")]) == 2
    assert "argument --plot: must be a path in an existing directory" in capsys.readouterr().err


def test_a_bad_path_is_refused_naming_it() -> None:
    with pytest.raises(TypeError, match="'path' must be a file path, not int"):
        PlotFile(7)  # type: ignore[arg-type]
