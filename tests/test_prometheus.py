"""Prometheus metrics: scraped over real HTTP during a run, checked against what we counted."""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request

import pytest

from pipeline import Pipeline, PipelineStage, PrometheusMetrics
from pipeline._cli import main
from tests.helpers import WAIT, Join

pytest.importorskip("prometheus_client")

ITEMS = 50


class Hold(PipelineStage[int]):
    """Passes items on; its on_stop waits for the test, so the run is still going when scraped."""

    def __init__(self) -> None:
        super().__init__(name="hold")
        self.release = threading.Event()

    def process(self, item: int) -> int:
        return item

    def on_stop(self) -> None:
        self.release.wait(WAIT)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as response:
        text: str = response.read().decode()
    return text


def sample(text: str, name: str, **labels: str) -> float | None:
    # One sample of the text exposition format; labels in any order.
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_endpoint_serves_the_runs_counts_while_it_goes_on() -> None:
    hold = Hold()
    metrics = PrometheusMetrics(port=0)
    pipeline = Pipeline[int]().filter(lambda x: x % 5 != 0, name="sieve").add(hold)
    runner = Join(lambda: pipeline.run(range(ITEMS), observers=[metrics]), name="test-run")
    try:
        pause = threading.Event()  # never set: a timed wait between scrapes
        text = ""
        for _ in range(int(WAIT / 0.02)):
            if metrics.port is not None:
                text = scrape(metrics.port)
                if sample(text, "pipeline_items_total", outcome="completed", stage="hold") == 40:
                    break
            pause.wait(0.02)
        assert metrics.port is not None
        assert metrics._server is not None
        assert metrics._server.server_address[0] == "127.0.0.1"  # this machine only
        # What we know: 50 items, 10 of them multiples of 5.
        assert sample(text, "pipeline_items_total", outcome="completed", stage="sieve") == 50
        assert sample(text, "pipeline_items_total", outcome="dropped", stage="sieve") == 10
        assert sample(text, "pipeline_items_total", outcome="completed", stage="hold") == 40
        assert sample(text, "pipeline_items_total", outcome="failed", stage="hold") == 0
        assert sample(text, "pipeline_queue_depth", stage="hold") is not None
        assert sample(text, "pipeline_workers_busy", stage="sieve") is not None
        batches = sample(text, "pipeline_item_seconds_count", stage="hold")
        assert batches is not None
        assert batches >= 1
        port = metrics.port
    finally:
        hold.release.set()
        runner.thread.join(WAIT)  # also when an assertion failed: no thread left behind
    result = runner.join()
    report = result.report  # type: ignore[attr-defined]
    assert [s.completed for s in report.stages] == [50, 40]
    assert [s.dropped for s in report.stages] == [10, 0]
    # The run is over: so is the endpoint.
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_without_a_port_the_registry_holds_the_same_figures() -> None:
    metrics = PrometheusMetrics()

    def boom(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    report = Pipeline[int]().map(boom, on_error="skip").run(range(10), observers=[metrics]).report
    value = metrics.registry.get_sample_value
    stage = report.stages[0]
    assert value("pipeline_items_total", {"stage": "boom", "outcome": "completed"}) == 9
    assert value("pipeline_items_total", {"stage": "boom", "outcome": "failed"}) == 1
    assert stage.completed == 9
    assert stage.failed == 1
    assert metrics.port is None


@pytest.mark.parametrize(
    ("port", "error", "message"),
    [("80", TypeError, "'port' must be an int, not str"), (70000, ValueError, "0 to 65535")],
)
def test_a_bad_port_is_refused_naming_it(
    port: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PrometheusMetrics(port=port)  # type: ignore[arg-type]


def test_the_cli_serves_metrics_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--items", "3", "--quiet", "--metrics-port", "0"]) == 0
    assert "Success: 3" in capsys.readouterr().out
    assert main(["--metrics-port", "70000"]) == 2
    assert "argument --metrics-port" in capsys.readouterr().err
