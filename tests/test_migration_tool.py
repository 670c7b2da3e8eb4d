"""The migration tool end to end: embedded parts, real HTTP, reruns, kill -9, bad setups."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pipeline._examples.migration import main

ROOT = Path(__file__).resolve().parent.parent
DEST = "dest-bucket-proj"


def connect(path: Path) -> closing[sqlite3.Connection]:
    """An autocommit connection, closed when the block ends (a Connection only commits)."""
    return closing(sqlite3.connect(path, isolation_level=None))


def run_tool(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_data_example.py"), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def rows(root: Path) -> list[tuple[int, str, str | None]]:
    """(id, status, dest_key) of every row, read from the SQLite file itself."""
    with connect(root / "files.db") as db:
        return list(db.execute("SELECT id, status, dest_key FROM files ORDER BY id"))


def api_records(root: Path) -> dict[int, str]:
    """file id -> dest_key, as the embedded API stored them (its own SQLite file)."""
    with connect(root / "api.db") as db:
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        assert tables, "the API stored nothing"
        found: dict[int, str] = {}
        for table in tables:
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            if "id" in columns and "record" in columns:
                for file_id, record in db.execute(f"SELECT id, record FROM {table}"):
                    found[int(file_id)] = json.loads(record)["dest_key"]
        return found


def destination_objects(root: Path) -> list[str]:
    bucket = root / "buckets" / DEST
    return sorted(str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file())


def test_the_tool_migrates_then_a_rerun_has_nothing_left(tmp_path: Path) -> None:
    done = run_tool("--root", str(tmp_path), "--files", "12", "--api-latency", "0.001")
    assert done.returncode == 0, done.stderr
    assert "=== VERIFICATION REPORT ===\nExpected: 12\nProcessed: 12\nSuccess: 12\nFailed: 0" in (
        done.stdout
    )
    assert "Uploader S3-Worker-1 copy file" in done.stderr
    assert "=== Pipeline complete ===" in done.stdout
    table = rows(tmp_path)
    assert [status for _, status, _ in table] == ["VERIFIED"] * 12
    assert destination_objects(tmp_path) == sorted(key or "" for _, _, key in table)
    again = run_tool("--root", str(tmp_path), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "Expected: 0\nProcessed: 0" in again.stdout
    assert destination_objects(tmp_path) == sorted(key or "" for _, _, key in table)


def test_a_dry_run_says_what_it_would_do_and_does_nothing(tmp_path: Path) -> None:
    done = run_tool("--root", str(tmp_path), "--files", "3", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would seed 3 files in bucket source-bucket-proj" in done.stdout
    assert rows(tmp_path) == []
    run_tool("--root", str(tmp_path), "--files", "3", "--quiet")
    with connect(tmp_path / "files.db") as db:
        db.execute("UPDATE files SET status = 'READY', dest_key = NULL WHERE id = 101")
    plan = run_tool("--root", str(tmp_path), "--dry-run")
    assert plan.stdout.splitlines() == [
        "would copy, register, verify: file_101.pdf (id 101, READY)",
        "1 files to migrate; 0 FAILED left as they are (--retry-failed)",
    ]
    assert [status for _, status, _ in rows(tmp_path)] == ["VERIFIED", "READY", "VERIFIED"]


def test_an_api_that_fails_at_random_ends_in_retries_or_dead_letters_and_balanced_books(
    tmp_path: Path,
) -> None:
    done = run_tool(
        "--root",
        str(tmp_path),
        "--files",
        "30",
        "--api-latency",
        "0",
        "--api-fail-rate",
        "0.4",
        "--quiet",
        "--json",
    )
    result = json.loads(done.stdout)
    pipeline_report = result["pipeline"]
    statuses = [status for _, status, _ in rows(tmp_path)]
    failed = statuses.count("FAILED")
    assert statuses.count("VERIFIED") + failed == 30
    assert done.returncode == (1 if failed else 0)
    assert result["verification"]["failed"] == failed
    assert len(pipeline_report["dead_letters"]) == failed
    retried = sum(stage["retried"] for stage in pipeline_report["stages"])
    assert retried > 0
    assert pipeline_report["balanced"] is True


@pytest.mark.parametrize("trial", range(3))
def test_kill_9_at_a_random_moment_then_a_rerun_migrates_every_file_exactly_once(
    tmp_path: Path, trial: int
) -> None:
    argv = [
        sys.executable,
        str(ROOT / "run_data_example.py"),
        "--root",
        str(tmp_path),
        "--files",
        "40",
        "--api-latency",
        "0.05",  # 40 PUTs over 2 workers: about a second of run to land in
        "--file-size",
        "4096",
    ]
    # A random moment, by the run's progress rather than the clock: after the
    # first copy, some of its ~240 log lines later (copies, PUTs, checks).
    moment = random.Random(trial).randrange(0, 150)
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    ) as child:
        try:
            assert child.stderr is not None
            lines = iter(child.stderr)
            for line in lines:  # wait until copies are going on
                if "copy file" in line:
                    break
            for _, _ in zip(range(moment), lines, strict=False):
                pass
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(30)
    assert child.returncode == -signal.SIGKILL
    with connect(tmp_path / "files.db") as db:
        db.execute("UPDATE files SET lease_until = 0")  # the dead migrator's leases: run out
    done = run_tool("--root", str(tmp_path), "--quiet")
    assert done.returncode == 0, done.stderr
    table = rows(tmp_path)
    assert [status for _, status, _ in table] == ["VERIFIED"] * 40
    keys = sorted(key or "" for _, _, key in table)
    assert destination_objects(tmp_path) == keys  # no object twice, no stray half copy
    assert api_records(tmp_path) == {file_id: key for file_id, _, key in table}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "/proc/no/such/dir/files.db"], "cannot open the SQLite database"),
        (["--api-url", "http://127.0.0.1:9", "--api-token", "t"], "127.0.0.1:9"),
        (["--api-url", "http://127.0.0.1:9"], "--api-url needs a token"),
        (
            ["--api-url", "http://127.0.0.1:9", "--api-token", "t", "--api-fail-rate", "0.5"],
            "argument --api-fail-rate: applies to the embedded API only",
        ),
        (["--dest-bucket", "Bad_Bucket"], "argument --dest-bucket: bucket name 'Bad_Bucket'"),
        (["--s3-workers", "0"], "argument --s3-workers: must be at least 1"),
    ],
)
def test_a_bad_setup_is_refused_before_any_work_naming_what_to_fix(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env_token = os.environ.pop("PIPELINE_API_TOKEN", None)
    try:
        code = main(["--root", str(tmp_path), "--quiet", *argv])
    finally:
        if env_token is not None:
            os.environ["PIPELINE_API_TOKEN"] = env_token
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "buckets" / DEST).exists() or destination_objects(tmp_path) == []


def test_the_tool_migrates_through_a_real_s3_endpoint(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto's server on 127.0.0.1: boto3 speaks real S3 HTTP to it, copies server-side.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    source, dest = f"src-{uuid.uuid4().hex[:12]}", f"dst-{uuid.uuid4().hex[:12]}"
    argv = ["--root", str(tmp_path), "--s3-endpoint", s3_endpoint, "--source-bucket", source]
    argv += ["--dest-bucket", dest, "--files", "10", "--file-size", "2048", "--quiet"]
    argv += ["--api-latency", "0"]
    assert main(argv) == 0
    table = rows(tmp_path)
    assert [status for _, status, _ in table] == ["VERIFIED"] * 10
    from pipeline.migration._s3 import S3Store

    store = S3Store(endpoint_url=s3_endpoint)
    try:
        for file_id, _, key in table:
            copied = store.head(dest, key or "")
            original = store.head(source, f"file_{file_id}.pdf")
            assert copied is not None
            assert copied == original
    finally:
        store.close()


def test_two_migrators_share_one_postgresql_table_and_each_file_is_migrated_once(
    tmp_path: Path, pg_table_url: str
) -> None:
    from pipeline.migration import LocalStore, open_file_table, seed_files
    from pipeline.migration._api import MetadataClient, MetadataServer

    table = open_file_table(pg_table_url)
    store = LocalStore(tmp_path / "buckets")
    seed_files(table, store, "source-bucket-proj", count=60, size=1024, seed=9)
    store.create_bucket(DEST)
    # 60 PUTs of 50 ms over 2 workers: 1.5 s for one migrator alone, long
    # enough that the second, started at once, finds files to claim.
    with MetadataServer(tmp_path / "shared-api.db", latency=0.05).start() as server:
        argv = [sys.executable, str(ROOT / "run_data_example.py"), "--root", str(tmp_path)]
        argv += ["--db", pg_table_url, "--api-url", server.url, "--api-token", server.token]
        argv += ["--quiet", "--json"]
        children = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [child.communicate(timeout=120) for child in children]
        assert [child.returncode for child in children] == [0, 0], outputs
        verified = [json.loads(out)["verification"]["success"] for out, _ in outputs]
        assert sum(verified) == 60  # counted by each migrator's own verifier
        assert min(verified) > 0, verified  # both did work: the table was shared
        records = {}
        with MetadataClient(server.url, server.token) as client:
            for row in table.records():
                records[row.id] = (client.get(row.id) or {}).get("dest_key")
    final = table.records()
    table.close()
    assert [r.status for r in final] == ["VERIFIED"] * 60
    assert destination_objects(tmp_path) == sorted(r.dest_key or "" for r in final)
    assert records == {r.id: r.dest_key for r in final}


def test_three_migrators_on_one_postgresql_table_one_killed_midway_each_file_once(
    tmp_path: Path, pg_table_url: str
) -> None:
    from pipeline.migration import LocalStore, open_file_table, seed_files
    from pipeline.migration._api import MetadataClient, MetadataServer

    files = 90
    table = open_file_table(pg_table_url)
    store = LocalStore(tmp_path / "buckets")
    seed_files(table, store, "source-bucket-proj", count=files, size=1024, seed=11)
    store.create_bucket(DEST)
    with MetadataServer(tmp_path / "shared-api.db", latency=0.05).start() as server:
        argv = [sys.executable, str(ROOT / "run_data_example.py"), "--root", str(tmp_path)]
        argv += ["--db", pg_table_url, "--api-url", server.url, "--api-token", server.token]
        argv += ["--lease", "2"]  # a dead migrator's files are taken over 2 s after its death
        victim = subprocess.Popen(
            [*argv, "--api-workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        survivors = [
            subprocess.Popen(
                [*argv, "--quiet", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            assert victim.stderr is not None
            registered = 0
            for line in victim.stderr:  # midway: after its 8th registration
                registered += "uploaded !" in line
                if registered == 8:
                    break
            victim.kill()
            victim.wait(30)
            victim.stderr.close()
            assert victim.returncode == -signal.SIGKILL
            dead = f"%-{victim.pid}-%"
            import psycopg

            with psycopg.connect(pg_table_url, autocommit=True) as look:
                query = (
                    "SELECT COUNT(*) FROM files WHERE owner LIKE %s"
                    " AND status NOT IN ('VERIFIED', 'FAILED')"
                )
                (held,) = look.execute(query, (dead,)).fetchone() or (0,)
            assert held > 0  # it died holding files: the survivors must take them over
            outputs = [child.communicate(timeout=120) for child in survivors]
        finally:
            for child in (victim, *survivors):
                if child.poll() is None:
                    child.kill()
                    child.wait(30)
        assert [child.returncode for child in survivors] == [0, 0], outputs
        verified = [json.loads(out)["verification"]["success"] for out, _ in outputs]
        assert min(verified) > 0, verified  # both survivors did work
        with MetadataClient(server.url, server.token) as client:
            records = {
                row.id: (client.get(row.id) or {}).get("dest_key") for row in table.records()
            }
    final = table.records()
    table.close()
    assert [r.status for r in final] == ["VERIFIED"] * files  # the dead one's files too
    assert destination_objects(tmp_path) == sorted(r.dest_key or "" for r in final)  # once each
    assert records == {r.id: r.dest_key for r in final}  # registered once, under its key


def test_two_migrators_started_at_once_on_a_new_postgresql_database_seed_it_once(
    tmp_path: Path, pg_table_url: str
) -> None:
    # The README's way to run two: both create the table and seed it, at once.
    from pipeline.migration import open_file_table
    from pipeline.migration._api import MetadataServer

    with MetadataServer(tmp_path / "shared-api.db", latency=0.02).start() as server:
        argv = [sys.executable, str(ROOT / "run_data_example.py"), "--root", str(tmp_path)]
        argv += ["--db", pg_table_url, "--api-url", server.url, "--api-token", server.token]
        argv += ["--files", "30", "--quiet", "--json"]
        children = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    verified = [json.loads(out)["verification"]["success"] for out, _ in outputs]
    assert sum(verified) == 30
    with closing(open_file_table(pg_table_url)) as table:
        final = table.records()
    assert [r.id for r in final] == list(range(100, 130))  # seeded once
    assert [r.status for r in final] == ["VERIFIED"] * 30
    assert destination_objects(tmp_path) == sorted(r.dest_key or "" for r in final)


def test_a_store_failing_while_seeding_is_a_setup_error_and_a_rerun_seeds_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.migration import LocalStore

    class StoreError(Exception):  # as botocore's ClientError: not an OSError
        pass

    real_put = LocalStore.put
    puts: list[str] = []

    def failing_put(self: LocalStore, bucket: str, key: str, data: bytes) -> Any:
        puts.append(key)
        if len(puts) == 3:
            raise StoreError("An error occurred (AccessDenied) when calling PutObject")
        return real_put(self, bucket, key, data)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    argv = ["--root", str(tmp_path), "--files", "5", "--quiet", "--api-latency", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot seed bucket 'source-bucket-proj' in the folder" in err
    assert "AccessDenied" in err
    assert rows(tmp_path) == []  # no row for a half-seeded bucket
    monkeypatch.setattr(LocalStore, "put", real_put)
    assert main(argv) == 0
    assert [status for _, status, _ in rows(tmp_path)] == ["VERIFIED"] * 5


def test_the_embedded_api_runs_in_its_own_process_and_ends_with_a_killed_tool(
    tmp_path: Path,
) -> None:
    import http.client
    from urllib.parse import urlsplit

    argv = [sys.executable, str(ROOT / "run_data_example.py"), "--root", str(tmp_path)]
    argv += ["--files", "40", "--api-latency", "0.2"]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    ) as tool:
        try:
            assert tool.stderr is not None
            url = ""
            for line in tool.stderr:
                if "Metadata API at " in line:
                    url = line.split("Metadata API at ")[1].strip()
                    break
            parts = urlsplit(url)
            assert parts.hostname == "127.0.0.1"
            assert parts.port

            def answers() -> bool:
                connection = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=5)
                try:
                    connection.request("GET", "/health")
                    return connection.getresponse().status == 200
                except OSError:
                    return False
                finally:
                    connection.close()

            assert answers()  # serving, in a process that is not the tool's
            tool.kill()
        finally:
            tool.wait(30)
    assert tool.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10.0
    while answers() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a port: there is no event to wait on
    assert not answers()  # the server saw its stdin close with the tool, and ended
