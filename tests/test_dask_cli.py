"""The ``--dask ADDRESS|local`` option of the demo and the custom command.

The quick tests point ``--dask`` at the session's LocalCluster (the
``dask_client`` fixture); ``--dask local``, which starts a cluster of its
own, runs in a subprocess and is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import _dask_cli
from pipeline._cli import main
from pipeline._examples.images import main as custom_main
from tests.helpers import WAIT

pytest.importorskip("distributed")  # the dask_client fixture fails instead in .ci/run

ROOT = Path(__file__).resolve().parent.parent


def address_of(client: Any) -> str:
    return str(client.scheduler.address).removeprefix("tcp://")  # HOST:PORT, as typed


def test_the_demo_runs_its_stages_on_the_cluster(
    dask_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--items", "12", "--workers", "2", "--dask", address_of(dask_client), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = __import__("json").loads(out)
    assert [stage["executor"] for stage in report["stages"]] == ["dask"] * 3
    assert report["outputs"] == 12
    assert report["items_read"] == 12
    # The consumer's lines are the driver's own; the stages' are the workers'.
    assert err.count("Final output:") == 12
    assert "Multiply Stage processing item" not in err


def test_the_demo_fails_fast_on_the_cluster_naming_the_item(
    dask_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--items", "10", "--fail-at", "3", "--dask", address_of(dask_client), "-q"])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "Failed: 1" in out


def test_without_the_gil_a_command_turns_dasks_profiler_off_before_it_connects(
    dask_client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dask_config: Any = pytest.importorskip("dask.config")
    setting = "distributed.worker.profile.enabled"
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    with dask_config.set({setting: True}):  # restored when the test ends
        # Warnings are errors here: the one the stages would give fails the run.
        code = main(["--items", "4", "--dask", address_of(dask_client), "-q"])
        assert dask_config.get(setting) is False
    assert code == 0, capsys.readouterr().err


def test_an_unreachable_scheduler_is_a_usage_error_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_dask_cli, "CONNECT_SECONDS", 0.5)
    code = main(["--dask", "127.0.0.1:9", "-q"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "error: argument --dask: cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("value", ["nonsense", "host:port", "dask://", "ftp://h:1"])
def test_a_bad_address_is_refused_naming_the_option(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dask", value]) == 2
    err = capsys.readouterr().err
    assert "argument --dask: not a scheduler address" in err
    assert "usage:" in err


def test_the_custom_command_runs_its_features_stage_on_the_cluster(
    dask_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--images", "4", "--output", str(tmp_path), "--workers", "2", "-q"]
    code = custom_main([*argv, "--dask", address_of(dask_client)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "features      dask        2" in out
    assert len(list((tmp_path / "thumbnails").iterdir())) == 4
    assert "dead letter: " in out  # the truncated sample, on the thread stage that loads


@pytest.mark.slow
def test_dask_local_starts_a_cluster_for_the_run_and_stops_it() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--items", "8", "--dask", "local", "-q"],
        capture_output=True,
        text=True,
        timeout=WAIT * 6,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Processed: 8" in done.stdout
    assert "Multiply Stage      dask" in done.stdout
    assert "Traceback" not in done.stderr
