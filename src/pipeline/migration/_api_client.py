"""The metadata API's client: one keep-alive HTTP connection, answers as dicts or errors.

:class:`MetadataClient` speaks the protocol described in :mod:`._api` over
``http.client`` (stdlib). Every failure is an :class:`ApiError` carrying the
HTTP status (0 when no answer came), raised as :class:`ApiUnavailable` when
it is worth retrying; :meth:`MetadataClient.check` turns a bad setup into a
:class:`MigrationConfigError` that names the option to fix.
"""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._validate import check_int, check_seconds
from ._errors import ApiError, MigrationConfigError

__all__ = ["MAX_FILE_ID", "TOKEN_VARIABLE", "MetadataClient", "check_token", "new_token"]

TOKEN_VARIABLE = "PIPELINE_API_TOKEN"
"""The environment variable the command line reads the API's token from."""

MAX_FILE_ID = 2**63 - 1
"""The largest file id: SQLite's and PostgreSQL's BIGINT."""

_CHECK_TRIES = 5  # check()'s authenticated probe, against a flaky (fail_rate) API


def new_token() -> str:
    """A new random bearer token: 32 URL-safe characters, never a leading ``-``.

    A token that began with ``-`` could not be given as ``--api-token T``
    (the command line would read it as an option), and the generated one
    is printed to be passed on.
    """
    token = secrets.token_urlsafe(24)
    while token.startswith("-"):  # 1 draw in 64
        token = secrets.token_urlsafe(24)
    return token


def check_token(name: str, token: object) -> str:
    """Return ``token`` if it can be a bearer token (visible ASCII), else raise naming ``name``.

    >>> check_token("token", "s3cr3t-T0ken_")
    's3cr3t-T0ken_'
    >>> check_token("token", "two words")
    Traceback (most recent call last):
    ...
    ValueError: 'token' must be non-empty visible ASCII (no spaces), got 9 characters
    """
    if not isinstance(token, str):
        raise TypeError(f"{name!r} must be a str, not {type(token).__name__}")
    # Anything else could split or forge the Authorization header it goes in.
    if not token or not all("!" <= char <= "~" for char in token):
        message = (
            f"{name!r} must be non-empty visible ASCII (no spaces), got {len(token)} characters"
        )
        raise ValueError(message)
    return token


def _check_file_id(file_id: object) -> int:
    return check_int("file_id", file_id, 0, MAX_FILE_ID)


class MetadataClient:
    """A client of the metadata API at ``url``, authenticated by ``token``.

    It keeps one HTTP/1.1 connection open across requests. When a request
    finds that connection dropped (the server closed an idle keep-alive, or
    restarted), it reconnects and sends the request once more: both ``PUT``
    and ``GET`` are idempotent, so a request the server did receive does no
    harm sent twice. A fresh connection that fails is not retried.

    Not thread-safe: one client per worker thread; :meth:`for_worker` makes
    another with the same settings.

    A client pickles as its settings (the URL, the token, the timeout),
    never its connection: a copy in another process (a Dask cluster's
    worker) connects on its first request. The URL must be one that
    process can reach.

    Args:
        url: ``http://host:port`` (or ``https://``), optionally with a base path.
        token: the API's bearer token.
        timeout: seconds each blocking step of a request (connect, send,
            each read) may wait before the request fails with status 0.

    Raises:
        ValueError: a URL that is not ``http(s)://host[:port][/path]``, an
            empty token or one with spaces, a timeout that is not positive.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        if not isinstance(url, str):
            raise TypeError(f"'url' must be a str, not {type(url).__name__}")
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"'url' has a bad port: {url!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'url' must be http://HOST[:PORT] or https://..., got {url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"'url' must have no query, fragment or user: {url!r}")
        seconds = check_seconds("timeout", timeout)
        if not seconds:
            raise ValueError(f"'timeout' must be more than 0 seconds, got {timeout!r}")
        self.url = url.rstrip("/")
        self.token = check_token("token", token)
        self.timeout = seconds
        self._base = parts.path.rstrip("/")
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._connection = kind(parts.hostname, port, timeout=seconds)

    def __repr__(self) -> str:
        return f"MetadataClient({self.url!r})"  # never the token: reprs end up in logs

    def __reduce__(self) -> tuple[Any, ...]:
        # The settings, not the connection (nor its socket).
        return _client_of, (self.url, self.token, self.timeout)

    def for_worker(self) -> MetadataClient:
        """A new client with the same URL, token and timeout, on its own connection."""
        return MetadataClient(self.url, self.token, timeout=self.timeout)

    # -- the API's operations ----------------------------------------------------------

    def put(self, file_id: int, record: Mapping[str, object]) -> dict[str, Any]:
        """Create or replace the record of ``file_id``; return it as the API stored it.

        Raises:
            ApiError: the API refused it (400: the message names the field)
                or did not answer (:class:`ApiUnavailable`).
        """
        file_id = _check_file_id(file_id)
        try:
            body = json.dumps(dict(record), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"'record' must be JSON: {exc}") from None
        return self._expect_object(*self._request("PUT", f"/files/{file_id}", body))

    def get(self, file_id: int) -> dict[str, Any] | None:
        """Return the record of ``file_id``, or ``None`` if the API has none (404)."""
        status, answer = self._request("GET", f"/files/{_check_file_id(file_id)}")
        return None if status == 404 else self._expect_object(status, answer)

    def ids(self) -> list[int]:
        """The ids of every record, in order (``GET /files``)."""
        answer = self._expect_object(*self._request("GET", "/files"))
        return [int(file_id) for file_id in answer.get("ids", [])]

    def health(self) -> dict[str, Any]:
        """The API's ``/health`` answer: ``{"status": "ok", "records": N}``."""
        return self._expect_object(*self._request("GET", "/health", auth=False))

    def check(self) -> None:
        """Make sure the API answers and takes the token, before any file is touched.

        Raises:
            MigrationConfigError: naming what to fix: the URL
                (``--api-url``) or the token (``--api-token``).
        """
        where = f"the metadata API at {self.url}"
        try:
            if self.health().get("status") != "ok":
                raise ApiError(200, "its /health does not say ok")
        except ApiError as error:
            if error.status == 0:
                message = f"cannot reach {where}: {error.message} (check --api-url)"
            else:
                message = (
                    f"{self.url} is not the metadata API: /health gave {error} (check --api-url)"
                )
            raise MigrationConfigError(message) from None
        for attempt in range(1, _CHECK_TRIES + 1):
            try:
                self.get(0)  # 200 or 404: either way the token was taken
                return
            except ApiError as error:
                if error.status in (401, 403):
                    message = f"{where} refused the token (check --api-token or {TOKEN_VARIABLE})"
                    raise MigrationConfigError(message) from None
                if not error.retryable or error.status == 0 or attempt == _CHECK_TRIES:
                    message = f"{where} fails an authenticated request: {error} (check --api-url)"
                    raise MigrationConfigError(message) from None

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        self._connection.close()

    def __enter__(self) -> MetadataClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes | None = None, *, auth: bool = True
    ) -> tuple[int, object]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection = self._connection
        for retry in (False, True):
            reused = connection.sock is not None  # only a kept-alive connection goes stale
            try:
                connection.request(method, self._base + path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                connection.close()
                if reused and not retry:
                    continue
                raise ApiError.of(0, f"{self.url} dropped the connection: {exc}") from None
            except TimeoutError:
                connection.close()
                message = f"no answer from {self.url} within {self.timeout:g} s"
                raise ApiError.of(0, message) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # its state is unknown: the next request starts afresh
                raise ApiError.of(0, f"cannot reach {self.url}: {exc}") from None
        try:
            answer: object = json.loads(data)
        except ValueError:
            answer = data[:200].decode("utf-8", "replace") or response.reason
        return response.status, answer

    def _expect_object(self, status: int, answer: object) -> dict[str, Any]:
        if 200 <= status < 300 and isinstance(answer, dict):
            return answer
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            raise ApiError.of(status, answer["error"])
        if 200 <= status < 300:
            raise ApiError.of(status, f"{self.url} answered something not a JSON object")
        raise ApiError.of(status, str(answer))


def _client_of(url: str, token: str, timeout: float) -> MetadataClient:
    """A pickled client, made again from its settings (see :meth:`MetadataClient.__reduce__`)."""
    return MetadataClient(url, token, timeout=timeout)
