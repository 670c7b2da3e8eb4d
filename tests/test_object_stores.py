"""The object stores' contract, against both stores: a folder, and a real S3 server.

One suite runs against both (``[local]``: :class:`LocalStore` in
``tmp_path``; ``[s3]``: :class:`S3Store` against the session's moto
server, see ``tests/s3server.py``, with buckets of fresh names for each
test): the round trip and its sha256, missing objects, copies (again onto
the same key, from a missing source), unsafe keys and bucket names that
touch nothing, ``check_bucket``, and workers copying from threads at once.

Then what each store has of its own: a local copy that fails midway leaves
nothing under the key. For S3: how the sha256 is stored; a copy above the
multipart threshold keeps it; a source deleted between the copy's head and
its copy; where ``head`` finds the sha256 (S3's checksum, the metadata, or
the bytes); ``get`` refusing bytes that do not match S3's checksum; names
refused without a request; ``check_bucket`` and ``create_bucket`` against
a closed port, a server that hangs up, wrong credentials and none, each a
quick :class:`MigrationConfigError` that says what to fix. Last, that the
moto server is found and run from the repository's ``.venv`` by a Python
without moto (a free-threaded 3.13t).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.migration import (
    LocalStore,
    MigrationConfigError,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    UnsafeKey,
)
from pipeline.migration import _store as store_module
from tests import s3server
from tests.helpers import Join
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, free_port

if TYPE_CHECKING:
    from pipeline.migration._s3 import S3Store

MiB = 1 << 20
UNSAFE_KEYS = ["../x", "a/../../x", "/abs", "a//b", "a\\b", "a\x00b", ".", "a/./b", "", "x" * 1025]
# Over S3's 1024 bytes of UTF-8 in 513 characters; a lone surrogate is no UTF-8 at all.
UNSAFE_KEYS += ["é" * 513, "a\udc80b"]
BAD_BUCKETS = ["", "ab", "UPPER", "a..b", "-abc", "abc-", "a/b", "x" * 64, "a_b"]


def info_of(data: bytes) -> ObjectInfo:
    return ObjectInfo(len(data), hashlib.sha256(data).hexdigest())


def short_repr(name: str) -> str:
    return repr(name) if len(name) < 20 else f"{len(name)}-chars"


def fresh_bucket(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


@dataclass
class Case:
    """A store with two fresh, empty buckets, and a way to see every object in a bucket."""

    store: ObjectStore
    src: str
    dst: str
    listing: Callable[[str], list[str]]  # every object (or stray file) in a bucket, by key


# --- the stores --------------------------------------------------------------------------


def raw_client(endpoint: str, **kwargs: Any) -> Any:
    """A plain boto3 client: to look at (or write) objects without the store in between."""
    boto3 = pytest.importorskip("boto3")
    options = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY, **kwargs}
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **options)


def s3_store(endpoint: str, **kwargs: Any) -> S3Store:
    """An :class:`S3Store` on ``endpoint`` with the tests' credentials (or ``kwargs``')."""
    pytest.importorskip("boto3")
    from pipeline.migration._s3 import S3Store

    options: dict[str, Any] = {"region": REGION, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    return S3Store(endpoint_url=endpoint, **{**options, **kwargs})


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Iterator[Any]:
    """A plain client of the session's server (thread-safe, so one for all the tests)."""
    client = raw_client(s3_endpoint)
    yield client
    client.close()


def s3_listing(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def local_listing(root: Path, bucket: str) -> list[str]:
    folder = root / bucket
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.fixture(scope="session")
def s3_shared_store(s3_endpoint: str) -> Iterator[S3Store]:
    """One store of the session's server; each test gets a worker of it (5 ms, not 150)."""
    store = s3_store(s3_endpoint)
    yield store
    store.close()


@pytest.fixture(params=["local", "s3"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    """Each store, with buckets ``src`` and ``dst`` created empty for the test."""
    src, dst = fresh_bucket("src"), fresh_bucket("dst")
    if request.param == "local":
        store: ObjectStore = LocalStore(tmp_path)
        listing: Callable[[str], list[str]] = partial(local_listing, tmp_path)
    else:
        store = request.getfixturevalue("s3_shared_store").for_worker()
        listing = partial(s3_listing, request.getfixturevalue("s3_client"))
    try:
        store.create_bucket(src)
        store.create_bucket(dst)
        yield Case(store, src, dst, listing)
    finally:
        store.close()


# --- the contract ------------------------------------------------------------------------


def test_put_get_head_round_trip_with_hashlibs_sha256(case: Case) -> None:
    data = os.urandom(100_000)
    assert case.store.put(case.src, "a/b/c.bin", data) == info_of(data)
    assert case.store.get(case.src, "a/b/c.bin") == data
    assert case.store.head(case.src, "a/b/c.bin") == info_of(data)
    assert case.listing(case.src) == ["a/b/c.bin"]


def test_an_empty_object_round_trips(case: Case) -> None:
    assert case.store.put(case.src, "empty", b"") == info_of(b"")
    assert case.store.get(case.src, "empty") == b""
    assert case.store.head(case.src, "empty") == info_of(b"")


def test_put_again_replaces_the_object(case: Case) -> None:
    case.store.put(case.src, "k", b"first")
    case.store.put(case.src, "k", b"second, longer")
    assert case.store.head(case.src, "k") == info_of(b"second, longer")
    assert case.listing(case.src) == ["k"]


def test_head_of_a_missing_key_is_none(case: Case) -> None:
    case.store.put(case.src, "there", b"x")
    assert case.store.head(case.src, "not-there") is None
    assert case.store.head(case.src, "there/below") is None


def test_get_of_a_missing_key_raises_object_missing(case: Case) -> None:
    with pytest.raises(ObjectMissing, match="not-there"):
        case.store.get(case.src, "not-there")


def test_create_bucket_again_changes_nothing(case: Case) -> None:
    case.store.put(case.src, "k", b"kept")
    case.store.create_bucket(case.src)
    assert case.store.get(case.src, "k") == b"kept"
    case.store.check_bucket(case.src)


def test_copy_copies_the_bytes_and_the_checksum(case: Case) -> None:
    data = os.urandom(200_000)
    case.store.put(case.src, "in/file.pdf", data)
    info = case.store.copy(case.src, "in/file.pdf", case.dst, "2026/01/02/out.pdf")
    assert info == info_of(data)
    assert case.store.get(case.dst, "2026/01/02/out.pdf") == data
    assert case.store.head(case.dst, "2026/01/02/out.pdf") == info_of(data)
    assert case.store.get(case.src, "in/file.pdf") == data  # a copy, not a move
    assert case.listing(case.dst) == ["2026/01/02/out.pdf"]


def test_copy_within_one_bucket(case: Case) -> None:
    case.store.put(case.src, "a", b"same bucket")
    assert case.store.copy(case.src, "a", case.src, "b") == info_of(b"same bucket")
    assert case.listing(case.src) == ["a", "b"]


def test_copy_from_a_missing_source_raises_and_creates_nothing(case: Case) -> None:
    with pytest.raises(ObjectMissing, match="gone"):
        case.store.copy(case.src, "gone", case.dst, "out")
    assert case.store.head(case.dst, "out") is None
    assert case.listing(case.dst) == []


def test_copying_twice_onto_one_key_leaves_one_object(case: Case) -> None:
    data = os.urandom(50_000)
    case.store.put(case.src, "k", data)
    first = case.store.copy(case.src, "k", case.dst, "out")
    second = case.store.copy(case.src, "k", case.dst, "out")
    assert first == second == info_of(data)
    assert case.store.get(case.dst, "out") == data
    assert case.listing(case.dst) == ["out"]


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=short_repr)
def test_unsafe_keys_raise_and_touch_nothing(case: Case, key: str, tmp_path: Path) -> None:
    case.store.put(case.src, "safe", b"x")
    store, src, dst = case.store, case.src, case.dst
    calls: list[Callable[[], object]] = [
        lambda: store.put(dst, key, b"data"),
        lambda: store.get(src, key),
        lambda: store.head(src, key),
        lambda: store.copy(src, key, dst, "out"),
        lambda: store.copy(src, "safe", dst, key),
    ]
    for call in calls:
        with pytest.raises(UnsafeKey):
            call()
    assert case.listing(src) == ["safe"]
    assert case.listing(dst) == []
    # Nor beside the buckets: the local store's root (the S3 case writes none).
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ([f"{src}/safe"] if isinstance(case.store, LocalStore) else [])


@pytest.mark.parametrize("bucket", BAD_BUCKETS, ids=short_repr)
def test_bad_bucket_names_raise_config_errors(case: Case, bucket: str) -> None:
    case.store.put(case.src, "safe", b"x")
    store, src = case.store, case.src
    calls: list[Callable[[], object]] = [
        lambda: store.check_bucket(bucket),
        lambda: store.create_bucket(bucket),
        lambda: store.put(bucket, "k", b"data"),
        lambda: store.get(bucket, "k"),
        lambda: store.head(bucket, "k"),
        lambda: store.copy(bucket, "k", src, "out"),
        lambda: store.copy(src, "safe", bucket, "out"),
    ]
    for call in calls:
        with pytest.raises(MigrationConfigError, match="is not valid"):
            call()
    assert case.listing(src) == ["safe"]


def test_check_bucket_passes_for_a_bucket_that_is_there(case: Case) -> None:
    case.store.check_bucket(case.src)
    case.store.check_bucket(case.dst)


def test_check_bucket_on_a_missing_bucket_names_it(case: Case) -> None:
    missing = fresh_bucket("missing")
    with pytest.raises(MigrationConfigError, match=f"{missing}.*does not exist"):
        case.store.check_bucket(missing)


def test_describe_says_where_the_store_is(case: Case) -> None:
    where = case.store.describe()
    assert where.startswith(("folder /", "S3 at http://127.0.0.1:"))


def test_workers_copy_from_four_threads_at_once(case: Case) -> None:
    objects = {f"in/{n:03d}": os.urandom(1000 + n) for n in range(100)}
    for key, data in objects.items():
        case.store.put(case.src, key, data)
    keys = sorted(objects)
    results: dict[str, ObjectInfo] = {}  # each thread writes its own keys

    def copy_share(share: list[str]) -> None:
        worker = case.store.for_worker()
        try:
            for key in share:
                results[key] = worker.copy(case.src, key, case.dst, f"out/{key}")
        finally:
            worker.close()

    threads = [Join(partial(copy_share, keys[n::4]), name=f"copier-{n}") for n in range(4)]
    for thread in threads:
        thread.join()
    assert results == {key: info_of(data) for key, data in objects.items()}
    assert case.listing(case.dst) == [f"out/{key}" for key in keys]
    for key, data in objects.items():
        assert case.store.head(case.dst, f"out/{key}") == info_of(data)


# --- LocalStore ---------------------------------------------------------------------------


def test_local_copy_failing_midway_leaves_nothing_under_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.create_bucket("src-bucket")
    store.create_bucket("dst-bucket")
    data = os.urandom(3 * store_module._CHUNK + 5)
    store.put("src-bucket", "big", data)
    store.put("dst-bucket", "other", b"kept")
    real_write = store_module._AtomicFile.write
    written: list[int] = []

    def write_then_fail(self: Any, chunk: bytes) -> None:
        if written:
            raise OSError("disk full (injected)")
        written.append(len(chunk))
        real_write(self, chunk)

    monkeypatch.setattr(store_module._AtomicFile, "write", write_then_fail)
    with pytest.raises(OSError, match="injected"):
        store.copy("src-bucket", "big", "dst-bucket", "2026/out")
    assert written == [store_module._CHUNK]  # it did fail midway, after one chunk
    assert store.head("dst-bucket", "2026/out") is None
    assert local_listing(tmp_path, "dst-bucket") == ["other"]
    # A put that fails keeps the object it would have replaced.
    with pytest.raises(OSError, match="injected"):
        store.put("dst-bucket", "other", b"new bytes that never land")
    assert store.get("dst-bucket", "other") == b"kept"
    assert local_listing(tmp_path, "dst-bucket") == ["other"]


def test_local_write_removes_what_a_killed_writer_left_and_keeps_a_live_writers_file(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    store.create_bucket("dst-bucket")
    folder = tmp_path / "dst-bucket" / "2026"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    host = store_module._WRITER
    killed = folder / f".out.{host}-{int(dead.stdout)}.{'0' * 32}.part"  # its process is gone
    live = folder / f".out.{host}-{os.getppid()}.{'1' * 32}.part"  # a live process writes it
    elsewhere = folder / f".out.otherhost-{int(dead.stdout)}.{'2' * 32}.part"  # not ours to judge
    other_key = folder / f".other.{host}-{int(dead.stdout)}.{'3' * 32}.part"  # another key's
    for path in (killed, live, elsewhere, other_key):
        path.write_bytes(b"half a copy")
    store.put("dst-bucket", "2026/out", b"whole")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["out", live.name, elsewhere.name, other_key.name]
    )
    assert store.get("dst-bucket", "2026/out") == b"whole"


# --- S3Store ------------------------------------------------------------------------------


def test_s3_put_and_copy_store_the_sha256_as_s3s_checksum_and_as_metadata(
    s3_endpoint: str, s3_client: Any
) -> None:
    bucket, data = fresh_bucket("put"), b"hello"
    store = s3_store(s3_endpoint)
    try:
        store.create_bucket(bucket)
        store.put(bucket, "k", data)
        store.copy(bucket, "k", bucket, "copy")
    finally:
        store.close()
    digest = hashlib.sha256(data)
    for key in ("k", "copy"):
        found = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert found["ChecksumSHA256"] == base64.b64encode(digest.digest()).decode()
        assert found["Metadata"] == {"sha256": digest.hexdigest()}


def test_s3_multipart_copy_keeps_the_checksum(s3_endpoint: str, s3_client: Any) -> None:
    src, dst = fresh_bucket("src"), fresh_bucket("dst")
    data = os.urandom(6 * MiB + 1)
    store = s3_store(s3_endpoint, multipart_threshold=5 * MiB)
    try:
        store.create_bucket(src)
        store.create_bucket(dst)
        store.put(src, "big", data)
        assert store.copy(src, "big", dst, "copy") == info_of(data)
        assert store.head(dst, "copy") == info_of(data)
        assert store.get(dst, "copy") == data
        assert store.copy(src, "big", dst, "copy") == info_of(data)  # again, onto it
    finally:
        store.close()
    found = s3_client.head_object(Bucket=dst, Key="copy")
    assert found["ETag"].endswith('-2"')  # it was copied in two parts: 5 MiB and 1 MiB + 1
    assert found["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert s3_listing(s3_client, dst) == ["copy"]


def test_s3_multipart_copy_from_a_missing_source(s3_endpoint: str, s3_client: Any) -> None:
    src, dst = fresh_bucket("src"), fresh_bucket("dst")
    store = s3_store(s3_endpoint, multipart_threshold=5 * MiB)
    try:
        store.create_bucket(src)
        store.create_bucket(dst)
        with pytest.raises(ObjectMissing):
            store.copy(src, "gone", dst, "copy")
    finally:
        store.close()
    assert s3_listing(s3_client, dst) == []


@pytest.mark.parametrize(
    ("threshold", "size", "request_name"),
    [(None, 1000, "CopyObject"), (5 * MiB, 6 * MiB, "UploadPartCopy")],
    ids=["single", "multipart"],
)
def test_s3_copy_of_a_source_deleted_after_its_head(
    s3_endpoint: str, s3_client: Any, threshold: int | None, size: int, request_name: str
) -> None:
    src, dst = fresh_bucket("src"), fresh_bucket("dst")
    options = {} if threshold is None else {"multipart_threshold": threshold}
    store = s3_store(s3_endpoint, **options)
    deleted = threading.Event()  # once: the multipart copy's parts run in several threads

    def delete_source(**kwargs: Any) -> None:
        if not deleted.is_set():
            deleted.set()
            s3_client.delete_object(Bucket=src, Key="k")

    try:
        store.create_bucket(src)
        store.create_bucket(dst)
        store.put(src, "k", os.urandom(size))
        store._client.meta.events.register(f"before-call.s3.{request_name}", delete_source)
        with pytest.raises(ObjectMissing, match="'k'"):
            store.copy(src, "k", dst, "out")
    finally:
        store.close()
    assert deleted.is_set()
    assert s3_listing(s3_client, dst) == []
    assert s3_client.list_multipart_uploads(Bucket=dst).get("Uploads", []) == []  # aborted


def test_s3_head_hashes_an_object_without_a_recorded_sha256(
    s3_endpoint: str, s3_client: Any
) -> None:
    bucket, data = fresh_bucket("foreign"), os.urandom(3 * MiB)
    s3_client.create_bucket(Bucket=bucket)
    # Written by another program: a CRC32 checksum (boto3's default), no metadata.
    s3_client.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="CRC32")
    store = s3_store(s3_endpoint)
    try:
        assert store.head(bucket, "k") == info_of(data)
        # The copy has S3's sha256 (asked for), so its head needs no download.
        assert store.copy(bucket, "k", bucket, "copy") == info_of(data)
    finally:
        store.close()
    found = s3_client.head_object(Bucket=bucket, Key="copy", ChecksumMode="ENABLED")
    assert found["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_s3_head_and_copy_believe_s3s_checksum_over_the_metadata(
    s3_endpoint: str, s3_client: Any
) -> None:
    bucket, data = fresh_bucket("lying"), b"the real bytes"
    s3_client.create_bucket(Bucket=bucket)
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    s3_client.put_object(
        Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="SHA256", Metadata={"sha256": wrong}
    )
    store = s3_store(s3_endpoint)
    try:
        assert store.head(bucket, "k") == info_of(data)
        assert store.copy(bucket, "k", bucket, "copy") == info_of(data)
        assert store.head(bucket, "copy") == info_of(data)
    finally:
        store.close()


def test_s3_get_refuses_bytes_that_do_not_match_s3s_checksum(
    s3_endpoint: str, s3_client: Any
) -> None:
    # moto stores the checksum it is sent without checking it (S3 would
    # refuse the put): a stand-in for bytes that changed after they were
    # written. botocore checks what get reads against it.
    from botocore.exceptions import FlexibleChecksumError  # type: ignore[import-untyped]

    bucket = fresh_bucket("corrupt")
    s3_client.create_bucket(Bucket=bucket)
    other = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    s3_client.put_object(
        Bucket=bucket, Key="k", Body=b"bytes", ChecksumAlgorithm="SHA256", ChecksumSHA256=other
    )
    store = s3_store(s3_endpoint)
    try:
        with pytest.raises(FlexibleChecksumError):
            store.get(bucket, "k")
    finally:
        store.close()


def test_s3_unsafe_keys_make_no_request() -> None:
    # Against a closed port, any request would fail with a connection error.
    store = s3_store(f"http://127.0.0.1:{free_port()}", max_attempts=1)
    try:
        for key in UNSAFE_KEYS:
            with pytest.raises(UnsafeKey):
                store.put("bucket", key, b"x")
            with pytest.raises(UnsafeKey):
                store.copy("bucket", "fine", "bucket", key)
        with pytest.raises(MigrationConfigError, match="is not valid"):
            store.check_bucket("NO")
    finally:
        store.close()


def test_s3_check_bucket_on_a_closed_port_fails_fast() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = s3_store(endpoint)  # three attempts for objects; check_bucket tries once
    started = time.monotonic()
    try:
        with pytest.raises(
            MigrationConfigError, match=rf"cannot reach S3 at {re.escape(endpoint)}"
        ) as raised:
            store.check_bucket("some-bucket")
    finally:
        store.close()
    assert time.monotonic() - started < 5.0
    assert "--s3-endpoint" in str(raised.value)


def test_s3_create_bucket_on_a_closed_port_is_a_config_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = s3_store(endpoint)
    started = time.monotonic()
    try:
        with pytest.raises(
            MigrationConfigError, match=rf"cannot reach S3 at {re.escape(endpoint)}"
        ):
            store.create_bucket("some-bucket")
    finally:
        store.close()
    assert time.monotonic() - started < 5.0


def test_s3_check_bucket_tries_once() -> None:
    # A server that hangs up on every connection: objects' requests would be
    # tried three times; check_bucket's, once.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()
    connections: list[int] = []

    def hang_up() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(1)
            connection.close()

    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    acceptor = Join(hang_up, name="hang-up")
    store = s3_store(endpoint)
    try:
        with pytest.raises(MigrationConfigError, match="cannot reach"):
            store.check_bucket("some-bucket")
    finally:
        store.close()
        done.set()
        acceptor.join()
        listener.close()
    assert connections == [1]


def test_s3_setup_calls_with_wrong_credentials(s3_auth_endpoint: str) -> None:
    probe = raw_client(s3_auth_endpoint, aws_access_key_id="wrong", aws_secret_access_key="wrong")
    try:
        probe.list_buckets()
    except Exception:  # refused: this moto checks credentials
        pass
    else:
        pytest.skip("this moto server does not check credentials")
    finally:
        probe.close()
    store = s3_store(s3_auth_endpoint, access_key="wrong", secret_key="wrong")
    try:
        with pytest.raises(MigrationConfigError) as raised:
            store.check_bucket("some-bucket")
        with pytest.raises(MigrationConfigError) as refused:
            store.create_bucket("some-bucket")
    finally:
        store.close()
    message = str(raised.value)
    assert "no access to bucket 'some-bucket'" in message
    assert "access key id is not known" in message
    assert "AWS_ACCESS_KEY_ID" in message
    message = str(refused.value)
    assert "refused to create bucket 'some-bucket'" in message
    assert "access key id is not known" in message
    assert "AWS_ACCESS_KEY_ID" in message


def test_s3_check_bucket_without_credentials(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    store = s3_store(s3_endpoint, access_key=None, secret_key=None)
    try:
        with pytest.raises(MigrationConfigError, match=r"no usable AWS credentials.*AWS_ACCESS"):
            store.check_bucket("some-bucket")
    finally:
        store.close()


def test_s3_copy_of_a_known_size_is_one_request_and_still_the_copys_own_sha256(
    s3_endpoint: str,
) -> None:
    src, dst = fresh_bucket("known-src"), fresh_bucket("known-dst")
    store = s3_store(s3_endpoint)
    calls: list[str] = []
    try:
        store.create_bucket(src)
        store.create_bucket(dst)
        data = os.urandom(4096)
        store.put(src, "a", data)
        store._client.meta.events.register(
            "before-call.s3", lambda model, **_: calls.append(model.name)
        )
        assert store.copy(src, "a", dst, "b", size=len(data)) == info_of(data)
        assert calls == ["CopyObject"]  # no HeadObject of the source first
        calls.clear()
        assert store.copy(src, "a", dst, "c") == info_of(data)
        assert calls == ["HeadObject", "CopyObject"]  # without the size: it looks first
        calls.clear()
        with pytest.raises(ObjectMissing, match="'gone'"):
            store.copy(src, "gone", dst, "d", size=10)
        assert store.head(dst, "d") is None
        # A wrong size is returned as given, but the sha256 is the copy's: a
        # caller checking it against its record (the migration does) sees.
        assert store.copy(src, "a", dst, "e", size=7).sha256 == info_of(data).sha256
    finally:
        store.close()


def test_s3_over_http_needs_no_ca_bundle(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine sets AWS_CA_BUNDLE; plain http must not read it, even if it is not there.
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    bucket = fresh_bucket("http")
    store = s3_store(s3_endpoint)
    try:
        store.create_bucket(bucket)
        store.check_bucket(bucket)
        assert store.put(bucket, "k", b"plain") == store.head(bucket, "k") == info_of(b"plain")
    finally:
        store.close()


def test_s3_for_worker_has_a_client_of_its_own(s3_endpoint: str) -> None:
    bucket = fresh_bucket("workers")
    store = s3_store(s3_endpoint)
    try:
        store.create_bucket(bucket)
        worker = store.for_worker()
        assert worker is not store
        assert worker._client is not store._client
        assert worker.describe() == store.describe() == f"S3 at {s3_endpoint}"
        worker.put(bucket, "k", b"from the worker")
        worker.close()
        assert store.get(bucket, "k") == b"from the worker"  # closing one leaves the other
    finally:
        store.close()


def test_s3_create_bucket_outside_us_east_1_twice(s3_endpoint: str, s3_client: Any) -> None:
    bucket = fresh_bucket("eu")
    store = s3_store(s3_endpoint, region="eu-west-1")
    try:
        store.create_bucket(bucket)
        store.create_bucket(bucket)  # S3 says BucketAlreadyOwnedByYou outside us-east-1
        store.check_bucket(bucket)
    finally:
        store.close()
    assert s3_client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"


def test_s3_store_arguments_are_checked_at_once() -> None:
    pytest.importorskip("boto3")
    from pipeline.migration._s3 import S3Store

    with pytest.raises(ValueError, match="multipart_threshold"):
        S3Store(multipart_threshold=5 * MiB - 1)
    with pytest.raises(ValueError, match="max_pool_connections"):
        S3Store(max_pool_connections=0)
    with pytest.raises(MigrationConfigError, match=r"not a url.*--s3-endpoint"):
        S3Store(endpoint_url="not a url")
    aws = S3Store(region="eu-west-1", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        assert aws.describe() == "S3 at AWS (eu-west-1)"
    finally:
        aws.close()


# --- the server the tests use --------------------------------------------------------------


def test_moto_server_is_found_and_runs_without_moto_in_this_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A free-threaded Python has boto3 but no moto: the repository's .venv serves.
    own = s3server.REPO_ROOT / ".venv" / "bin" / "moto_server"
    if not os.access(own, os.X_OK):
        pytest.skip(f"no {own} to start")
    monkeypatch.setattr(s3server, "_has_moto_server", lambda: False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3.13t"))
    monkeypatch.setenv(s3server.ENV_COMMAND, "'/opt/my moto/moto_server' --reload")
    assert s3server.find_moto_server() == ["/opt/my moto/moto_server", "--reload"]
    monkeypatch.delenv(s3server.ENV_COMMAND)
    command = s3server.find_moto_server()
    assert command == [str(own)]
    server = s3server.MotoServer(command)
    try:
        server.start()
        client = raw_client(server.url)
        try:
            assert client.list_buckets()["Buckets"] == []
        finally:
            client.close()
        process = server.process
    finally:
        server.stop()
    assert process is not None
    assert process.returncode is not None  # waited for: no zombie
    with pytest.raises(OSError):  # and nothing listens there any more
        socket.create_connection((server.host, server.port), timeout=1.0).close()
