"""The metadata API: a small HTTP JSON service for file records, and its client.

``MetadataServer`` is stdlib only (``http.server``, one thread per request,
records in its own SQLite file); it binds 127.0.0.1 unless told otherwise.

- ``PUT /files/{id}`` creates (201) or replaces (200) the record of file
  ``id``: an idempotent upsert, so a retried or replayed request leaves one
  record. The body is a JSON object with ``name``, ``size``, ``checksum``
  (sha256, hex) and ``dest_key``.
- ``GET /files/{id}``: the record (200), or 404.
- ``GET /health``: ``{"status": "ok", "records": N}``, with no token.

Every ``/files`` request needs ``Authorization: Bearer <token>``: without it,
401 and nothing changes. Bad JSON or a bad field or id is a 400 that names
it. For demos and tests the server can be slow (``latency``, per ``PUT``), fail at random
before changing anything (``fail_rate``: 503) and cap the requests per
second (``rate``: a request over the cap waits its turn).

``MetadataClient`` keeps one connection open (keep-alive) and reconnects once
when the server dropped it; one client per worker (:meth:`for_worker`).

>>> import tempfile, os
>>> with MetadataServer(os.path.join(tempfile.mkdtemp(), "api.db")).start() as server:
...     with MetadataClient(server.url, server.token) as client:
...         record = {"name": "a.pdf", "size": 1, "checksum": "0" * 64, "dest_key": "k"}
...         _ = client.put(7, record)
...         client.get(7)["dest_key"], client.get(8)
('k', None)
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import json
import logging
import random
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._validate import check_seconds
from ._errors import ApiError, MigrationConfigError

__all__ = ["MetadataClient", "MetadataServer", "main"]

logger = logging.getLogger("pipeline.api")

MAX_BODY = 1 << 20
_FILE_PATH = re.compile(r"/files/([^/]+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "size": int,
    "checksum": str,
    "dest_key": str,
}


class _Refused(Exception):  # noqa: N818 (an answer, not a failure)
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check_record(body: bytes) -> dict[str, Any]:
    try:
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise _Refused(400, "the body must be a JSON object")
    for name, kind in _REQUIRED.items():
        value = record.get(name)
        if value is None:
            raise _Refused(400, f"field {name!r} is missing")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _Refused(400, f"field {name!r} must be a {kind.__name__}")  # type: ignore[union-attr]
    if record["size"] < 0:
        raise _Refused(400, "field 'size' must be at least 0")
    if not _HEX64.fullmatch(record["checksum"]):
        raise _Refused(400, "field 'checksum' must be a sha256: 64 lowercase hex digits")
    return record


class _Records:
    """The records, in SQLite: one connection, under a lock (requests come in many threads)."""

    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, record TEXT)")

    def put(self, file_id: int, record: dict[str, Any]) -> bool:
        text = json.dumps({**record, "id": file_id}, sort_keys=True)
        with self.lock:
            created = self.db.execute("SELECT 1 FROM records WHERE id = ?", (file_id,)).fetchone()
            self.db.execute(
                "INSERT INTO records (id, record) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                (file_id, text),
            )
        return created is None

    def get(self, file_id: int) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT record FROM records WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def count(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.db.close()


class _Pacer:
    """At most ``rate`` requests a second: each one waits for its slot."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.lock = threading.Lock()
        self.next_slot = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class MetadataServer:
    """The metadata API over HTTP, its records in the SQLite file ``db_path``.

    Args:
        db_path: the records' SQLite file (created if needed).
        host: the address to bind (127.0.0.1: this machine only).
        port: the port (0: a free one; see :attr:`port`).
        token: the bearer token requests must carry (default: a new random one).
        latency: seconds added to every ``PUT /files/{id}``.
        fail_rate: the fraction of ``/files`` requests answered 503, changing nothing.
        rate: the most ``/files`` requests a second (None: no cap).
        seed: seeds the random failures.
    """

    def __init__(
        self,
        db_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        latency: float = 0.0,
        fail_rate: float = 0.0,
        rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.latency = check_seconds("latency", latency) or 0.0
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"'fail_rate' must be between 0 and 1, got {fail_rate!r}")
        if rate is not None and not rate > 0:
            raise ValueError(f"'rate' must be more than 0 requests a second, got {rate!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"'port' must be 0 to 65535, got {port!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("'token' must be a non-empty string")
        self.token = token or secrets.token_urlsafe(24)
        self.fail_rate = fail_rate
        self.db_path = str(db_path)
        self.host, self.requested_port = host, port
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._pacer = _Pacer(rate)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._records: _Records | None = None

    @property
    def port(self) -> int:
        """The port the server listens on, once started."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, once started."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> MetadataServer:
        """Bind and serve in a thread of its own; return the server."""
        try:
            self._records = _Records(self.db_path)
        except sqlite3.Error as exc:
            raise MigrationConfigError(
                f"cannot open the API's database {self.db_path!r}: {exc}"
            ) from None
        handler = type("Handler", (_Handler,), {"api": self})
        try:
            self._server = ThreadingHTTPServer((self.host, self.requested_port), handler)
        except OSError as exc:
            self._records.close()
            message = f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror or exc}"
            raise MigrationConfigError(message) from None
        self._server.daemon_threads = False
        self._server.block_on_close = True  # stop() waits for the requests in flight
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metadata-api", kwargs={"poll_interval": 0.05}
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wait for the requests in flight, close the database; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._records is not None:
            self._records.close()
            self._records = None

    def __enter__(self) -> MetadataServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _fails(self) -> bool:
        with self._random_lock:
            return self._random.random() < self.fail_rate


class _Handler(BaseHTTPRequestHandler):
    api: MetadataServer
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        logger.debug("%s %s", self.address_string(), format % args)

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _respond(self, method: str) -> None:
        try:
            status, body = self._route(method)
        except _Refused as refused:
            status, body = refused.status, {"error": str(refused)}
        self._answer(status, body)

    def _route(self, method: str) -> tuple[int, dict[str, Any]]:
        api, records = self.api, self.api._records
        assert records is not None
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise _Refused(413, f"the body is over {MAX_BODY} bytes")
        body = self.rfile.read(length) if length else b""
        if path == "/health" and method == "GET":
            return 200, {"status": "ok", "records": records.count()}
        found = _FILE_PATH.fullmatch(path)
        if found is None:
            raise _Refused(404, f"no such path: {path}")
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api.token}".encode()):
            raise _Refused(401, "a valid 'Authorization: Bearer <token>' header is needed")
        if method not in ("GET", "PUT"):
            raise _Refused(405, f"{method} is not allowed on /files/{{id}}")
        text = found.group(1)
        if not text.isdigit() or len(text) > 18:
            raise _Refused(400, f"the file id must be a whole number, got {text!r}")
        file_id = int(text)
        api._pacer.wait()
        if api.latency and method == "PUT":  # the slow step is the registration
            time.sleep(api.latency)
        if api._fails():
            raise _Refused(503, "injected failure")
        if method == "GET":
            record = records.get(file_id)
            if record is None:
                raise _Refused(404, f"no record of file {file_id}")
            return 200, record
        created = records.put(file_id, _check_record(body))
        return (201 if created else 200), records.get(file_id) or {}

    def do_GET(self) -> None:
        self._respond("GET")

    def do_PUT(self) -> None:
        self._respond("PUT")

    def do_POST(self) -> None:
        self._respond("POST")

    def do_DELETE(self) -> None:
        self._respond("DELETE")


class MetadataClient:
    """A client of the metadata API over one keep-alive connection; one per worker thread.

    Errors are :class:`~pipeline.migration.ApiError` (status 0: no answer),
    or :class:`~pipeline.migration.ApiUnavailable` when a retry may pass.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'url' must be http://HOST[:PORT] or https://..., got {url!r}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._connection: http.client.HTTPConnection | None = None

    def for_worker(self) -> MetadataClient:
        """A new client with the same settings (its own connection)."""
        return MetadataClient(self.url, self.token, timeout=self.timeout)

    def _connect(self) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        return kind(self._host, self._port, timeout=self.timeout)

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request(method, path, body=body, headers=headers)
                answer = self._connection.getresponse()
                data = answer.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()  # a kept-alive connection the server dropped: once more, anew
                if attempt == 2:
                    raise ApiError.of(0, f"no answer from {self.url}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise ApiError.of(0, f"no answer from {self.url}: {exc}") from None
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        if answer.status >= 400:
            message = parsed.get("error") if isinstance(parsed, dict) else None
            raise ApiError.of(answer.status, str(message or answer.reason))
        return answer.status, parsed

    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        """Create or replace the record of ``file_id``; return it as stored."""
        body = json.dumps(dict(record)).encode()
        return dict(self._request("PUT", f"/files/{file_id}", body)[1] or {})

    def get(self, file_id: int) -> dict[str, Any] | None:
        """The record of ``file_id``, or ``None``."""
        try:
            return dict(self._request("GET", f"/files/{file_id}")[1] or {})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return dict(self._request("GET", "/health")[1] or {})

    def check(self) -> None:
        """Raise :class:`MigrationConfigError` unless the API answers and takes the token."""
        try:
            self.health()
            self.get(0)
        except ApiError as exc:
            if exc.status not in (0, 401):
                return  # it answered past the token check (a 503 is the API's to retry)
            if exc.status == 401:
                message = (
                    f"the metadata API at {self.url} refused the token"
                    " (check --api-token or PIPELINE_API_TOKEN)"
                )
            else:
                message = f"cannot reach the metadata API at {self.url}: {exc} (check --api-url)"
            raise MigrationConfigError(message) from None

    def close(self) -> None:
        """Close the connection (the next request opens another)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> MetadataClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline api-server``: serve the metadata API until Ctrl-C."""
    from .._cli import number, parse_args, seconds, whole_number  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m pipeline api-server", description="Serve the migration's metadata API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=whole_number(0, 65535), default=8080, help="(default 8080)")
    parser.add_argument("--db", default="api.db", help="the records' SQLite file (default api.db)")
    parser.add_argument("--token", help="the bearer token (default: $PIPELINE_API_TOKEN, or new)")
    parser.add_argument("--latency", type=seconds(60.0), default=0.0, help="seconds per request")
    parser.add_argument("--fail-rate", type=number(0.0, 1.0, what="a fraction"), default=0.0)
    parser.add_argument("--rate", type=number(0.001, 1e6), default=None, help="requests/s cap")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    import os  # noqa: PLC0415

    token = args.token or os.environ.get("PIPELINE_API_TOKEN") or None
    server = MetadataServer(
        args.db,
        host=args.host,
        port=args.port,
        token=token,
        latency=args.latency,
        fail_rate=args.fail_rate,
        rate=args.rate,
    )
    try:
        server.start()
    except MigrationConfigError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    shown = "" if token else f" token {server.token}"
    print(f"metadata API at {server.url}{shown}", flush=True)  # noqa: T201
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
