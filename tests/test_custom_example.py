"""The image-pipeline example: end to end on real files, its options, Pillow missing, its launchers.

Files and CSV rows are counted here, from the disk, not taken from the report.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from pipeline._cli import main as cli_main
from pipeline._examples import PILLOW_HINT
from pipeline._examples.images import CSV_FIELDS, THUMBNAIL_SIZE, main
from pipeline._examples.samples import CORRUPT_NAME, generate
from tests.helpers import WAIT, child_processes

ROOT = Path(__file__).resolve().parent.parent

HEX_COLOUR = re.compile(r"#[0-9a-f]{6} [a-z]+ \d{1,3}%")


@pytest.fixture(autouse=True)
def no_process_leaks() -> Iterator[None]:
    """Fail the test if a worker process outlives it."""
    yield
    children = child_processes()  # also reaps the ones that ended
    for child in children:
        child.join(WAIT)
    assert children == [], f"test left worker processes running: {children}"


def _images_folder(folder: Path) -> set[str]:
    """Fill ``folder`` with images, two unreadable files and a text file; return the good names."""
    paths = generate(folder, 6, seed=3, size=48)  # six images and a truncated PNG
    Image.new("RGB", (40, 30), (255, 0, 0)).save(folder / "solid-red.png")
    checker = Image.new("L", (64, 64), 0)
    for x in range(0, 64, 8):
        for y in range(0, 64, 8):
            if (x + y) // 8 % 2:
                checker.paste(255, (x, y, x + 8, y + 8))
    checker.save(folder / "checker.png")
    Image.new("RGB", (600, 300), (0, 0, 255)).save(folder / "big-blue.jpg")  # shrunk to 256
    (folder / "garbage.png").write_bytes(os.urandom(2000))
    (folder / "notes.txt").write_text("not an image: not read\n")
    return {p.name for p in paths if p.name != CORRUPT_NAME} | {
        "solid-red.png",
        "checker.png",
        "big-blue.jpg",
    }


def _rows(output: Path) -> dict[str, dict[str, str]]:
    with (output / "features.csv").open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames or ()) == CSV_FIELDS
        rows = list(reader)
    by_name = {row["file"]: row for row in rows}
    assert len(by_name) == len(rows), "a file has two rows"
    return by_name


def _check_row(row: dict[str, str], source: Path, output: Path) -> None:
    with Image.open(source) as original:
        assert (int(row["width"]), int(row["height"])) == original.size
        assert row["mode"] == original.mode
    with Image.open(output / row["thumbnail"]) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.mode == "RGB"
        assert (int(row["thumb_width"]), int(row["thumb_height"])) == thumb.size
        assert max(thumb.size) <= THUMBNAIL_SIZE
    assert 0.0 <= float(row["edge_density"]) <= 1.0
    assert 0.0 <= float(row["brightness"]) <= 1.0
    assert HEX_COLOUR.fullmatch(row["colour_1"]), row["colour_1"]
    assert all(HEX_COLOUR.fullmatch(row[c]) for c in ("colour_2", "colour_3") if row[c])
    assert re.fullmatch(r"[0-9a-f]{16}", row["dhash"]), row["dhash"]


def test_a_folder_with_corrupt_files_runs_to_the_end_on_worker_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, output = tmp_path / "in", tmp_path / "out"
    good = _images_folder(folder)
    argv = ["--input", str(folder), "--output", str(output), "--workers", "2", "--quiet"]
    code = main([*argv, "--executor", "process"])
    out, err = capsys.readouterr()
    assert code == 0, err
    # Each unreadable file is a dead letter, named; the text file was not read.
    letters = sorted(line for line in out.splitlines() if line.startswith("dead letter:"))
    assert [line.split(":")[1].strip() for line in letters] == ["garbage.png", CORRUPT_NAME]
    assert "UnidentifiedImageError" in letters[0]
    assert "Expected: 11" in out.splitlines()  # 9 good + 2 unreadable; notes.txt is no image
    # Every good image, and only those, has a thumbnail and one CSV row.
    thumbnails = {p.name for p in (output / "thumbnails").iterdir()}
    assert thumbnails == {f"{name}.jpg" for name in good}
    rows = _rows(output)
    assert set(rows) == good
    for name, row in rows.items():
        _check_row(row, folder / name, output)
    # Features that can be checked by eye.
    red, checker, blue = rows["solid-red.png"], rows["checker.png"], rows["big-blue.jpg"]
    assert float(red["edge_density"]) == 0.0
    assert red["colour_1"] == "#f01010 red 100%"
    assert (red["colour_2"], red["dhash"]) == ("", "0" * 16)
    assert float(checker["edge_density"]) > 0.2
    assert (blue["width"], blue["thumb_width"], blue["thumb_height"]) == ("600", "256", "128")
    # The features were computed in worker processes of the stage.
    assert {re.sub(r" \(pid \d+\)", "", row["worker"]) for row in rows.values()} <= {
        "features-1",
        "features-2",
    }
    assert all("(pid " in row["worker"] for row in rows.values())


def test_generated_samples_on_threads_log_each_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--images", "5", "--sample-size", "40", "--output", str(tmp_path)]
    code = main([*argv, "--executor", "thread", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    samples = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert len(samples) == 6
    assert CORRUPT_NAME in samples
    rows = _rows(tmp_path)
    assert set(rows) == set(samples) - {CORRUPT_NAME}
    for name, row in rows.items():
        _check_row(row, tmp_path / "samples" / name, tmp_path)
        assert row["worker"] in {"features-1", "features-2"}  # thread names
    assert len(list((tmp_path / "thumbnails").iterdir())) == 5
    saved = [line for line in err.splitlines() if line.startswith("[INFO] saved ")]
    assert sorted(line.split()[2].rstrip(":") for line in saved) == sorted(rows)
    assert f"dead letter: {CORRUPT_NAME}: OSError: image file is truncated" in out
    assert "=== VERIFICATION REPORT ===" in out


def test_quiet_logs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--images", "2", "--sample-size", "16", "--output", str(tmp_path), "-q"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    assert "thumbnails: " in out


def test_the_samples_are_the_same_for_the_same_seed(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", 8, seed=5, size=32)
    again = generate(tmp_path / "b", 8, seed=5, size=32)
    other = generate(tmp_path / "c", 8, seed=6, size=32)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert [p.read_bytes() for p in first] != [p.read_bytes() for p in other]
    modes = set()
    for path in first[:-1]:
        with Image.open(path) as image:
            modes.add(image.mode)
            assert max(image.size) <= 32
    assert modes >= {"RGB", "RGBA", "L", "P", "CMYK"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "-1"], "argument --images: must be at least 0 and at most 100000, got -1"),
        (["--images", "many"], "argument --images: expected a whole number, got 'many'"),
        (["--workers", "0"], "argument --workers: must be at least 1 and at most 64, got 0"),
        (["--workers", "65"], "argument --workers: must be at least 1 and at most 64, got 65"),
        (["--executor", "fork"], "argument --executor: invalid choice: 'fork'"),
        (["--input", "no/such/folder"], "argument --input: not a folder: 'no/such/folder'"),
        (["--sample-size", "4"], "argument --sample-size: must be at least 8"),
        (["--seed", "-2"], "argument --seed: must be at least 0, got -2"),
        (["--input", ".", "--images", "3"], "argument --images: not allowed with argument --input"),
        (["--output", __file__], "argument --output: cannot create"),  # a file
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_value_exits_2_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert "usage: run_custom_example.py" in err
    assert "Traceback" not in err
    assert out == ""


def test_the_cli_dispatches_custom_to_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["custom", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "usage: python -m pipeline custom" in err
    assert "argument --workers: must be at least 1" in err
    assert cli_main(["--help"]) == 0
    assert "python -m pipeline custom [options]" in " ".join(capsys.readouterr().out.split())


# -- subprocesses: python -m pipeline custom, Pillow missing, a bare Python ----------------


def _subprocess(
    argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_python_m_pipeline_custom_runs_the_example(tmp_path: Path) -> None:
    argv = ["--images", "3", "--sample-size", "32", "--output", str(tmp_path), "--workers", "2"]
    done = _subprocess([sys.executable, "-m", "pipeline", "custom", *argv])
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout
    assert "[INFO] features worker features-1 (pid " in done.stderr  # logged in the process
    assert len(list((tmp_path / "thumbnails").iterdir())) == 3
    assert len(_rows(tmp_path)) == 3


# Runs argv[1] (a script, or "-m" and a module) with Pillow impossible to import.
WITHOUT_PILLOW = (
    "import runpy, sys; sys.modules['PIL'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True) "
    "if sys.argv[0] == '-m' else runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize(
    "command",
    [
        ["run_custom_example.py"],
        ["examples/custom_stage.py"],
        ["-m", "pipeline", "custom"],
    ],
)
def test_without_pillow_it_says_what_to_install_and_exits_2(
    command: list[str], tmp_path: Path
) -> None:
    done = _subprocess([sys.executable, "-c", WITHOUT_PILLOW, *command, "--output", str(tmp_path)])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == PILLOW_HINT
    assert "pip install 'threaded-pipeline[examples]'" in done.stderr
    assert done.stdout == ""


def test_the_launcher_runs_from_a_checkout_on_a_bare_python_with_pillow(tmp_path: Path) -> None:
    # -S: no site-packages, so neither the installed library nor
    # typing_extensions is there; only Pillow is, through links on PYTHONPATH.
    import PIL

    site = Path(PIL.__file__).resolve().parent.parent
    bare = tmp_path / "path"
    bare.mkdir()
    for name in ("PIL", "pillow.libs"):
        if (site / name).exists():
            (bare / name).symlink_to(site / name)
    script = (
        "import runpy, sys; sys.modules['typing_extensions'] = None; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    argv = ["--images", "3", "--sample-size", "24", "--output", str(tmp_path / "out"), "-q"]
    done = _subprocess(
        [sys.executable, "-S", "-c", script, "run_custom_example.py", *argv],
        env={"PYTHONPATH": str(bare)},
    )
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===" in done.stdout
    assert len(_rows(tmp_path / "out")) == 3
