"""Object storage for the migration: an interface and its local-folder store.

An :class:`ObjectStore` holds buckets of objects under keys, as S3 does. The
migration needs five things of it: make sure a bucket is there, put an
object (to seed a source bucket), read one, look one up (its size and
sha256, or ``None``), and copy one from bucket to bucket, on the server
where the store can (S3's ``CopyObject``). Two stores ship:

- :class:`LocalStore`, the embedded default: a bucket is a folder under a
  root folder, an object a file. Every write is atomic (a temporary file in
  the same folder, then a rename), so a migrator killed mid-copy leaves no
  half object under the key; the checksum is the sha256 of the bytes. The
  temporary file of a killed writer (a hidden ``.NAME.HOST-PID.*.part``) is
  removed by the next write of that key, once its process is gone.
- ``S3Store`` (the ``s3`` extra, boto3) for any S3-compatible endpoint.

Keys and bucket names come from the database, so they are not trusted:
:func:`check_key` refuses a key that would leave its bucket.

>>> import tempfile
>>> store = LocalStore(tempfile.mkdtemp())
>>> store.create_bucket("src"); store.create_bucket("dst")
>>> store.put("src", "a/b.txt", b"hello").size
5
>>> store.copy("src", "a/b.txt", "dst", "2026/x").sha256 == store.head("src", "a/b.txt").sha256
True
>>> store.head("dst", "missing") is None
True
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ._errors import MigrationConfigError, ObjectMissing, UnsafeKey

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "check_bucket_name", "check_key"]

_CHUNK = 1 << 20
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_KEY = 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows of one object: its size in bytes and its sha256 (hex)."""

    size: int
    sha256: str


def check_key(key: object) -> str:
    """Return ``key`` if it names an object inside its bucket; raise :class:`UnsafeKey`.

    Refused: an empty key, one over 1024 bytes of UTF-8 (S3's limit) or not
    UTF-8 at all (a lone surrogate), an absolute path, a
    ``.`` or ``..`` component, an empty component (``a//b``), a backslash,
    a NUL or other control character.

    >>> check_key("2026/01/02/x.pdf")
    '2026/01/02/x.pdf'
    >>> check_key("../x")
    Traceback (most recent call last):
    ...
    pipeline.migration._errors.UnsafeKey: unsafe key '../x': a '..' component leaves the bucket
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKey(f"unsafe key {key!r}: a key is a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafeKey(f"unsafe key {key[:40]!r}: not valid UTF-8 (a lone surrogate)") from None
    if size > MAX_KEY:
        raise UnsafeKey(f"unsafe key {key[:40]!r}...: longer than {MAX_KEY} bytes of UTF-8")
    if key.startswith("/"):
        raise UnsafeKey(f"unsafe key {key!r}: an absolute path")
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise UnsafeKey(f"unsafe key {key!r}: a backslash or a control character")
    for part in key.split("/"):
        if part in {".", ".."}:
            raise UnsafeKey(f"unsafe key {key!r}: a {part!r} component leaves the bucket")
        if not part:
            raise UnsafeKey(f"unsafe key {key!r}: an empty path component")
    return key


def check_bucket_name(bucket: object) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name (3-63 of ``a-z 0-9 . -``)."""
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        message = (
            f"bucket name {bucket!r} is not valid: 3 to 63 lowercase letters, digits, '.' or '-'"
        )
        raise MigrationConfigError(message)
    return bucket


class ObjectStore(ABC):
    """Buckets of objects under keys: what the migration's stages copy and check.

    A store may be used by many workers at once. :meth:`for_worker` returns
    the object one worker should use (S3: its own client, made in the
    stage's ``on_start``); :meth:`close` releases what it holds.

    A store pickles as its configuration, never a connection: a stage sent
    to a worker process or a Dask cluster carries its stores, and each copy
    connects where it runs, when first used.
    """

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs and errors (``"folder /data"``, ``"S3 at http://..."``)."""

    @abstractmethod
    def check_bucket(self, bucket: str) -> None:
        """Raise :class:`MigrationConfigError`, naming the bucket and store, if it is missing."""

    @abstractmethod
    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` if it is not there."""

    @abstractmethod
    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key``, atomically; return its size and sha256."""

    @abstractmethod
    def get(self, bucket: str, key: str) -> bytes:
        """Return the object's bytes; raise :class:`ObjectMissing` if it is not there."""

    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Return the object's size and sha256, or ``None`` if it is not there."""

    @abstractmethod
    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        size: int | None = None,
    ) -> ObjectInfo:
        """Copy an object between buckets, atomically; :class:`ObjectMissing` without a source.

        Copying onto a key that already holds the same bytes changes nothing
        a reader can see, so a rerun may copy again. ``size``: the source's
        size, when the caller knows it (the files table does), which spares
        a store the look it would take first (S3: a ``HeadObject``). The
        returned sha256 is always the copy's own.
        """

    def for_worker(self) -> ObjectStore:
        """The store one worker uses (this one, unless the store has per-thread clients)."""
        return self

    def close(self) -> None:  # noqa: B027 (a store with nothing to release needs no close)
        """Release what the store holds (connections); it is not used afterwards."""


class LocalStore(ObjectStore):
    """Buckets as folders under ``root``: the migration's embedded object store.

    Writes go to a temporary file beside the target and are renamed into
    place, so a reader (or a migrator resuming after ``kill -9``) sees the
    whole object or none. Checksums are computed from the bytes.

    It pickles as its root folder, which is one machine's: stages on other
    machines (a Dask cluster) see the same buckets only if the folder is
    one they share (a network filesystem) under the same path.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def _bucket(self, bucket: str) -> Path:
        return self.root / check_bucket_name(bucket)

    def _path(self, bucket: str, key: str) -> Path:
        return self._bucket(bucket) / check_key(key)

    def check_bucket(self, bucket: str) -> None:
        if not self._bucket(bucket).is_dir():
            message = f"bucket {bucket!r} does not exist in the {self.describe()}"
            raise MigrationConfigError(message)

    def create_bucket(self, bucket: str) -> None:
        self._bucket(bucket).mkdir(parents=True, exist_ok=True)

    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        target = self._path(bucket, key)
        with _AtomicFile(target) as out:
            out.write(data)
        return ObjectInfo(len(data), hashlib.sha256(data).hexdigest())

    def get(self, bucket: str, key: str) -> bytes:
        path = self._path(bucket, key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(f"no object {key!r} in bucket {bucket!r}") from None

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self._path(bucket, key)
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return ObjectInfo(size, digest.hexdigest())

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        size: int | None = None,
    ) -> ObjectInfo:
        # `size` is not needed: the bytes are read and counted here.
        source_path = self._path(src_bucket, src_key)
        target = self._path(dst_bucket, dst_key)
        digest = hashlib.sha256()
        size = 0
        try:
            source = source_path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(f"no object {src_key!r} in bucket {src_bucket!r}") from None
        with source, _AtomicFile(target) as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return ObjectInfo(size, digest.hexdigest())


class _AtomicFile:
    """A file written beside ``target`` and renamed onto it when the block ends well.

    The temporary file's name says which process writes it (host and pid),
    so the next successful write of the same key can remove what a writer
    killed mid-copy left behind, and nothing a live writer still holds.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.with_name(
            f".{target.name}.{_WRITER}-{os.getpid()}.{uuid.uuid4().hex}.part"
        )

    def __enter__(self) -> _AtomicFile:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.temporary.open("xb")
        return self

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.temporary, self.target)
            _remove_dead_writers_files(self.target)
        else:
            self.temporary.unlink(missing_ok=True)


# The host part of a temporary file's name: the host name, in characters a
# file name and the pattern below can carry.
_WRITER = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _remove_dead_writers_files(target: Path) -> None:
    """Remove the temporary files for ``target`` left by dead processes of this host."""
    prefix = f".{target.name}."
    pattern = re.compile(rf"{re.escape(prefix)}{_WRITER}-(\d+)\.[0-9a-f]{{32}}\.part")
    try:
        siblings = [path for path in target.parent.iterdir() if path.name.startswith(prefix)]
    except OSError:
        return  # tidying is a courtesy: the object itself is written
    for path in siblings:
        written_by = pattern.fullmatch(path.name)
        if written_by is not None and not _alive(int(written_by.group(1))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, as another user's process (or we cannot tell: keep it)
    return True
