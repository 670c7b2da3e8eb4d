"""The S3 object store: :class:`S3Store`, on boto3, for AWS or any S3-compatible endpoint.

This module owns everything the migration says to S3: the boto3 clients
(one per worker, from one session), the timeouts and retries, how an
object's sha256 is stored and read back, server-side copies (one
``CopyObject``, or a multipart ``UploadPartCopy`` above a threshold), and
the translation of S3's answers into the migration's errors.

How the sha256 is kept. :meth:`S3Store.put` sends it twice, from one
digest of the bytes: as S3's own checksum (``x-amz-checksum-sha256``,
which S3 checks against the bytes it receives and refuses on a mismatch)
and as user metadata (``x-amz-meta-sha256``, hex). Both are needed.
S3's checksum is the stronger record, being computed by the server, but
for a multipart object S3 keeps only a checksum of the parts' checksums
(``...-N``, "COMPOSITE"), which is not the sha256 of the bytes; the
metadata travels with every copy, single or multipart, unchanged. So
:meth:`S3Store.head` takes S3's checksum where it covers the whole object,
else the metadata, else (an object some other program wrote, with
neither) it reads the object and hashes it. moto, the S3 server the tests
run against, keeps both records as S3 does, though it checks neither.

The module is long (about 670 lines) because S3's answers are: most of it
turns botocore's errors into ones that say what to fix. Were it split, the
error translation (``_code``, ``_is_missing``, the config errors) would be
the part to move.

Every key passes :func:`~pipeline.migration.check_key` and every bucket
:func:`~pipeline.migration.check_bucket_name` before a request is made:
names come from the database and are not trusted.

Example (needs a server, so not run as a doctest)::

    store = S3Store(endpoint_url="http://127.0.0.1:9000")
    store.check_bucket("src-bucket")   # MigrationConfigError names what to fix
    worker = store.for_worker()        # in a stage's on_start: its own client
    info = worker.copy("src-bucket", "a/b.pdf", "dest-bucket", "2026/01/02/x.pdf")
    worker.close()
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Mapping
from contextlib import closing
from typing import Any

import boto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ._errors import MigrationConfigError, ObjectMissing
from ._store import ObjectInfo, ObjectStore, check_bucket_name, check_key

__all__ = ["S3Store"]

MiB = 1 << 20
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
MIN_PART = 5 * MiB  # S3's smallest part (but the last)
MAX_COPY_OBJECT = 5 << 30  # the largest object one CopyObject may copy
CHECK_TIMEOUT = 5.0  # seconds check_bucket waits to connect, then for an answer
SHA256_METADATA = "sha256"  # user metadata key: x-amz-meta-sha256, hex
_CHUNK = MiB
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_MULTIPART_ETAG = re.compile(r'-\d+"?$')  # "<md5 of part md5s>-<parts>"
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
# A copy's source is missing on these; NoSuchBucket is not one of them, as
# it may name the destination's bucket (a HEAD's 404, without a body, is
# the source's: the copy's only HEAD is of the source).
_NO_SOURCE_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_CREDENTIALS = " (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
# What a 403's error code (from a request with a body) says to fix.
_DENIED = {
    "InvalidAccessKeyId": "the access key id is not known to the server",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "AccessDenied": "the credentials may not list this bucket",
}


class S3Store(ObjectStore):
    """Buckets in S3 (or an S3-compatible server), through boto3.

    Making the store sends no request, and neither does a name it refuses:

    >>> store = S3Store(endpoint_url="http://127.0.0.1:9", access_key="id", secret_key="key")
    >>> store.describe()
    'S3 at http://127.0.0.1:9'
    >>> store.copy("src-bucket", "../etc/passwd", "dest-bucket", "x")
    Traceback (most recent call last):
    ...
    pipeline.migration.UnsafeKey: unsafe key '../etc/passwd': a '..' component leaves the bucket
    >>> store.close()

    Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws``, an instance
    role) unless ``access_key`` and ``secret_key`` are given. The store
    makes its boto3 session and first client at once, so a malformed
    endpoint fails here, not in a worker.

    A boto3 client may be used from many threads, a session may not: every
    client is made from the store's one session under one lock (a session
    and its first client cost about 0.1 s, each further client about 5 ms,
    measured against moto), and
    :meth:`for_worker` gives each worker a store with a client of its own
    (its own connection pool). Each worker's store must be closed.

    A store pickles as its settings (a stage sent to a Dask cluster carries
    it): the endpoint, the region, the timeouts and retries, and the
    credentials only as given here; never a session or a client, which the
    copy makes when first used. Credentials from boto3's chain are not
    sent: each cluster worker finds its own (its environment, its
    instance role).

    Args:
        endpoint_url: the server (``http://127.0.0.1:9000``); ``None`` for AWS.
        region: the region to sign for; ``None``: boto3's (``AWS_DEFAULT_REGION``...).
        access_key: an access key id, instead of boto3's chain (with ``secret_key``).
        secret_key: its secret key.
        session_token: a session token for temporary credentials.
        multipart_threshold: objects this large and larger are copied in
            parts of this size (``UploadPartCopy``), at most
            ``max_pool_connections`` at once; smaller ones with one
            ``CopyObject``. 5 MiB (S3's smallest part) to 5 GiB (the
            largest ``CopyObject``).
        max_pool_connections: connections each client keeps open.
        connect_timeout: seconds to wait for a connection, per attempt.
        read_timeout: seconds to wait for an answer, per attempt.
        max_attempts: tries of a request, the first included (boto3's
            "standard" retries: throttling, 5xx, dropped connections).
        client_kwargs: more arguments for ``session.client("s3", ...)``; a
            ``config`` there is merged over the store's.

    Raises:
        ValueError: an argument out of its range.
        MigrationConfigError: boto3 refused the endpoint, region or profile.
    """

    _maker: _ClientMaker | None  # the session: shared with the for_worker() copies
    _own_client: Any  # this store's boto3 client: its own (untyped)

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        max_pool_connections: int = 10,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not MIN_PART <= multipart_threshold <= MAX_COPY_OBJECT:
            message = f"multipart_threshold must be 5 MiB to 5 GiB, not {multipart_threshold}"
            raise ValueError(message)
        if max_pool_connections < 1 or max_attempts < 1:
            message = "max_pool_connections and max_attempts must be at least 1"
            raise ValueError(message)
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")
        self._settings: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region": region,
            "access_key": access_key,
            "secret_key": secret_key,
            "session_token": session_token,
            "multipart_threshold": multipart_threshold,
            "max_pool_connections": max_pool_connections,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_attempts": max_attempts,
            "client_kwargs": dict(client_kwargs or {}),
        }
        self._configure()
        maker = self._maker = self._new_maker()
        self._own_client = maker.client(self._config, self.describe())

    def _configure(self) -> None:
        # Everything but the session and the client, from the settings.
        settings = self._settings
        self.endpoint_url: str | None = settings["endpoint_url"]
        self.multipart_threshold: int = settings["multipart_threshold"]
        pool: int = settings["max_pool_connections"]
        # total_max_attempts counts the first try; botocore's max_attempts does not.
        self._config = Config(
            connect_timeout=settings["connect_timeout"],
            read_timeout=settings["read_timeout"],
            retries={"mode": "standard", "total_max_attempts": settings["max_attempts"]},
            max_pool_connections=pool,
        )
        # Parts as large as the threshold: the fewer the requests, the
        # better for a server-side copy (s3transfer grows the parts if an
        # object would need more than S3's 10,000).
        self._transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_threshold,
            max_concurrency=pool,
            use_threads=True,
        )
        self._lock = threading.Lock()  # held to make _maker or _own_client where they are None
        self._maker = None
        self._own_client = None

    def _new_maker(self) -> _ClientMaker:
        settings = self._settings
        return _ClientMaker(
            endpoint_url=settings["endpoint_url"],
            region=settings["region"],
            access_key=settings["access_key"],
            secret_key=settings["secret_key"],
            session_token=settings["session_token"],
            client_kwargs=settings["client_kwargs"],
        )

    def __getstate__(self) -> dict[str, Any]:
        """The settings as given (credentials only if given), the region as found here.

        No session and no client: the copy makes them when first used (its
        :meth:`for_worker`, in a stage's ``on_start``). Credentials that
        were not given travel not at all: the copy finds its own through
        boto3's chain where it runs. The region does travel, so that every
        copy signs for the region this store signs for.
        """
        return {**self._settings, "region": self._region()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._settings = dict(state)
        self._configure()

    def _clients(self) -> _ClientMaker:
        # The session's client maker; an unpickled store makes its own on first use.
        with self._lock:
            if self._maker is None:
                self._maker = self._new_maker()
            return self._maker

    @property
    def _client(self) -> Any:
        # This store's own client, made on first use by an unpickled store.
        client = self._own_client
        if client is None:
            maker = self._clients()
            with self._lock:
                if self._own_client is None:
                    self._own_client = maker.client(self._config, self.describe())
                client = self._own_client
        return client

    def _region(self) -> str | None:
        maker = self._maker
        return self._settings["region"] if maker is None else maker.region

    def describe(self) -> str:
        """``"S3 at <endpoint>"``, or ``"S3 at AWS"`` (with the region when it is known)."""
        if self.endpoint_url is not None:
            return f"S3 at {self.endpoint_url}"
        region = self._region()
        return "S3 at AWS" if region is None else f"S3 at AWS ({region})"

    def for_worker(self) -> S3Store:
        """A store like this one with a client (and connection pool) of its own; close it."""
        maker = self._clients()
        worker = object.__new__(type(self))
        worker.__dict__.update(self.__dict__)  # the settings and the session maker are shared
        worker._lock = threading.Lock()
        worker._own_client = maker.client(self._config, self.describe())
        return worker

    def close(self) -> None:
        """Close this store's client and its connections."""
        client = self._own_client
        if client is not None:
            client.close()

    def check_bucket(self, bucket: str) -> None:
        """Raise :class:`MigrationConfigError`, saying what to fix, unless ``bucket`` answers.

        Asked with a setup client (:meth:`_setup_client`: one try, at most
        :data:`CHECK_TIMEOUT` seconds to connect and as long for an
        answer), so that a wrong endpoint fails in seconds. No botocore
        error leaves this method: a missing bucket, a refusal (403), an
        endpoint that does not answer and missing credentials all become a
        :class:`MigrationConfigError`.
        """
        check_bucket_name(bucket)
        where = self.describe()
        with closing(self._setup_client()) as client:
            try:
                client.head_bucket(Bucket=bucket)
            except ClientError as error:
                raise MigrationConfigError(_refusal(client, bucket, where, error)) from None
            except BotoCoreError as error:
                raise self._unusable(bucket, error) from None

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` (in the client's region) if it is not there.

        A setup call, like :meth:`check_bucket`: one quick try, and what
        goes wrong is a :class:`MigrationConfigError` saying what to fix.
        """
        check_bucket_name(bucket)
        where = self.describe()
        with closing(self._setup_client()) as client:
            arguments: dict[str, Any] = {"Bucket": bucket}
            region = client.meta.region_name
            if region not in {None, "us-east-1", "aws-global"}:
                # us-east-1 is the one region S3 refuses to be told about.
                arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                client.create_bucket(**arguments)
                return
            except ClientError as error:
                code = _code(error)
                if code == "BucketAlreadyOwnedByYou":  # outside us-east-1: nothing to do
                    return
                if code != "BucketAlreadyExists":
                    refused = _refused(f"{where} refused to create bucket {bucket!r}", error)
                    raise MigrationConfigError(refused) from None
            except BotoCoreError as error:
                raise self._unusable(bucket, error) from None
        # Someone else's (or, on some servers, ours): usable if it answers.
        self.check_bucket(bucket)

    def _setup_client(self) -> Any:
        """A client for setup calls: one try, :data:`CHECK_TIMEOUT` to connect and to answer."""
        config = self._config.merge(
            Config(
                connect_timeout=CHECK_TIMEOUT,
                read_timeout=CHECK_TIMEOUT,
                retries={"mode": "standard", "total_max_attempts": 1},
            )
        )
        return self._clients().client(config, self.describe())

    def _unusable(self, bucket: str, error: Exception) -> MigrationConfigError:
        """The error for a botocore failure (no answer, no credentials) of a setup call."""
        where = self.describe()
        if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
            message = (
                f"no usable AWS credentials for {where} ({error}): set AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (~/.aws/credentials)"
            )
        elif isinstance(error, (BotoConnectionError, HTTPClientError)):
            fix = "the endpoint URL (--s3-endpoint)" if self.endpoint_url else "the network"
            message = f"cannot reach {where} ({error}): check {fix} and that the server is up"
        else:
            message = f"cannot use bucket {bucket!r} in {where}: {error}"
        return MigrationConfigError(message)

    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` with its sha256 (S3's checksum and ``x-amz-meta-sha256``).

        One ``PutObject``, so a reader sees the whole object or none (S3 has
        no half objects); S3 refuses the bytes if they do not match the
        checksum sent with them.
        """
        check_bucket_name(bucket)
        check_key(key)
        digest = hashlib.sha256(data)
        self._client.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(digest.digest()).decode("ascii"),
            Metadata={SHA256_METADATA: digest.hexdigest()},
        )
        return ObjectInfo(len(data), digest.hexdigest())

    def get(self, bucket: str, key: str) -> bytes:
        """Return the object's bytes; raise :class:`ObjectMissing` if it is not there.

        botocore checks the bytes against S3's checksum where the object
        has a whole-object one (every object :meth:`put` wrote).
        """
        check_bucket_name(bucket)
        check_key(key)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                raise ObjectMissing(f"no object {key!r} in bucket {bucket!r}") from None
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Return the object's size and sha256, or ``None`` if it is not there.

        One ``HeadObject`` for an object :meth:`put` or :meth:`copy` wrote.
        An object with neither a whole-object sha256 checksum nor
        ``x-amz-meta-sha256`` is read and hashed: a download.
        """
        check_bucket_name(bucket)
        check_key(key)
        response = self._head(bucket, key)
        if response is None:
            return None
        sha256 = self._sha256(bucket, key, response)
        if sha256 is None:  # gone between the head and the read
            return None
        return ObjectInfo(int(response["ContentLength"]), sha256)

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        size: int | None = None,
    ) -> ObjectInfo:
        """Copy an object on the server; return the destination's size and sha256.

        With ``size`` given and below ``multipart_threshold``, the copy is a
        single request: one ``CopyObject``, no ``HeadObject`` of the source
        first. The size returned is then the one given, and the sha256 the
        one S3 computed of the copy, so a caller that checks the sha256
        against its record (the migration does) catches any other object.

        A ``HeadObject`` of the source first (its size picks the way, its
        ETag pins the version copied), then one ``CopyObject`` below
        ``multipart_threshold``, whose answer carries S3's sha256 of the
        copy, or boto3's managed multipart copy (``UploadPartCopy``,
        metadata kept) and a ``HeadObject`` of the copy. The bytes never
        pass through this process. S3 writes the destination whole or not
        at all, so copying again onto the key is safe.

        A multipart copy's sha256 is the one its source recorded (the
        metadata, copied with it): S3 has no whole-object sha256 of a
        multipart object to check it against.

        Raises:
            ObjectMissing: there is no source object (nothing is written).
        """
        check_bucket_name(src_bucket)
        check_key(src_key)
        check_bucket_name(dst_bucket)
        check_key(dst_key)
        if size is not None and size < self.multipart_threshold:
            known = self._copy_known_size(src_bucket, src_key, dst_bucket, dst_key, size)
            if known is not None:
                return known
        source = self._head(src_bucket, src_key)
        if source is None:
            raise ObjectMissing(f"no object {src_key!r} in bucket {src_bucket!r}")
        size = int(source["ContentLength"])
        copy_source = {"Bucket": src_bucket, "Key": src_key}
        # If-Match: should the source change between the head and the copy,
        # the copy fails (412) instead of copying bytes of another size.
        pin = {"CopySourceIfMatch": source["ETag"]} if source.get("ETag") else {}
        try:
            if size < self.multipart_threshold:
                response = self._client.copy_object(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    CopySource=copy_source,
                    ChecksumAlgorithm="SHA256",  # S3 computes the copy's, and says it
                    **pin,
                )
                sha256 = _whole_sha256(response.get("CopyObjectResult", {}))
                if sha256 is not None:
                    return ObjectInfo(size, sha256)
            else:
                extra = {"ChecksumAlgorithm": "SHA256", **pin}
                self._client.copy(
                    copy_source, dst_bucket, dst_key, ExtraArgs=extra, Config=self._transfer
                )
        except ClientError as error:
            if _code(error) in _NO_SOURCE_CODES:  # gone between the head and the copy
                raise ObjectMissing(f"no object {src_key!r} in bucket {src_bucket!r}") from None
            raise
        info = self.head(dst_bucket, dst_key)
        if info is None:  # deleted by someone else the moment it was written
            raise ObjectMissing(f"copy {dst_key!r} in bucket {dst_bucket!r} is gone")
        return info

    def _copy_known_size(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, size: int
    ) -> ObjectInfo | None:
        """One ``CopyObject``; ``None`` if S3 did not say the copy's sha256 (look, then)."""
        try:
            response = self._client.copy_object(
                Bucket=dst_bucket,
                Key=dst_key,
                CopySource={"Bucket": src_bucket, "Key": src_key},
                ChecksumAlgorithm="SHA256",
            )
        except ClientError as error:
            if _code(error) in _NO_SOURCE_CODES:
                raise ObjectMissing(f"no object {src_key!r} in bucket {src_bucket!r}") from None
            raise
        sha256 = _whole_sha256(response.get("CopyObjectResult", {}))
        return None if sha256 is None else ObjectInfo(size, sha256)

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self._client.head_object(
                Bucket=bucket, Key=key, ChecksumMode="ENABLED"
            )
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        return response

    def _sha256(self, bucket: str, key: str, response: Mapping[str, Any]) -> str | None:
        """The object's sha256: S3's whole-object checksum, else the metadata, else hashed.

        ``None`` if the object is no longer there to be hashed.
        """
        found = _whole_sha256(response)
        if found is not None:
            return found
        recorded = str(response.get("Metadata", {}).get(SHA256_METADATA, "")).lower()
        if _HEX_SHA256.fullmatch(recorded):
            return recorded
        pin = {"IfMatch": response["ETag"]} if response.get("ETag") else {}
        try:
            body = self._client.get_object(Bucket=bucket, Key=key, **pin)["Body"]
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        digest = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
        finally:
            body.close()
        return digest.hexdigest()


class _ClientMaker:
    """One boto3 session and the lock that lets several threads make clients from it."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str | None,
        access_key: str | None,
        secret_key: str | None,
        session_token: str | None,
        client_kwargs: Mapping[str, Any],
    ) -> None:
        self.endpoint_url = endpoint_url
        self.client_kwargs = dict(client_kwargs)
        # Held while a client is made: a boto3 session is not thread-safe.
        self.lock = threading.Lock()
        try:
            self.session: Any = boto3.session.Session(
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=session_token,
                region_name=region,
            )
        except BotoCoreError as error:  # a profile named in AWS_PROFILE that is not there
            raise MigrationConfigError(f"cannot set up boto3 for S3: {error}") from None
        self.region: str | None = region or self.session.region_name

    def client(self, config: Any, where: str) -> Any:
        """A new S3 client with ``config`` (merged under ``client_kwargs``' own)."""
        kwargs = dict(self.client_kwargs)
        given = kwargs.pop("config", None)
        try:
            with self.lock:
                return self.session.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    config=config if given is None else config.merge(given),
                    **kwargs,
                )
        except (ValueError, BotoCoreError) as error:
            message = f"cannot use {where}: {error} (check the endpoint URL, --s3-endpoint)"
            raise MigrationConfigError(message) from None


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: Any) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_missing(error: Any) -> bool:
    return _status(error) == 404 or _code(error) in _MISSING_CODES


def _whole_sha256(fields: Mapping[str, Any]) -> str | None:
    """S3's sha256 of the whole object, in hex, if ``fields`` (an answer) carry one.

    Not a multipart object's: S3 marks it ``COMPOSITE`` and ends it in
    ``-<parts>``, and its ETag ends so too (moto says so only in the ETag).

    >>> _whole_sha256({"ChecksumSHA256": "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="})
    '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'
    >>> _whole_sha256({"ChecksumSHA256": "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=",
    ...                "ETag": '"31252e32f21cca6a5204a7b596ad1ede-2"'}) is None
    True
    """
    value = fields.get("ChecksumSHA256")
    etag = str(fields.get("ETag", ""))
    if not isinstance(value, str) or "-" in value or _MULTIPART_ETAG.search(etag):
        return None
    if fields.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    return raw.hex() if len(raw) == 32 else None


def _refusal(client: Any, bucket: str, where: str, error: Any) -> str:
    """What to fix, for head_bucket's error answer."""
    status, code = _status(error), _code(error)
    if status == 404 or code in _MISSING_CODES:
        return f"bucket {bucket!r} does not exist in {where}: create it or name another bucket"
    if status == 403:
        # A HEAD answer has no body, so no error code: ask again with a
        # request that has one, to say which part of the credentials to fix.
        reason = "access denied"
        try:
            client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except ClientError as again:
            reason = _DENIED.get(_code(again), reason)
        except BotoCoreError:
            pass  # the first answer is the one to report
        return (
            f"no access to bucket {bucket!r} in {where} ({reason}): check the credentials"
            f"{_CREDENTIALS} and that they may list the bucket"
        )
    if status in {301, 307} or code in {"PermanentRedirect", "AuthorizationHeaderMalformed"}:
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region", "another region")
        return (
            f"bucket {bucket!r} is in {region}, not in the region {where} signs for:"
            " set the region (AWS_DEFAULT_REGION)"
        )
    return _refused(f"{where} refused to look up bucket {bucket!r}", error)


def _refused(what: str, error: Any) -> str:
    """``what`` was refused: the answer, and for a 403 which credential to check."""
    status, code = _status(error), _code(error)
    message = error.response.get("Error", {}).get("Message", "")
    text = f"{what}: HTTP {status} {code} {message}".strip()
    if status == 403:
        reason = _DENIED.get(code, "access denied")
        text += f" ({reason}): check the credentials{_CREDENTIALS}"
    return text
