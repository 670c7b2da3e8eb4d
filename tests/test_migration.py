"""The file migration's stages over a real SQLite table and folder store (the API in memory here).

The HTTP API, S3 and PostgreSQL have their own tests; the tool end to end,
over real HTTP, is in tests/test_migration_tool.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline import Pipeline, PipelineCancelled, Retry
from pipeline.migration import (
    API_UPLOADED,
    FAILED,
    READY,
    S3_COPIED,
    VERIFIED,
    ApiError,
    ApiUnavailable,
    FileRecord,
    LocalStore,
    Migration,
    SQLiteFileTable,
    seed_files,
)
from pipeline.stages import InMemoryAPI, claim_files

SOURCE, DEST = "source-bucket-proj", "dest-bucket-proj"


class CountingStore(LocalStore):
    """The folder store, counting the copies made."""

    copies = 0

    def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, **options: Any
    ) -> Any:
        type(self).copies += 1
        return super().copy(src_bucket, src_key, dst_bucket, dst_key, **options)


class CountingAPI(InMemoryAPI):
    """The in-memory API, counting the puts per file id, optionally failing some."""

    def __init__(self, fail: Mapping[int, BaseException] | None = None) -> None:
        super().__init__()
        self.fail = dict(fail or {})
        self.tries: dict[int, int] = {}

    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        with self.lock:
            self.tries[file_id] = self.tries.get(file_id, 0) + 1
        if file_id in self.fail:
            raise self.fail[file_id]
        return super().put(file_id, record)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[SQLiteFileTable, LocalStore]]:
    table = SQLiteFileTable(tmp_path / "files.db")
    store = LocalStore(tmp_path / "buckets")
    store.create_bucket(DEST)
    yield table, store
    table.close()


def destination_objects(root: Path) -> list[str]:
    """Every object in the destination bucket, counted on disk (temporary files would show)."""
    bucket = root / DEST
    return sorted(str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file())


def migration(
    table: SQLiteFileTable, store: LocalStore, api: InMemoryAPI, **options: Any
) -> Migration:
    retry = Retry(attempts=3, backoff=0.001, jitter=0.0, on=(ApiUnavailable,))
    return Migration(table, store, api, dest_bucket=DEST, api_retry=retry, **options)


def test_every_file_is_copied_registered_and_verified_once(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    table, store = parts
    seeded = seed_files(table, store, SOURCE, count=40, size=2048, seed=1)
    api = CountingAPI()
    result = migration(table, store, api, s3_workers=3, api_workers=2).run()
    outputs = result.report.outputs
    assert outputs == 40
    rows = table.records()
    assert [r.status for r in rows] == [VERIFIED] * 40
    # At the destination: one object per file, under the key its row records, with its bytes.
    assert destination_objects(store.root) == sorted(r.dest_key or "" for r in rows)
    for row, original in zip(rows, seeded, strict=True):
        assert store.get(DEST, row.dest_key or "") == store.get(SOURCE, original.source_key)
    assert api.tries == {r.id: 1 for r in rows}  # one PUT per file
    assert {i: rec["dest_key"] for i, rec in api.records.items()} == {
        r.id: r.dest_key for r in rows
    }
    verification = result.verification
    assert (verification.expected, verification.success, verification.failed) == (40, 40, 0)


def test_keys_follow_the_seed_shape(parts: tuple[SQLiteFileTable, LocalStore]) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=2, size=16)
    migration(table, store, InMemoryAPI()).run()
    for row in table.records():
        parts_of_key = (row.dest_key or "").split("/")
        assert len(parts_of_key) == 7
        assert all(p.isdigit() for p in parts_of_key[:6])
        assert len(parts_of_key[6]) == 36  # a uuid4


def test_bad_files_fail_with_their_reason_and_the_others_go_on(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=10, size=256, seed=2)
    rows = table.records()
    (store.root / SOURCE / rows[1].source_key).unlink()  # a missing source object
    (store.root / SOURCE / rows[2].source_key).write_bytes(b"not the bytes")  # a checksum mismatch
    table.add([FileRecord(999, "evil.pdf", 1, "00", SOURCE, "../../etc/passwd")])  # escapes
    api = CountingAPI(
        fail={rows[3].id: ApiUnavailable(503, "down"), rows[4].id: ApiError(400, "no")}
    )
    result = migration(table, store, api).run()
    failed = {r.id: r.last_error or "" for r in table.records(FAILED)}
    assert set(failed) == {rows[1].id, rows[2].id, 999, rows[3].id, rows[4].id}
    assert "ObjectMissing" in failed[rows[1].id]
    assert "ChecksumMismatch" in failed[rows[2].id]
    assert "UnsafeKey" in failed[999]
    assert "503" in failed[rows[3].id]
    assert api.tries[rows[3].id] == 3  # retried: 503 is worth it
    assert api.tries[rows[4].id] == 1  # not retried: 400 is not
    assert len(table.records(VERIFIED)) == 6
    assert not (store.root.parent / "etc").exists()
    # The books: each failure is a dead letter, listed in the verification report.
    report = result.report
    assert len(report.dead_letters) == 5
    assert report.balanced
    verification = result.verification
    assert (verification.expected, verification.success, verification.failed) == (11, 6, 5)
    assert sorted(f.id for f in verification.failures) == sorted(failed)
    assert "ObjectMissing" in verification.summary()


def test_a_rerun_does_only_what_is_left(parts: tuple[SQLiteFileTable, LocalStore]) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=30, size=512, seed=3)
    api = CountingAPI()
    first = migration(table, store, api)
    pipeline_, verifier = first.pipeline(30)
    seen = threading.Event()
    count = [0]

    def cancel_after_ten(record: FileRecord) -> None:
        count[0] += 1
        if count[0] == 10:
            seen.set()
            pipeline_.cancel()

    pipeline_.each(cancel_after_ten)
    with pytest.raises(PipelineCancelled):
        pipeline_.run(claim_files(table), observers=[verifier.failures])
    table.release()
    assert seen.is_set()
    done_first = {r.id for r in table.records(VERIFIED)}
    assert 10 <= len(done_first) < 30
    copies_first = len(destination_objects(store.root))
    # The rerun: another migrator (a new owner) finishes the rest.
    rerun_table = SQLiteFileTable(table.path)
    result = migration(rerun_table, store, api).run()
    rerun_table.close()
    assert result.verification.expected == 30 - len(done_first)
    assert result.verification.success == 30 - len(done_first)
    rows = table.records()
    assert [r.status for r in rows] == [VERIFIED] * 30
    objects = destination_objects(store.root)
    assert objects == sorted(r.dest_key or "" for r in rows)  # no duplicate object
    assert len(objects) >= copies_first
    assert set(api.records) == {r.id for r in rows}


def test_a_file_with_its_steps_done_is_not_done_again(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    # A crash after the copy was written to the table: the rerun does not copy again.
    table, store = parts
    seed_files(table, store, SOURCE, count=3, size=64, seed=4)
    [row] = table.claim(1)
    key = table.assign_dest_key(row.id, "2026/01/01/00/00/00/kept")
    store.copy(SOURCE, row.source_key, DEST, key)
    table.advance(row.id, S3_COPIED)
    table.release()
    api = CountingAPI()
    counting = CountingStore(store.root)
    CountingStore.copies = 0
    migration(table, counting, api).run()
    assert CountingStore.copies == 2  # the other two files only
    assert table.records()[0].dest_key == key
    assert destination_objects(store.root).count(key) == 1
    assert len(destination_objects(store.root)) == 3
    assert [r.status for r in table.records()] == [VERIFIED] * 3


def test_a_file_another_migrator_took_over_is_dropped_not_finished(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=1, size=64)
    ours = SQLiteFileTable(table.path, owner="ours", lease_seconds=0.05)
    [record] = ours.claim(1)
    theirs = SQLiteFileTable(table.path, owner="theirs", lease_seconds=60)
    taken: list[FileRecord] = []
    while not taken:  # the lease runs out in 50 ms
        taken = theirs.claim(1)
    api = CountingAPI()
    from pipeline.stages import APIUploader, S3Uploader

    outputs = Pipeline[FileRecord]().add(S3Uploader(store, ours, dest_bucket=DEST)).run([record])
    assert outputs.outputs == []  # handed over: ours did nothing with it
    assert destination_objects(store.root) == []
    assert table.records()[0].status == READY
    # Nor does the API stage register a file that is no longer ours.
    record.status, record.dest_bucket, record.dest_key = S3_COPIED, DEST, "k"
    outputs = Pipeline[FileRecord]().add(APIUploader(api, ours)).run([record])
    assert outputs.outputs == []
    assert api.tries == {}
    ours.close()
    theirs.close()


def test_the_dispatcher_waits_for_a_dead_migrators_leases_then_takes_its_files(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=3, size=64)
    dead = SQLiteFileTable(table.path, owner="dead", lease_seconds=0.3)
    held = [r.id for r in dead.claim(2)]  # and never heard of again
    dead.close()
    ours = SQLiteFileTable(table.path, owner="ours")
    count, first_ends = ours.held_by_others()
    assert count == 2
    assert 0.0 < first_ends <= 0.3
    claimed = [r.id for r in claim_files(ours, wait=False)]
    assert claimed == [102]  # without waiting: only the free one
    assert ours.release() == 1
    claimed = [r.id for r in claim_files(ours)]
    assert sorted(claimed) == sorted([102, *held])  # it waited out the 0.3 s leases
    ours.close()


def test_the_dispatcher_ends_once_another_migrator_finishes_what_it_holds(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=2, size=64)
    other = SQLiteFileTable(table.path, owner="other", lease_seconds=3600)
    [first, second] = other.claim(2)
    ours = SQLiteFileTable(table.path, owner="ours")
    dispatched: list[int] = []
    waiting = threading.Event()

    def dispatch() -> None:
        for record in claim_files(ours):
            dispatched.append(record.id)
        waiting.set()

    thread = threading.Thread(target=dispatch, name="test-dispatcher")
    thread.start()
    try:
        assert not waiting.wait(0.3)  # the other migrator's rows are unfinished: it waits
        other.advance(first.id, VERIFIED)
        other.advance(second.id, FAILED, error="gone")
        assert waiting.wait(10.0)  # both finished: nothing left to wait for
    finally:
        other.release()
        thread.join(10.0)
    assert not thread.is_alive()
    assert dispatched == []
    other.close()
    ours.close()


def test_setting_stop_ends_a_waiting_dispatcher(parts: tuple[SQLiteFileTable, LocalStore]) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=1, size=64)
    other = SQLiteFileTable(table.path, owner="other", lease_seconds=3600)
    other.claim(1)
    ours = SQLiteFileTable(table.path, owner="ours")
    stop = threading.Event()
    ended = threading.Event()

    def dispatch() -> None:
        list(claim_files(ours, stop=stop))
        ended.set()

    thread = threading.Thread(target=dispatch, name="test-dispatcher")
    thread.start()
    assert not ended.wait(0.2)
    stop.set()
    assert ended.wait(10.0)
    thread.join(10.0)
    assert not thread.is_alive()
    other.close()
    ours.close()


def test_the_api_stage_renews_a_lease_only_past_half_its_length(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    from pipeline.stages import APIUploader

    class CountingTable(SQLiteFileTable):
        renewals: list[int] = []  # noqa: RUF012 (one list for the class and its workers' copies)

        def for_worker(self) -> CountingTable:
            return CountingTable(self.path, owner=self.owner, lease_seconds=self.lease_seconds)

        def renew(self, file_id: int) -> None:
            type(self).renewals.append(file_id)
            super().renew(file_id)

    table, store = parts
    seed_files(table, store, SOURCE, count=2, size=64)
    ours = CountingTable(table.path, owner="ours", lease_seconds=60)
    fresh, stale = ours.claim(2)  # leased now
    for record in (fresh, stale):
        ours.advance(record.id, S3_COPIED)
        record.status, record.dest_bucket, record.dest_key = S3_COPIED, DEST, f"k{record.id}"
    stale.leased_at -= 31  # as if set 31 s ago: past half of 60 s
    api = CountingAPI()
    run = Pipeline[FileRecord]().add(APIUploader(api, ours)).run([fresh, stale])
    assert [r.status for r in run.outputs] == [API_UPLOADED, API_UPLOADED]
    assert CountingTable.renewals == [stale.id]  # the fresh lease needed no statement
    assert sorted(api.tries) == [fresh.id, stale.id]
    ours.close()


def test_the_verifier_counts_every_file_with_several_workers(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    from pipeline.stages import APIUploader, S3Uploader, Verifier

    table, store = parts
    seed_files(table, store, SOURCE, count=120, size=32, seed=5)
    api = InMemoryAPI()
    verifier = Verifier(store, api, table, expected=120)
    pipeline_ = (
        Pipeline[FileRecord]()
        .add(S3Uploader(store, table, dest_bucket=DEST), workers=4)
        .add(APIUploader(api, table), workers=4)
        .add(verifier, workers=4)
    )
    outputs = pipeline_.run(claim_files(table), observers=[verifier.failures]).outputs
    assert len(outputs) == 120
    report = verifier.report()
    assert (report.processed, report.success, report.failed) == (120, 120, 0)
    assert len(table.records(VERIFIED)) == 120


def test_the_plan_says_what_a_run_would_do_and_changes_nothing(
    parts: tuple[SQLiteFileTable, LocalStore],
) -> None:
    table, store = parts
    seed_files(table, store, SOURCE, count=3, size=64)
    [row] = table.claim(1)
    table.advance(row.id, API_UPLOADED)
    table.release()
    plan = migration(table, store, InMemoryAPI()).plan()
    assert [(p.name, p.steps) for p in plan] == [
        ("file_100.pdf", ("verify",)),
        ("file_101.pdf", ("copy", "register", "verify")),
        ("file_102.pdf", ("copy", "register", "verify")),
    ]
    assert destination_objects(store.root) == []
    assert [r.attempts for r in table.records()] == [1, 0, 0]
