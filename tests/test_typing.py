"""Typed composition, proven with mypy; and the public API is exactly ``__all__``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import pipeline
import pipeline.migration
import pipeline.stages
from tests.helpers import WAIT

# Each snippet is checked by one mypy run over all of them; errors are then
# sorted by file. A "good" snippet must have none; a "bad" one must have an
# error on its marked line (`# error:`) mentioning the text after the marker.
SNIPPETS = {
    "good_composition": """
        from collections.abc import Iterator

        from pipeline import Pipeline, PipelineStage, RunResult, Stream
        from pipeline.stages import AddStage, MultiplyStage


        class Shout(PipelineStage[str, str]):
            def process(self, item: str) -> str:
                return item.upper()


        class Chars(PipelineStage[str, str]):
            def process(self, item: str) -> Iterator[str]:
                yield from item


        def length(text: str) -> int:
            return len(text)


        p: Pipeline[int, int] = (
            Pipeline[int]()
            .add(MultiplyStage())
            .map(str)
            .add(Shout())
            .add(Chars())
            .filter(str.isdigit)
            .map(length)
            .add(AddStage())
        )
        result: RunResult[int] = p.run([1, 2])
        outputs: list[int] = result.outputs
        batches: Pipeline[int, list[str]] = Pipeline[int]().map(str).batch(3)
        words: Pipeline[str, str] = Pipeline[str]().flat_map(str.split).each(print)
        stream: Stream[list[str]] = batches.stream(range(3))
        """,
    "bad_stage_after_int": """
        from pipeline import Pipeline, PipelineStage


        class Shout(PipelineStage[str, str]):
            def process(self, item: str) -> str:
                return item.upper()


        Pipeline[int]().map(abs).add(Shout())  # error: "Shout"; expected "PipelineStage[int, str]"
        """,
    "bad_map_after_int": """
        from pipeline import Pipeline


        def shout(text: str) -> str:
            return text.upper()


        Pipeline[int]().map(shout)  # error: "Callable[[str], str]"; expected "Callable[[int],
        """,
    "bad_output_type": """
        from pipeline import Pipeline

        words: list[str] = Pipeline[int]().map(abs).run([1]).outputs  # error: "list[int]"
        """,
    "bad_source_type": """
        from pipeline import Pipeline

        Pipeline[int]().map(abs).run(["a", "b"])  # error: type "str"; expected "int"
        """,
    "bad_filter_after_batch": """
        from pipeline import Pipeline


        def is_big(x: int) -> bool:
            return x > 10


        Pipeline[int]().batch(2).filter(is_big)  # error: "Callable[[list[int]], object] | None"
        """,
}

# One mypy run checks every snippet, with a cold cache: it analyses what
# `pipeline` imports for type checking, Dask's distributed among them when it
# is installed. Where no compiled mypy exists (3.13t) that takes 80 to 90 s
# here, more than the suite's 60 s a test: the tests that wait for it get more.
MYPY_SECONDS = WAIT * 24


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[int, str]]]:
    folder = tmp_path_factory.mktemp("snippets")
    paths = []
    for name, text in SNIPPETS.items():
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(text).lstrip())
        paths.append(path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(folder / ".mypy_cache"),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=MYPY_SECONDS,
        check=False,
        cwd=folder,
    )
    assert done.returncode in {0, 1}, done.stdout + done.stderr
    errors: dict[str, list[tuple[int, str]]] = {name: [] for name in SNIPPETS}
    for line in done.stdout.splitlines():
        match = re.match(r"(?:.*[/\\])?(\w+)\.py:(\d+): error: (.*)", line)
        if match:
            errors[match[1]].append((int(match[2]), match[3]))
    return errors


@pytest.mark.timeout(MYPY_SECONDS + 30)
def test_well_typed_composition_passes_mypy_strict(
    mypy_errors: dict[str, list[tuple[int, str]]],
) -> None:
    assert mypy_errors["good_composition"] == []


@pytest.mark.timeout(MYPY_SECONDS + 30)
@pytest.mark.parametrize("name", [n for n in SNIPPETS if n.startswith("bad_")])
def test_mismatched_composition_fails_mypy_naming_the_types(
    name: str, mypy_errors: dict[str, list[tuple[int, str]]]
) -> None:
    lines = textwrap.dedent(SNIPPETS[name]).lstrip().splitlines()
    (marked,) = [n for n, line in enumerate(lines, 1) if "# error:" in line]
    wanted = lines[marked - 1].split("# error:", 1)[1].strip()
    errors = mypy_errors[name]
    assert errors, f"mypy accepted {name}"
    assert {n for n, _ in errors} == {marked}, errors
    assert any(wanted in message for _, message in errors), errors


# -- the public API ---------------------------------------------------------------------


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize(
    "module", [pipeline, pipeline.stages, pipeline.migration], ids=lambda m: m.__name__
)
def test_all_lists_exactly_the_public_names_sorted(module: types.ModuleType) -> None:
    exported = list(module.__all__)
    for name in exported:  # the names a module imports on first use, imported now
        getattr(module, name)
    # Sorted as ruff's RUF022 sorts: the constants first, then the rest.
    assert exported == sorted(exported, key=lambda name: (not name.isupper(), name))
    assert len(set(exported)) == len(exported)
    assert set(exported) == _public_names(module)
    for name in exported:
        assert getattr(module, name) is not None


def test_public_api_is_what_the_documentation_names() -> None:
    assert {
        "DEFAULT_MAXSIZE",
        "DeadLetter",
        "OnError",
        "Pipeline",
        "PipelineCancelled",
        "PipelineError",
        "PipelineReport",
        "PipelineStage",
        "PipelineStateError",
        "PipelineTimeout",
        "Retry",
        "RunResult",
        "RunStatus",
        "StageError",
        "StageReport",
        "Stream",
    } <= set(pipeline.__all__)
    assert {
        "AddStage",
        "EachStage",
        "FilterStage",
        "FlatMapStage",
        "MapStage",
        "MultiplyStage",
    } <= set(pipeline.stages.__all__)


def test_exceptions_form_the_documented_tree() -> None:
    assert issubclass(pipeline.StageError, pipeline.PipelineError)
    assert issubclass(pipeline.PipelineStateError, pipeline.PipelineError)
    assert issubclass(pipeline.PipelineCancelled, pipeline.PipelineError)
    assert issubclass(pipeline.PipelineTimeout, pipeline.PipelineCancelled)
    assert issubclass(pipeline.PipelineTimeout, TimeoutError)
    assert not issubclass(pipeline.StageError, pipeline.PipelineCancelled)


def test_the_package_ships_py_typed() -> None:
    assert (Path(pipeline.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize(
    ("imported", "not_imported"),
    [
        ("pipeline, pipeline.stages", "pipeline.migration, pipeline.stages._migration, sqlite3"),
        ("pipeline.migration", "pipeline.migration._api, http.server, boto3, psycopg"),
    ],
)
def test_what_is_imported_on_first_use_is_not_imported_before(
    imported: str, not_imported: str
) -> None:
    # A pipeline of other stages never pays for the migration, nor a migration
    # on SQLite and folders for the API server, boto3 or psycopg.
    names = [name.strip() for name in not_imported.split(",")]
    code = f"import sys, {imported}; print([m for m in {names!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
