"""The metadata API's server: a JSON record per file, in SQLite, behind ``http.server``.

:class:`MetadataServer` serves the protocol described in :mod:`._api` on the
standard library alone, with knobs that make it behave like the slow, flaky,
throttled API a real migration meets: ``latency``, ``fail_rate`` and
``rate``. It owns one thread that accepts connections ("metadata-api") and
one thread per open connection; :meth:`MetadataServer.stop` joins them all.
At about 500 lines it is past the project's 400: the request handler
(``_Handler``, the reading of bodies and the answers) is the part to move
into a module of its own when it grows.

>>> from pipeline.migration._api_client import MetadataClient
>>> with MetadataServer(":memory:") as server, MetadataClient(server.url, server.token) as client:
...     client.put(7, {"name": "a.pdf", "size": 3, "checksum": "ab" * 32, "dest_key": "k"})["id"]
...     client.health()
7
{'status': 'ok', 'records': 1}
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import os
import random
import re
import socket
import socketserver
import sqlite3
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from .._validate import check_int, check_number, check_seconds
from ._api_client import MAX_FILE_ID, check_token, new_token
from ._errors import MigrationConfigError

__all__ = ["IDLE_SECONDS", "MAX_BODY", "MetadataServer", "check_record"]

logger = logging.getLogger("pipeline.api")

MAX_BODY = 1024 * 1024
"""The largest request body the server reads, in bytes (413 above it)."""

IDLE_SECONDS = 30.0
"""How long the server keeps an idle keep-alive connection open."""

_POLL_SECONDS = 0.05  # serve_forever's poll: how long stop() may wait for the accept loop
_REQUIRED = {"name": str, "size": int, "checksum": str, "dest_key": str}
_JSON_NAMES = {str: "string", int: "whole number", float: "number"}
_CHECKSUM = re.compile(r"[0-9a-fA-F]{64}")
_ID = re.compile(r"[0-9]{1,19}")


def _json_type(value: object) -> str:
    names = {bool: "a boolean", type(None): "null", dict: "an object", list: "an array"}
    return names.get(type(value), f"a {_JSON_NAMES.get(type(value), type(value).__name__)}")


def check_record(file_id: int, body: object) -> dict[str, object]:
    """The record to store for ``file_id``: ``body`` checked, with ``id`` first.

    ``name``, ``size``, ``checksum`` (a sha256, 64 hex digits) and
    ``dest_key`` are required; other fields are kept as given if they are
    strings or numbers.

    >>> check_record(3, {"name": "a", "size": 1, "checksum": "0" * 64, "dest_key": "k"})["id"]
    3
    >>> check_record(3, {"name": "a", "size": "1"})
    Traceback (most recent call last):
    ...
    ValueError: field 'size' must be a whole number, not a string

    Raises:
        ValueError: naming the field that is missing or wrong.
    """
    if not isinstance(body, dict):
        # ValueError throughout, a wrong type too: each is a 400 naming the field.
        raise ValueError(f"the body must be a JSON object, not {_json_type(body)}")  # noqa: TRY004
    for field, kind in _REQUIRED.items():
        if field not in body:
            raise ValueError(f"field {field!r} is missing")
        value = body[field]
        if isinstance(value, bool) or not isinstance(value, kind):
            message = f"field {field!r} must be a {_JSON_NAMES[kind]}, not {_json_type(value)}"
            raise ValueError(message)  # noqa: TRY004
        if kind is str and not value:
            raise ValueError(f"field {field!r} must not be empty")
    if body["size"] < 0:
        raise ValueError(f"field 'size' must be at least 0, got {body['size']}")
    if not _CHECKSUM.fullmatch(body["checksum"]):
        raise ValueError("field 'checksum' must be a sha256: 64 hex digits")
    for field, value in body.items():
        if field == "id":
            if isinstance(value, bool) or value != file_id:
                raise ValueError(f"field 'id' is {value!r}, not the id in the path ({file_id})")
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(
                f"field {field!r} must be a string or a number, not {_json_type(value)}"
            )
    return {"id": file_id, **{key: value for key, value in body.items() if key != "id"}}


class _Records:
    """The records table on one SQLite connection; ``lock`` serializes its use."""

    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY,"
                " record TEXT NOT NULL, puts INTEGER NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise MigrationConfigError(f"cannot open the API's database {path!r}: {exc}") from None

    def put(self, file_id: int, record: dict[str, object]) -> bool:
        """Store ``record``; return whether it is new. One statement: atomic for any server."""
        sql = (
            "INSERT INTO records (id, record, puts) VALUES (?, ?, 1) ON CONFLICT (id)"
            " DO UPDATE SET record = excluded.record, puts = puts + 1 RETURNING puts"
        )
        with self.lock:
            (puts,) = self._db.execute(sql, (file_id, json.dumps(record))).fetchone()
        return bool(puts == 1)

    def get(self, file_id: int) -> dict[str, Any] | None:
        with self.lock:
            row = self._db.execute("SELECT record FROM records WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else cast(dict[str, Any], json.loads(row[0]))

    def ids(self) -> list[int]:
        with self.lock:
            return [row[0] for row in self._db.execute("SELECT id FROM records ORDER BY id")]

    def count(self) -> int:
        with self.lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self._db.close()


class _Refusal(Exception):  # noqa: N818 (an answer, not a bug)
    """An error answer, raised from anywhere in a request's handling."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.close = status, message, close
        self.headers: list[tuple[str, str]] = []


class _Dropped(Exception):  # noqa: N818
    """The connection is closed without an answer: the server is stopping, or the client left."""


class MetadataServer:
    """The metadata API, served on ``host:port`` with its records in ``db_path``.

    Args:
        db_path: the SQLite file of the records (``":memory:"`` for none).
        host: the address to listen on.
        port: the port (0: any free one; see :attr:`port` once started).
        token: the bearer token every ``/files`` request must carry
            (default: a random one, see :attr:`token`).
        latency: seconds added to each ``PUT /files/ID`` (a slow registration
            step); reads stay fast, so a verifier is not slowed with it.
        fail_rate: the share of valid ``/files/ID`` requests answered 503
            ``injected failure``, drawn before anything changes.
        rate: the most ``/files`` requests a second, across all connections
            (``None``: no cap). Requests over it wait their turn, spaced
            ``1/rate`` apart (one token in the bucket: no burst); they are
            not refused, so a client sees a slow answer, as from an API that
            queues, and its timeout still applies.
        seed: seeds the ``fail_rate`` draws (the same seed, the same failures).

    Raises:
        TypeError, ValueError: naming the parameter, at once.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        latency: float = 0.0,
        fail_rate: float = 0.0,
        rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(db_path, str | os.PathLike) or not os.fspath(db_path):
            raise TypeError(f"'db_path' must be a non-empty path, not {db_path!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"'host' must be a non-empty str, not {host!r}")
        self.db_path = os.fspath(db_path)
        self.host = host
        self._port = check_int("port", port, 0, 65535)
        self.token = new_token() if token is None else check_token("token", token)
        self.latency = check_seconds("latency", latency) or 0.0
        self.fail_rate = check_number("fail_rate", fail_rate, minimum=0.0, maximum=1.0)
        self.rate = None if rate is None else check_number("rate", rate, minimum=1e-3, maximum=1e6)
        if seed is not None:
            check_int("seed", seed, 0)
        self._token = self.token.encode()
        self._random = random.Random(seed)
        self._lock = threading.Lock()  # guards _random and _next_slot, the request threads' state
        self._next_slot = 0.0  # the monotonic time the next request may start, under a rate cap
        self._stopping = threading.Event()  # set by stop(): wakes requests waiting in _pause
        self._lifecycle = threading.Lock()  # start() and stop(), one at a time
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._records: _Records | None = None

    @property
    def port(self) -> int:
        """The port it listens on once started (before: the one asked for)."""
        return self._httpd.server_port if self._httpd is not None else self._port

    @property
    def url(self) -> str:
        """Where the API is: ``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> MetadataServer:
        """Open the database, bind, and serve in a thread named "metadata-api"; return self.

        Raises:
            MigrationConfigError: the database cannot be opened, or the
                address cannot be bound (a port in use).
            RuntimeError: it is already started.
        """
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("the metadata API server is already started")
            records = _Records(self.db_path)
            try:
                httpd = _HTTPServer((self.host, self._port), self)
            except OSError as exc:
                records.close()
                where = f"{self.host}:{self._port}"
                raise MigrationConfigError(
                    f"cannot serve the metadata API on {where}: {exc}"
                ) from None
            self._stopping.clear()
            self._records, self._httpd = records, httpd
            self._thread = threading.Thread(  # a daemon, as a safety net: stop() joins it
                target=httpd.serve_forever, args=(_POLL_SECONDS,), name="metadata-api", daemon=True
            )
            self._thread.start()
        logger.info("metadata API serving at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and join every thread it started; a second call does nothing.

        Requests waiting out ``latency`` or the rate cap are dropped without
        an answer; idle keep-alive connections are closed; a request being
        answered is finished.
        """
        with self._lifecycle:
            httpd, thread, records = self._httpd, self._thread, self._records
            if httpd is None or thread is None or records is None:
                return
            self._stopping.set()
            httpd.shutdown()  # the accept loop ends: no connection after this one
            httpd.close_connections()
            httpd.server_close()  # and joins the connections' threads
            thread.join()
            records.close()
            self._httpd = self._thread = self._records = None

    def __enter__(self) -> MetadataServer:
        # `with MetadataServer(...)` and `with MetadataServer(...).start()` both serve.
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the request threads call ------------------------------------------------

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` unless the server stops first (then :class:`_Dropped`)."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self._stopping.wait(remaining)
        if self._stopping.is_set():
            raise _Dropped

    def _admit(self, method: str) -> None:
        """Wait for this request's turn under the rate cap, then out a PUT's latency."""
        if self.rate is not None:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_slot)
                self._next_slot = start + 1.0 / self.rate
            self._pause(start - now)
        if method == "PUT":
            self._pause(self.latency)

    def _authenticate(self, header: str | None) -> None:
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            refusal = _Refusal(401, "missing 'Authorization: Bearer <token>' header")
        elif not hmac.compare_digest(credentials.strip().encode("latin-1", "replace"), self._token):
            refusal = _Refusal(401, "the bearer token is not the API's")
        else:
            return
        refusal.headers.append(("WWW-Authenticate", 'Bearer realm="metadata"'))
        raise refusal

    def _injected_failure(self) -> bool:
        with self._lock:
            return self.fail_rate > 0 and self._random.random() < self.fail_rate

    def _answer(self, method: str, path: str, handler: _Handler) -> tuple[int, dict[str, Any]]:
        records = self._records
        if records is None:
            raise _Dropped
        if path == "/health":
            _allow(method, ("GET",))
            return 200, {"status": "ok", "records": records.count()}
        if path == "/files":
            _allow(method, ("GET",))
        elif path.startswith("/files/") and "/" not in path[len("/files/") :]:
            _allow(method, ("GET", "PUT"))
        else:
            raise _Refusal(404, f"no such path: {path[:100]!r} (see /health and /files/ID)")
        self._admit(method)
        self._authenticate(handler.headers.get("Authorization"))
        if path == "/files":
            return 200, {"ids": records.ids()}
        file_id = _file_id(path[len("/files/") :])
        record: dict[str, object] = {}
        if method == "PUT":
            body = handler.read_body()
            try:
                parsed = json.loads(body, parse_constant=_nan)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise _Refusal(400, f"the body is not JSON: {exc}") from None
            try:
                record = check_record(file_id, parsed)
            except ValueError as exc:
                raise _Refusal(400, str(exc)) from None
        if self._injected_failure():
            raise _Refusal(503, "injected failure")
        if method == "PUT":
            return (201 if records.put(file_id, record) else 200), record
        found = records.get(file_id)
        if found is None:
            raise _Refusal(404, f"no record of file {file_id}")
        return 200, found


def _nan(constant: str) -> object:
    raise ValueError(f"{constant} is not a JSON number")


def _allow(method: str, methods: tuple[str, ...]) -> None:
    if method not in methods:
        refusal = _Refusal(405, f"{method} is not allowed here; use {' or '.join(methods)}")
        refusal.headers.append(("Allow", ", ".join(methods)))
        raise refusal


def _file_id(text: str) -> int:
    if not _ID.fullmatch(text) or int(text) > MAX_FILE_ID:
        message = f"the id must be a whole number from 0 to {MAX_FILE_ID}, got {text[:40]!r}"
        raise _Refusal(400, message)
    return int(text)


class _HTTPServer(ThreadingHTTPServer):
    """The stdlib server, owning its connections' threads so that stop() can wake and join them.

    ``ThreadingMixIn.server_close`` joins only non-daemon threads; these are
    daemons (a program that forgets ``stop()`` still exits), so the server
    keeps its own list and joins it.
    """

    request_queue_size = 128  # many workers connecting at once must not overflow the backlog

    def __init__(self, address: tuple[str, int], api: MetadataServer) -> None:
        self.api = api
        self._open_lock = threading.Lock()  # guards _open and _workers
        self._open: set[socket.socket] = set()  # the connections being served
        self._workers: list[threading.Thread] = []  # every connection's thread not yet joined
        self._numbers = itertools.count(1)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's FQDN up, seconds without a DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.api.host, int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # In the accept thread: every connection is known before shutdown() returns.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"metadata-api-{next(self._numbers)}",
            daemon=True,
        )
        with self._open_lock:
            self._workers = [known for known in self._workers if known.is_alive()]
            self._workers.append(thread)
            self._open.add(request)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every connection's thread: a read sees the end, a write still goes out."""
        with self._open_lock:  # held: no socket is closed (and its fd reused) meanwhile
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RD)
                except OSError:
                    pass  # already closed by the client

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            threads, self._workers = self._workers, []
        for thread in threads:
            thread.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client gone mid-answer is routine; the default prints a traceback.
        # Called from the stdlib's `except Exception:` block, so exc_info has the error.
        logger.debug("error serving %s", client_address, exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests, in its own thread; every answer is JSON."""

    protocol_version = "HTTP/1.1"  # keep-alive: a worker's client reuses its connection
    server_version = "pipeline-metadata-api/1"
    timeout = IDLE_SECONDS
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    _body_read = False

    def _serve(self) -> None:
        api = cast(_HTTPServer, self.server).api
        self._body_read = False
        headers: Iterable[tuple[str, str]] = ()
        try:
            status, answer = api._answer(self.command, urlsplit(self.path).path, self)
        except _Refusal as refusal:
            status, answer, headers = refusal.status, {"error": refusal.message}, refusal.headers
            self.close_connection = self.close_connection or refusal.close
        except _Dropped:
            self.close_connection = True
            return
        except sqlite3.Error as exc:
            logger.exception("the metadata API's database failed")
            status, answer = 500, {"error": f"the database failed: {exc}"}
        declared = (
            self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers
        )
        if declared and not self._body_read:
            self.close_connection = True  # its unread body would be read as the next request
        self._send(status, answer, headers)

    # The stdlib's names; _serve answers 405 for a method a path does not take.
    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def read_body(self) -> bytes:
        """The request's body, read whole: 411, 400 or 413 when its length is missing or wrong."""
        self._body_read = True  # or refused, with the connection closed
        length = self.headers.get("Content-Length")
        if length is None:
            raise _Refusal(411, "a PUT needs a Content-Length header", close=True)
        if not length.isascii() or not length.isdigit():
            raise _Refusal(400, f"Content-Length is not a length: {length[:20]!r}", close=True)
        if int(length) > MAX_BODY:
            raise _Refusal(413, f"the body is over {MAX_BODY} bytes", close=True)
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            raise _Dropped  # the client left mid-body
        return body

    def _send(self, status: int, answer: object, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (a bad request line, 501), as JSON like the rest."""
        self.close_connection = True
        self._send(code, {"error": message or self.responses.get(code, ("error", ""))[0]})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        """Each request, to the ``pipeline.api`` logger at DEBUG instead of stderr."""
        if logger.isEnabledFor(logging.DEBUG):  # one call per request: format only if shown
            logger.debug("%s %s", self.address_string(), format % args)
