"""The timeline file: valid Chrome Trace Event JSON, one track per worker, every batch a span."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline import Pipeline, Retry, StageError, TraceFile

PHASES = {"X", "i", "C", "M"}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def check_format(document: dict[str, Any], elapsed: float) -> list[dict[str, Any]]:
    """Every event has what the trace-event format requires, with sane timestamps."""
    events: list[dict[str, Any]] = document["traceEvents"]
    horizon = (elapsed + 0.5) * 1e6  # µs: nothing after the run's end (plus slack)
    for event in events:
        assert event["ph"] in PHASES, event
        assert isinstance(event["name"], str), event
        assert event["pid"] == 1, event
        if event["ph"] == "M":
            continue
        assert 0 <= event["ts"] <= horizon, event
        if event["ph"] == "X":
            assert event["dur"] >= 0, event
            assert isinstance(event["tid"], int), event
        if event["ph"] == "i":
            assert event["s"] in {"t", "g"}, event
    return events


def tracks(events: list[dict[str, Any]]) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}


def _slow(x: int) -> int:
    time.sleep(0.005)
    return x


def test_a_run_writes_one_track_per_worker_and_a_span_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    report = (
        Pipeline[int]()
        .map(abs, name="fast")
        .map(_slow, workers=2, name="slow")
        .run(range(40), trace=path)
        .report
    )
    events = check_format(load(path), report.elapsed_seconds)
    named = tracks(events)
    assert sorted(named.values()) == ["fast-1", "slow-1", "slow-2"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["tid"] for e in spans} <= set(named)
    # Every item is in exactly one span of each stage: 40 taken by each.
    per_stage: Counter[str] = Counter()
    for span in spans:
        per_stage[named[span["tid"]].rsplit("-", 1)[0]] += span["args"]["size"]
    assert per_stage == {"fast": 40, "slow": 40}
    slow_spans = [s for s in spans if named[s["tid"]].startswith("slow")]
    assert all(s["dur"] >= 4_000 for s in slow_spans)  # µs: each item slept 5 ms
    # The slow stage's two workers overlap in time: two tracks side by side.
    by_worker = {
        tid: [s for s in slow_spans if s["tid"] == tid] for tid in {s["tid"] for s in slow_spans}
    }
    assert len(by_worker) == 2
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {"queue fast", "queue slow", "queue outputs"}
    assert load(path)["otherData"]["dropped_events"] == 0


def test_retries_dead_letters_and_the_failing_item_are_instant_events(tmp_path: Path) -> None:
    def picky(x: int) -> int:
        if x % 5 == 1:
            raise ValueError(x)
        return x

    skipped = tmp_path / "skip.json"
    Pipeline[int]().map(picky, on_error="skip", retry=Retry(attempts=2, backoff=0)).run(
        range(20), trace=skipped
    )
    names = Counter(e["name"] for e in load(skipped)["traceEvents"] if e["ph"] == "i")
    assert names == {"retry": 4, "dead letter": 4}

    failed = tmp_path / "fail.json"
    with pytest.raises(StageError):
        Pipeline[int]().map(picky).run(range(20), trace=failed)
    document = load(failed)
    instants = [e for e in document["traceEvents"] if e["ph"] == "i"]
    assert [e["name"] for e in instants] == ["failed the run", "run failed"]
    assert instants[0]["args"]["item"] == "1"
    assert document["otherData"]["status"] == "failed"


def test_the_trace_is_capped_and_says_how_much_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "capped.json"
    trace = TraceFile(path, max_events=20)

    # Batches of one item: a slow-ish stage makes many events.
    def nap(x: int) -> int:
        time.sleep(0.0005)
        return x

    Pipeline[int]().map(nap, workers=2).run(range(200), observers=[trace])
    document = load(path)
    events = document["traceEvents"]
    assert document["otherData"]["dropped_events"] > 0
    assert len(events) <= 20 + 2 + 1  # the cap, what two workers may pass it by, its note
    assert any(e["name"].startswith("trace cap reached") for e in events)


def test_a_stream_writes_its_trace_when_it_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "stream.json"
    with Pipeline[int]().map(abs).stream(range(10**6), trace=path) as outputs:
        assert next(outputs) == 0
        assert not path.exists()
    document = load(path)
    assert document["otherData"]["status"] == "closed"
    assert [e["name"] for e in document["traceEvents"] if e["ph"] == "i"] == ["run closed"]


def test_a_process_stage_has_a_track_per_worker_named_for_it(tmp_path: Path) -> None:
    path = tmp_path / "process.json"
    Pipeline[int]().map(abs, workers=2, executor="process").run(range(10), trace=path)
    assert sorted(tracks(load(path)["traceEvents"]).values()) == [
        "abs-1 (process)",
        "abs-2 (process)",
    ]


@pytest.mark.parametrize(
    ("trace", "error", "message"),
    [
        (42, TypeError, "'trace' must be a file path, not int"),
        ("/no/such/dir/run.json", ValueError, "'trace' must be a path in an existing directory"),
        (".", ValueError, "'trace' must be a file path, not a directory"),
    ],
)
def test_a_bad_trace_path_is_refused_before_any_thread_starts(
    trace: Any, error: type[Exception], message: str
) -> None:
    before = set(threading.enumerate())
    pipeline = Pipeline[int]().map(abs)
    with pytest.raises(error, match=message):
        pipeline.run([1], trace=trace)
    with pytest.raises(error, match=message):
        pipeline.stream([1], trace=trace)
    assert [t for t in threading.enumerate() if t not in before] == []
