"""The file migration with its uploaders on a Dask cluster, and what makes that possible.

First, without a cluster: each table, store and API client pickles as its
configuration and no connection (a pickler that records every object it
writes sees no socket, no lock, no sqlite3, psycopg or botocore object),
and the copy works. Then on the session's 2-process LocalCluster (the
``dask_client`` fixture of conftest.py), on SQLite and on PostgreSQL
(tests/pgserver.py): claims from several processes take each row once, a
cluster worker's step is fenced by the migrator's owner (``LeaseLost`` once
another owner took the file), a file's ``leased_at`` is on the database's
clock wherever it was set, the threads sharing a cluster worker's stage copy
each get a client of their own, and a whole migration (``Migration`` with
``executor=``, and the tool with ``--dask``) moves every file exactly once,
counted at the destination and in the API's own database, with a rerun
doing nothing. The tool with ``--dask local`` (a LocalCluster of its own) is
slow.

The helpers the cluster runs are at module level: the cluster's worker
processes import this module.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pipeline import Dask, Pipeline
from pipeline._examples.migration import main
from pipeline.migration import (
    API_UPLOADED,
    READY,
    S3_COPIED,
    VERIFIED,
    ApiError,
    ApiUnavailable,
    FileRecord,
    FileTable,
    LeaseLost,
    LocalStore,
    Migration,
    MigrationConfigError,
    ObjectStore,
    SQLiteFileTable,
    open_file_table,
    seed_files,
)
from pipeline.migration import _cluster as cluster_module
from pipeline.stages import APIUploader, S3Uploader, claim_files
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY

pytest.importorskip("distributed")  # the dask_client fixture fails instead in .ci/run

ROOT = Path(__file__).resolve().parent.parent
SOURCE, DEST = "source-bucket-proj", "dest-bucket-proj"

# What a pickled part must not carry: a connection, a socket, a lock, a session.
CONNECTION_MODULES = frozenset(
    {"sqlite3", "_sqlite3", "psycopg", "socket", "_socket", "ssl", "_ssl", "http", "_thread"}
    | {"threading", "botocore", "boto3", "s3transfer", "urllib3"}
)


# -- helpers the cluster's workers run ---------------------------------------------------


def advance_there(table: FileTable, file_id: int, status: str) -> str:
    """On a cluster worker: the step, on a connection of the unpickled table's own."""
    with table.for_worker() as worker:
        worker.advance(file_id, status)
        return worker.owner


def claim_all_there(table: FileTable) -> list[int]:
    """Claim rows three at a time until none is left; the ids claimed."""
    with table.for_worker() as worker:
        ids: list[int] = []
        while rows := worker.claim(3):
            ids += [row.id for row in rows]
        return ids


class OneThreadAPI:
    """An API client that fails if two threads use one object at once; counts puts by pid."""

    def __init__(self) -> None:
        self._busy = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._busy = threading.Lock()

    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        if not self._busy.acquire(blocking=False):
            raise AssertionError("one API client used by two threads at once")
        try:
            time.sleep(0.03)  # long enough for the other task thread to arrive
        finally:
            self._busy.release()
        return {"id": file_id, "pid": os.getpid()}

    def get(self, file_id: int) -> dict[str, Any] | None:
        return None

    def for_worker(self) -> OneThreadAPI:
        return OneThreadAPI()

    def close(self) -> None:
        pass


# -- helpers here ------------------------------------------------------------------------


class _Recorder(pickle.Pickler):
    """A pickler that keeps every object it writes."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.written: list[object] = []

    def persistent_id(self, obj: Any) -> None:
        self.written.append(obj)  # and None: pickled as usual


def connection_parts(value: object) -> list[str]:
    """The types of what pickling ``value`` writes that belong to a connection, a lock..."""
    recorder = _Recorder()
    recorder.dump(value)
    return sorted(
        {
            f"{type(obj).__module__}.{type(obj).__qualname__}"
            for obj in recorder.written
            if type(obj).__module__.partition(".")[0] in CONNECTION_MODULES
        }
    )


def round_trip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's files table is: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "files.db")
    url: str = request.getfixturevalue("pg_table_url")
    return url


def expire_leases(where: str) -> None:
    """Make every lease in the table run out, by SQL of its own (not the table's)."""
    if where.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as connection:
            connection.execute("UPDATE files SET lease_until = 0")
        return
    with closing(sqlite3.connect(where, isolation_level=None)) as connection:
        connection.execute("UPDATE files SET lease_until = 0")


def raw_s3(endpoint: str) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def s3_keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def folder_keys(root: Path, bucket: str) -> list[str]:
    """Every file in a folder bucket, stray temporary files included."""
    folder = root / bucket
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def api_puts(api_db: Path) -> dict[int, tuple[int, str]]:
    """file id -> (PUTs it took, its dest_key), read from the API server's own SQLite file."""
    with closing(sqlite3.connect(api_db, isolation_level=None)) as connection:
        rows = connection.execute("SELECT id, puts, record FROM records ORDER BY id")
        return {int(i): (int(puts), json.loads(record)["dest_key"]) for i, puts, record in rows}


def stage_executors(result: Any) -> dict[str, str]:
    return {stage.name: stage.executor for stage in result.report.stages}


# -- pickled as configuration ------------------------------------------------------------


def test_an_sqlite_table_pickles_as_its_configuration_and_the_copy_connects(
    tmp_path: Path,
) -> None:
    table = SQLiteFileTable(tmp_path / "files.db", owner="ours", lease_seconds=42, busy_timeout=7)
    seed_files(table, LocalStore(tmp_path / "buckets"), SOURCE, count=3, size=16)
    assert connection_parts(table) == []
    copy = round_trip(table)
    try:
        assert (copy.path, copy.owner, copy.lease_seconds, copy.busy_timeout) == (
            table.path,
            "ours",
            42,
            7,
        )
        assert copy.counts()[READY] == 3  # connected on first use
        with copy.for_worker() as worker:
            [row] = worker.claim(1)
        table.advance(row.id, S3_COPIED)  # claimed by the copy: the same owner's
        assert connection_parts(copy) == []  # a used copy pickles without its connection too
    finally:
        copy.close()
        table.close()


def test_an_in_memory_sqlite_table_refuses_to_be_pickled() -> None:
    with SQLiteFileTable(":memory:") as table, pytest.raises(TypeError, match="in-memory"):
        pickle.dumps(table)


def test_a_postgresql_table_pickles_as_its_configuration_and_the_copy_connects(
    pg_table_url: str,
) -> None:
    from pipeline.migration import PostgresFileTable

    table = PostgresFileTable(pg_table_url, owner="ours", lease_seconds=42, connect_timeout=3)
    table.create()
    table.add([FileRecord(1, "a.pdf", 3, "ab", SOURCE, "a.pdf")])
    assert connection_parts(table) == []
    copy = round_trip(table)
    try:
        assert (copy.url, copy.owner, copy.lease_seconds, copy.connect_timeout) == (
            pg_table_url,
            "ours",
            42,
            3,
        )
        assert copy.describe() == table.describe()
        assert copy.counts()[READY] == 1  # connected on first use
        with copy.for_worker() as worker:
            [row] = worker.claim(1)
            assert abs(worker.clock() - table.clock()) < 1.0  # one server's clock
        table.advance(row.id, VERIFIED)
        assert connection_parts(copy) == []
    finally:
        copy.close()
        table.close()


def test_a_folder_store_pickles_as_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "buckets")
    store.create_bucket(SOURCE)
    info = store.put(SOURCE, "a", b"bytes")
    assert connection_parts(store) == []
    assert round_trip(store).head(SOURCE, "a") == info


def test_an_s3_store_pickles_as_its_settings_and_the_copy_makes_its_own_client(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("boto3")
    from pipeline.migration import S3Store

    bucket = f"pickled-{uuid.uuid4().hex[:16]}"
    store = S3Store(
        endpoint_url=s3_endpoint,
        region=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        read_timeout=9,
    )
    copy = round_trip(store)
    try:
        store.create_bucket(bucket)
        info = store.put(bucket, "a", b"from here")
        assert connection_parts(store) == []
        assert copy.describe() == store.describe()
        assert copy.head(bucket, "a") == info  # a client made on first use
        worker = copy.for_worker()
        assert worker._client is not copy._client
        assert worker.put(bucket, "b", b"from the copy's worker").size == 22
        worker.close()
        assert connection_parts(copy) == []  # a used copy: its settings only, still
        assert copy._settings["read_timeout"] == 9
    finally:
        copy.close()
        store.close()
    # Credentials travel only as given: boto3's chain is read where the copy runs.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-of-the-environment")
    chained = S3Store(endpoint_url=s3_endpoint, region=REGION)
    try:
        payload = pickle.dumps(chained)
        assert b"secret-of-the-environment" not in payload
        assert b"from-the-environment" not in payload
        assert pickle.loads(payload).describe() == chained.describe()
    finally:
        chained.close()


def test_an_api_client_pickles_as_its_settings_and_the_copy_reconnects(tmp_path: Path) -> None:
    from pipeline.migration import MetadataClient, MetadataServer

    record = {"name": "a.pdf", "size": 3, "checksum": "ab" * 32, "dest_key": "k"}
    with (
        MetadataServer(":memory:").start() as server,
        MetadataClient(server.url, server.token, timeout=4) as client,
    ):
        client.put(1, record)  # its connection is open now
        assert connection_parts(client) == []
        copy = round_trip(client)
        with copy:
            assert (copy.url, copy.timeout) == (client.url, 4)
            assert server.token not in repr(copy)
            assert copy.get(1) == {"id": 1, **record}
            with copy.for_worker() as worker:
                assert worker.get(1) == {"id": 1, **record}


def plain_round_trip(value: Any) -> Any:
    """Pickled without copyreg's table: importing distributed adds tblib's reducers there."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {}
    pickler.dump(value)
    return pickle.loads(out.getvalue())


def test_an_api_error_pickles_as_itself_so_retries_still_see_it() -> None:
    # A worker process of executor="process" has no tblib: the error's own reduce counts.
    error = ApiUnavailable(503, "busy")
    error.add_note("raised in worker process 1")
    copy = plain_round_trip(error)
    assert type(copy) is ApiUnavailable
    assert (str(copy), copy.status, copy.message, copy.retryable) == (
        "HTTP 503: busy",
        503,
        "busy",
        True,
    )
    assert copy.__notes__ == ["raised in worker process 1"]
    assert type(plain_round_trip(ApiError(400, "bad"))) is ApiError


# -- on the cluster ----------------------------------------------------------------------


def test_claims_from_several_processes_take_each_row_once(dask_client: Any, where: str) -> None:
    table = open_file_table(where, owner="seeder")
    table.create()
    table.add(FileRecord(i, f"f{i}", 1, "x", SOURCE, f"f{i}") for i in range(240))
    claimers = [open_file_table(where, owner=f"claimer-{n}") for n in range(4)]
    try:
        futures = [dask_client.submit(claim_all_there, c, pure=False) for c in claimers[:3]]
        here = claim_all_there(claimers[3])  # meanwhile, from this process
        claimed = [*here, *(i for future in futures for i in future.result(timeout=60))]
        assert sorted(claimed) == list(range(240))  # every row, none twice
        assert [row.attempts for row in table.records()] == [1] * 240  # one claim each
    finally:
        for claimer in claimers:
            claimer.close()
        table.close()


def test_a_cluster_workers_step_is_fenced_by_the_migrators_owner(
    dask_client: Any, where: str
) -> None:
    ours = open_file_table(where, owner="ours")
    theirs = open_file_table(where, owner="theirs")
    try:
        ours.create()
        ours.add([FileRecord(1, "a", 1, "x", SOURCE, "a"), FileRecord(2, "b", 1, "x", SOURCE, "b")])
        first, second = ours.claim(2)
        # Ours still: the pickled table writes as our owner there.
        assert dask_client.submit(advance_there, ours, first.id, S3_COPIED).result() == "ours"
        assert [row.id for row in ours.records(S3_COPIED)] == [first.id]
        expire_leases(where)
        assert [row.id for row in theirs.claim(2)] == [first.id, second.id]
        # Taken over: the cluster worker's step is refused, as it would be here.
        with pytest.raises(LeaseLost, match="no longer claimed by ours"):
            dask_client.submit(advance_there, ours, second.id, API_UPLOADED).result()
        with pytest.raises(LeaseLost):
            dask_client.submit(advance_there, ours, first.id, API_UPLOADED).result()
        statuses = {row.id: row.status for row in theirs.records()}
        assert statuses == {first.id: S3_COPIED, second.id: READY}  # nothing of ours landed
    finally:
        theirs.close()
        ours.close()


def test_an_uploader_on_the_cluster_drops_a_file_another_migrator_took(
    dask_client: Any, where: str, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "buckets")
    ours = open_file_table(where, owner="ours")
    theirs = open_file_table(where, owner="theirs")
    try:
        seed_files(ours, store, SOURCE, count=1, size=64)
        store.create_bucket(DEST)
        [record] = ours.claim(1)
        expire_leases(where)
        theirs.claim(1)
        stage = S3Uploader(store, ours, dest_bucket=DEST)
        run = Pipeline[FileRecord]().add(stage, executor=dask_client).run([record])
        assert run.outputs == []  # handed over, quietly: not copied, not failed
        assert run.report.stages[0].executor == "dask"
        assert [(r.status, r.dest_key) for r in theirs.records()] == [(READY, None)]
        assert folder_keys(store.root, DEST) == []
    finally:
        theirs.close()
        ours.close()


def test_leased_at_set_on_the_cluster_is_on_the_databases_clock(
    dask_client: Any, where: str, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "buckets")
    table = open_file_table(where, owner="ours")
    try:
        seed_files(table, store, SOURCE, count=6, size=64)
        store.create_bucket(DEST)
        before = table.clock()
        stage = S3Uploader(store, table, dest_bucket=DEST)
        copying = Pipeline[FileRecord]().add(stage, workers=2, executor=dask_client)
        outputs = copying.run(claim_files(table)).outputs
        after = table.clock()
        assert [r.status for r in outputs] == [S3_COPIED] * 6
        # Set in the cluster's processes, read here: one clock, the database's.
        assert all(before - 1.0 <= r.leased_at <= after + 1.0 for r in outputs), [
            (before, r.leased_at, after) for r in outputs
        ]
        assert abs(table.clock() - time.time()) < 60  # epoch seconds, not a monotonic count
    finally:
        table.close()


def test_the_threads_of_a_cluster_worker_each_get_a_client_of_their_own(
    dask_client: Any, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "buckets")
    table = SQLiteFileTable(tmp_path / "files.db", owner="ours")
    try:
        seed_files(table, store, SOURCE, count=24, size=16)
        records = table.claim(24)
        for record in records:
            table.advance(record.id, S3_COPIED)
            record.status, record.dest_bucket, record.dest_key = S3_COPIED, DEST, f"k{record.id}"
        # One item per task, 8 in flight over 2 processes of 2 threads: each
        # process's copy of the stage is used by both of its threads at once.
        stage = APIUploader(OneThreadAPI(), table)
        run = (
            Pipeline[FileRecord]()
            .add(stage, workers=8, executor=Dask(dask_client, batch_size=1), on_error="skip")
            .run(records)
        )
        assert run.report.dead_letters == (), run.report.dead_letters[0].exception
        assert sorted(r.id for r in run.outputs) == [r.id for r in records]
        assert [r.status for r in table.records()] == [API_UPLOADED] * 24
    finally:
        table.close()


def test_a_migration_on_sqlite_with_its_uploaders_on_the_cluster_moves_each_file_once(
    dask_client: Any, tmp_path: Path
) -> None:
    from pipeline.migration import MetadataClient, MetadataServer

    table = SQLiteFileTable(tmp_path / "files.db")
    store = LocalStore(tmp_path / "buckets")
    seeded = seed_files(table, store, SOURCE, count=30, size=512, seed=3)
    store.create_bucket(DEST)
    api_db = tmp_path / "api.db"
    try:
        with (
            MetadataServer(api_db).start() as server,
            MetadataClient(server.url, server.token) as api,
        ):
            migration = Migration(table, store, api, dest_bucket=DEST, executor=dask_client)
            migration.check()  # the cluster is on this machine: SQLite is fine
            result = migration.run()
            again = migration.run()
        assert stage_executors(result) == {
            "S3-Worker": "dask",
            "API-Worker": "dask",
            "Verifier": "thread",
        }
        rows = table.records()
        assert [r.status for r in rows] == [VERIFIED] * 30
        keys = sorted(r.dest_key or "" for r in rows)
        assert folder_keys(store.root, DEST) == keys  # one object per file, no stray part
        for row, original in zip(rows, seeded, strict=True):
            assert store.get(DEST, row.dest_key or "") == store.get(SOURCE, original.source_key)
        assert api_puts(api_db) == {r.id: (1, r.dest_key) for r in rows}  # one PUT each
        verification = result.verification
        assert (verification.expected, verification.success, verification.failed) == (30, 30, 0)
        assert result.report.balanced
        assert (again.verification.expected, again.report.outputs) == (0, 0)  # nothing left
        assert api_puts(api_db) == {r.id: (1, r.dest_key) for r in rows}
        assert folder_keys(store.root, DEST) == keys
    finally:
        table.close()


def test_a_migration_on_postgresql_and_s3_with_its_uploaders_on_the_cluster(
    dask_client: Any, pg_table_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    pytest.importorskip("boto3")
    from pipeline.migration import MetadataClient, MetadataServer, PostgresFileTable, S3Store

    source, dest = f"src-{uuid.uuid4().hex[:12]}", f"dst-{uuid.uuid4().hex[:12]}"
    table = PostgresFileTable(pg_table_url)
    store: ObjectStore = S3Store(
        endpoint_url=s3_endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    client = raw_s3(s3_endpoint)
    api_db = tmp_path / "api.db"
    try:
        seed_files(table, store, source, count=12, size=512, seed=4)
        store.create_bucket(dest)
        with (
            MetadataServer(api_db).start() as server,
            MetadataClient(server.url, server.token) as api,
        ):
            migration = Migration(
                table, store, api, dest_bucket=dest, s3_workers=3, api_workers=3,
                executor=dask_client,
            )  # fmt: skip
            migration.check()
            result = migration.run()
            again = migration.run()
        assert stage_executors(result)["S3-Worker"] == stage_executors(result)["API-Worker"]
        assert stage_executors(result)["API-Worker"] == "dask"
        rows = table.records()
        assert [r.status for r in rows] == [VERIFIED] * 12
        assert s3_keys(client, dest) == sorted(r.dest_key or "" for r in rows)
        for row in rows[::4]:  # the bytes of a few (the verifier checked every sha256)
            copied = client.get_object(Bucket=dest, Key=row.dest_key)["Body"].read()
            assert copied == client.get_object(Bucket=source, Key=row.source_key)["Body"].read()
        assert api_puts(api_db) == {r.id: (1, r.dest_key) for r in rows}
        assert result.report.balanced
        assert result.verification.success == 12
        assert again.verification.expected == 0
        assert s3_keys(client, dest) == sorted(r.dest_key or "" for r in rows)
        assert api_puts(api_db) == {r.id: (1, r.dest_key) for r in rows}
    finally:
        client.close()
        store.close()
        table.close()


# -- the tool ----------------------------------------------------------------------------


def has_files_table(path: Path) -> bool:
    if not path.exists():
        return False
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        found = connection.execute("SELECT name FROM sqlite_master WHERE name = 'files'")
        return found.fetchone() is not None


def tool_rows(root: Path) -> list[tuple[int, str, str]]:
    with closing(sqlite3.connect(root / "files.db", isolation_level=None)) as connection:
        return list(connection.execute("SELECT id, status, dest_key FROM files ORDER BY id"))


def test_the_tool_sends_its_uploaders_to_the_cluster_dask_names(
    dask_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = dask_client.scheduler.address  # tcp://127.0.0.1:PORT: workers on this machine
    argv = ["--root", str(tmp_path), "--files", "16", "--file-size", "1024", "--quiet"]
    argv += ["--api-latency", "0", "--json", "--dask", address]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    executors = {stage["name"]: stage["executor"] for stage in report["pipeline"]["stages"]}
    assert executors == {"S3-Worker": "dask", "API-Worker": "dask", "Verifier": "thread"}
    assert report["pipeline"]["balanced"] is True
    rows = tool_rows(tmp_path)
    assert [status for _, status, _ in rows] == [VERIFIED] * 16
    keys = sorted(key for _, _, key in rows)
    assert folder_keys(tmp_path / "buckets", DEST) == keys
    assert api_puts(tmp_path / "api.db") == {i: (1, key) for i, _, key in rows}
    assert main(argv) == 0  # a rerun: nothing left, nothing done again
    assert json.loads(capsys.readouterr().out)["verification"]["expected"] == 0
    assert folder_keys(tmp_path / "buckets", DEST) == keys
    assert api_puts(tmp_path / "api.db") == {i: (1, key) for i, _, key in rows}


def test_the_tool_refuses_sqlite_and_this_machines_addresses_for_workers_elsewhere(
    dask_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        cluster_module, "_ask_hosts", lambda client: {"tcp://10.1.2.3:4567": "another-machine"}
    )
    argv = ["--root", str(tmp_path), "--files", "4", "--quiet", "--dask"]
    assert main([*argv, dask_client.scheduler.address]) == 2
    err = capsys.readouterr().err
    assert "workers on other machines: another-machine (tcp://10.1.2.3:4567)" in err
    assert "SQLite" in err
    assert "use PostgreSQL: --db postgresql://" in err
    assert "the metadata API at http://127.0.0.1:" in err
    assert not has_files_table(tmp_path / "files.db")  # refused before anything was written
    assert not (tmp_path / "buckets").exists()


def test_the_tools_help_says_what_runs_where_and_that_sqlite_is_one_machines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--dask ADDRESS|local run the S3 and API uploaders" in text
    assert "the dispatcher and the verifier (the report) stay in this process" in text
    assert "Workers on other machines need parts they can reach: PostgreSQL" in text
    assert "An SQLite --db (a file is one machine's) or a 127.0.0.1/localhost address" in text
    assert "is then refused (exit 2)" in text


def test_a_migration_checks_an_address_executor_by_connecting_to_it(
    dask_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "_ask_hosts", lambda client: {"tcp://x:1": "elsewhere"})
    with SQLiteFileTable(tmp_path / "files.db") as table:
        address = "dask://" + dask_client.scheduler.address.removeprefix("tcp://")
        migration = Migration(table, LocalStore(tmp_path), _NoAPI(), executor=address)
        with pytest.raises(MigrationConfigError, match="SQLite"):
            migration.check_cluster()
        Migration(table, LocalStore(tmp_path), _NoAPI()).check_cluster()  # threads: nothing


class _NoAPI:
    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        raise AssertionError("not called")

    def get(self, file_id: int) -> dict[str, Any] | None:
        raise AssertionError("not called")

    def for_worker(self) -> _NoAPI:
        return self

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_the_tool_with_dask_local_on_postgresql_and_s3_migrates_each_file_once(
    tmp_path: Path, pg_table_url: str, s3_endpoint: str
) -> None:
    source, dest = f"src-{uuid.uuid4().hex[:12]}", f"dst-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    env["AWS_DEFAULT_REGION"] = REGION  # the LocalCluster's workers inherit them
    argv = [sys.executable, str(ROOT / "run_data_example.py"), "--root", str(tmp_path)]
    argv += ["--db", pg_table_url, "--s3-endpoint", s3_endpoint, "--source-bucket", source]
    argv += ["--dest-bucket", dest, "--files", "20", "--file-size", "1024", "--quiet", "--json"]
    argv += ["--api-latency", "0", "--dask", "local"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {s["name"]: s["executor"] for s in report["pipeline"]["stages"]}["S3-Worker"] == "dask"
    with closing(open_file_table(pg_table_url)) as table:
        rows = table.records()
    assert [r.status for r in rows] == [VERIFIED] * 20
    client = raw_s3(s3_endpoint)
    try:
        assert s3_keys(client, dest) == sorted(r.dest_key or "" for r in rows)
    finally:
        client.close()
    assert api_puts(tmp_path / "api.db") == {r.id: (1, r.dest_key) for r in rows}
    again = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["expected"] == 0
    assert api_puts(tmp_path / "api.db") == {r.id: (1, r.dest_key) for r in rows}


@pytest.mark.slow
def test_the_tool_with_dask_local_on_sqlite_migrates_each_file_once(tmp_path: Path) -> None:
    argv = [sys.executable, str(ROOT / "run_data_example.py"), "--root", str(tmp_path)]
    argv += ["--files", "20", "--file-size", "1024", "--api-latency", "0", "--dask", "local"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "Expected: 20\nProcessed: 20\nSuccess: 20\nFailed: 0" in done.stdout
    assert "Register worker" not in done.stderr  # Dask's own INFO lines stay out of ours
    rows = tool_rows(tmp_path)
    assert [status for _, status, _ in rows] == [VERIFIED] * 20
    assert folder_keys(tmp_path / "buckets", DEST) == sorted(key for _, _, key in rows)
    assert api_puts(tmp_path / "api.db") == {i: (1, key) for i, _, key in rows}
