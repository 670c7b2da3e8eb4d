"""The metadata API over real HTTP on 127.0.0.1: the server, the client, the command."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipeline.migration._api import (
    MAX_BODY,
    TOKEN_VARIABLE,
    MetadataClient,
    MetadataServer,
    main,
)
from pipeline.migration._errors import ApiError, ApiUnavailable, MigrationConfigError

TOKEN = "test-token"
CHECKSUM = "ab" * 32

Serve = Callable[..., MetadataServer]


def record(**changes: object) -> dict[str, object]:
    return {"name": "a.pdf", "size": 3, "checksum": CHECKSUM, "dest_key": "2026/a.pdf", **changes}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start servers (token TOKEN, db tmp_path/api.db unless told); stop them all at the end."""
    servers: list[MetadataServer] = []

    def start(**options: Any) -> MetadataServer:
        options.setdefault("token", TOKEN)
        server = MetadataServer(options.pop("db_path", tmp_path / "api.db"), **options)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Serve) -> MetadataServer:
    return serve()


@pytest.fixture
def client(server: MetadataServer) -> Iterator[MetadataClient]:
    with MetadataClient(server.url, TOKEN) as api:
        yield api


def raw(
    server: MetadataServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    line: bytes | None = None,
) -> tuple[int, dict[str, Any], http.client.HTTPMessage]:
    """Send one request exactly as given (``line``: raw bytes instead); return the answer."""
    if line is None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        given = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        if body is not None and "Content-Length" not in given:
            given["Content-Length"] = str(len(body))
        lines += [f"{name}: {value}" for name, value in given.items() if value]
        line = "\r\n".join([*lines, "", ""]).encode("latin-1") + (body or b"")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(line)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
        response.close()
    return response.status, json.loads(data) if data else {}, response.headers


def stored(server: MetadataServer) -> int:
    with MetadataClient(server.url, TOKEN) as api:
        return int(api.health()["records"])


# -- the records -----------------------------------------------------------------------


def test_a_put_record_is_got_back_with_its_id_and_extra_fields(client: MetadataClient) -> None:
    given = record(source_bucket="src", ratio=0.5, parts=2)
    assert client.put(4, given) == {"id": 4, **given}
    assert client.get(4) == {"id": 4, **given}
    assert client.get(5) is None
    assert client.ids() == [4]


def test_health_needs_no_token_and_counts_the_records(server: MetadataServer) -> None:
    with MetadataClient(server.url, "not-the-token") as anonymous:
        assert anonymous.health() == {"status": "ok", "records": 0}
    with MetadataClient(server.url, TOKEN) as api:
        api.put(1, record())
        api.put(2, record())
    status, answer, _ = raw(server, "GET", "/health", headers={"Authorization": ""})
    assert (status, answer) == (200, {"status": "ok", "records": 2})


def test_the_same_put_replayed_leaves_one_record_first_201_then_200(
    server: MetadataServer, client: MetadataClient
) -> None:
    body = json.dumps(record()).encode()
    answers = [raw(server, "PUT", "/files/5", body)[:2] for _ in range(5)]
    assert [status for status, _ in answers] == [201, 200, 200, 200, 200]
    assert all(answer == {"id": 5, **record()} for _, answer in answers)
    assert client.ids() == [5]
    assert stored(server) == 1


def test_a_changed_put_replaces_the_record(client: MetadataClient) -> None:
    client.put(5, record(name="old.pdf", note="first"))
    client.put(5, record(name="new.pdf"))
    assert client.get(5) == {"id": 5, **record(name="new.pdf")}  # the old extra field is gone
    assert client.ids() == [5]


def test_concurrent_puts_from_8_threads_store_each_id_once(
    server: MetadataServer, client: MetadataClient
) -> None:
    # Two groups of 4 threads: a group puts the same 50 ids at the same time
    # (even: 0-49, odd: 25-74), and the groups overlap on 25-49.
    start = threading.Barrier(8)

    def worker(k: int) -> None:
        with client.for_worker() as own:
            own.health()  # connected before the start line
            start.wait()
            for file_id in range(k % 2 * 25, k % 2 * 25 + 50):
                own.put(file_id, record(name=f"f{file_id}", writer=k))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert client.ids() == list(range(75))
    assert stored(server) == 75
    for file_id in (0, 30, 74):
        found = client.get(file_id)
        assert found is not None
        assert found["name"] == f"f{file_id}"


def test_records_persist_across_a_restart_on_the_same_db_file(serve: Serve) -> None:
    first = serve()
    with MetadataClient(first.url, TOKEN) as api:
        api.put(9, record())
    first.stop()
    second = serve()
    with MetadataClient(second.url, TOKEN) as api:
        assert api.get(9) == {"id": 9, **record()}
        assert api.health()["records"] == 1


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {TOKEN}x", "Bearer wrong", "Bearer ", f"Basic {TOKEN}", f"Bearer{TOKEN}"],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/files/1", json.dumps(record()).encode()),
        ("PUT", "/files/1", b"{not json"),  # refused for the token, not for the body
        ("GET", "/files/1", None),
        ("GET", "/files", None),
    ],
)
def test_a_request_without_the_token_is_401_and_changes_nothing(
    server: MetadataServer,
    authorization: str | None,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    status, answer, headers = raw(
        server, method, path, body, {"Authorization": authorization or ""}
    )
    assert status == 401
    assert "token" in answer["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    with MetadataClient(server.url, TOKEN) as api:
        assert api.get(1) is None
    assert stored(server) == 0


BAD_REQUESTS = [
    # (method, path, body, headers, status, what the message names)
    ("PUT", "/files/1", b"{", {}, 400, "not JSON"),
    ("PUT", "/files/1", b"\xff\xfe\xfd", {}, 400, "not JSON"),
    ("PUT", "/files/1", b'{"size": NaN}', {}, 400, "NaN"),
    ("PUT", "/files/1", b"[1, 2]", {}, 400, "JSON object, not an array"),
    ("PUT", "/files/1", json.dumps({**record(), "checksum": None}).encode(), {}, 400, "'checksum'"),
    ("PUT", "/files/1", b'{"name": "a", "size": 1, "dest_key": "k"}', {}, 400, "'checksum' is"),
    ("PUT", "/files/1", json.dumps(record(size="3")).encode(), {}, 400, "'size' must be a whole"),
    ("PUT", "/files/1", json.dumps(record(size=True)).encode(), {}, 400, "'size'"),
    ("PUT", "/files/1", json.dumps(record(size=-1)).encode(), {}, 400, "'size' must be at least"),
    ("PUT", "/files/1", json.dumps(record(checksum="abc")).encode(), {}, 400, "'checksum'"),
    ("PUT", "/files/1", json.dumps(record(name="")).encode(), {}, 400, "'name' must not be"),
    ("PUT", "/files/1", json.dumps(record(dest_key=7)).encode(), {}, 400, "'dest_key'"),
    ("PUT", "/files/1", json.dumps(record(tags=["x"])).encode(), {}, 400, "'tags'"),
    ("PUT", "/files/1", json.dumps(record(id=2)).encode(), {}, 400, "'id'"),
    ("PUT", "/files/x1", json.dumps(record()).encode(), {}, 400, "id must be a whole number"),
    ("GET", "/files/-1", None, {}, 400, "id must be a whole number"),
    ("GET", "/files/1.5", None, {}, 400, "id must be"),
    ("GET", "/files/", None, {}, 400, "id must be"),
    ("GET", "/files/99999999999999999999", None, {}, 400, "id must be"),
    ("GET", "/files/9223372036854775808", None, {}, 400, "id must be"),
    ("GET", "/nope", None, {}, 404, "/nope"),
    ("GET", "/files/1/extra", None, {}, 404, "/files/1/extra"),
    ("DELETE", "/files/1", None, {}, 405, "DELETE"),
    ("POST", "/files/1", json.dumps(record()).encode(), {}, 405, "GET or PUT"),
    ("PUT", "/files", b"{}", {}, 405, "PUT"),
    ("POST", "/health", b"", {}, 405, "POST"),
    ("PUT", "/files/1", b"{}", {"Content-Length": str(MAX_BODY + 1)}, 413, "bytes"),
    ("PUT", "/files/1", None, {}, 411, "Content-Length"),
    ("PUT", "/files/1", b"{}", {"Content-Length": "2x"}, 400, "Content-Length"),
    ("BREW", "/files/1", None, {}, 501, "BREW"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "named"),
    BAD_REQUESTS,
    ids=[f"{status}-{method}-{path}-{named}" for method, path, _, _, status, named in BAD_REQUESTS],
)
def test_bad_input_is_refused_naming_what_is_wrong_and_changes_nothing(
    server: MetadataServer,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    named: str,
) -> None:
    answered, answer, _ = raw(server, method, path, body, headers)
    assert (answered, list(answer)) == (status, ["error"])
    assert named in answer["error"]
    assert stored(server) == 0


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /files 1 HTTP/1.1\r\n\r\n", 400),
        (b"GET /files HTTP/1.1\r\nX: " + b"x" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_the_stdlib_refusals_are_answered_in_json_too(
    server: MetadataServer, line: bytes, status: int
) -> None:
    answered, answer, _ = raw(server, "GET", "", line=line)
    assert answered == status
    assert list(answer) == ["error"]


def test_a_refusal_names_the_allowed_methods_and_head_has_no_body(server: MetadataServer) -> None:
    status, answer, headers = raw(server, "HEAD", "/files/1")
    assert (status, answer, headers["Allow"]) == (405, {}, "GET, PUT")


def test_a_refused_body_closes_the_connection_so_it_is_not_read_as_a_request(
    server: MetadataServer,
) -> None:
    # The body of a refused POST is never read: were the connection kept,
    # the next "request" on it would start inside that body.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("POST", "/files/1", body=b"GET /files HTTP/1.1\r\n\r\n")
        response = connection.getresponse()
        response.read()
        assert (response.status, response.getheader("Connection")) == (405, "close")
    finally:
        connection.close()


# -- the knobs -------------------------------------------------------------------------


def test_fail_rate_one_answers_503_stores_nothing_and_is_retryable(serve: Serve) -> None:
    server = serve(fail_rate=1.0)
    with MetadataClient(server.url, TOKEN) as api:
        with pytest.raises(ApiUnavailable) as caught:
            api.put(1, record())
        assert (caught.value.status, caught.value.message) == (503, "injected failure")
        assert caught.value.retryable
        with pytest.raises(ApiUnavailable):
            api.get(1)
        assert api.health()["records"] == 0


def test_fail_rate_draws_are_reproducible_with_a_seed(serve: Serve, tmp_path: Path) -> None:
    def outcomes(db: str) -> list[bool]:
        server = serve(db_path=tmp_path / db, fail_rate=0.5, seed=11)
        with MetadataClient(server.url, TOKEN) as api:
            results = []
            for file_id in range(20):
                try:
                    api.put(file_id, record())
                    results.append(True)
                except ApiUnavailable:
                    results.append(False)
        server.stop()
        return results

    first = outcomes("a.db")
    assert first == outcomes("b.db")
    assert True in first
    assert False in first


def test_latency_is_added_to_each_put_and_reads_stay_fast(serve: Serve) -> None:
    server = serve(latency=0.5)
    with MetadataClient(server.url, TOKEN) as api:
        api.health()  # connected: what is timed below is the request alone
        started = time.perf_counter()
        api.put(1, record())
        assert time.perf_counter() - started >= 0.5
        started = time.perf_counter()
        assert api.get(1) is not None
        assert time.perf_counter() - started < 0.5


def test_the_rate_cap_spaces_requests_across_connections(serve: Serve) -> None:
    rate, per_thread, threads = 20.0, 4, 2
    server = serve(rate=rate)

    def worker(_: int) -> None:
        with MetadataClient(server.url, TOKEN) as api:
            for file_id in range(per_thread):
                api.get(file_id)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    requests = per_thread * threads
    burst = 1  # one token in the bucket
    assert time.perf_counter() - started >= (requests - burst) / rate - 0.001


# -- the client ------------------------------------------------------------------------


def test_the_client_keeps_its_connection_alive_between_requests(client: MetadataClient) -> None:
    client.health()
    first = client._connection.sock
    client.put(1, record())
    client.get(1)
    assert first is not None
    assert client._connection.sock is first


def test_the_client_reconnects_once_after_the_server_restarts_on_its_port(serve: Serve) -> None:
    first = serve()
    with MetadataClient(first.url, TOKEN) as api:
        api.put(3, record())  # the kept-alive connection the restart drops
        port = first.port
        first.stop()
        serve(port=port)
        assert api.get(3) == {"id": 3, **record()}


def test_no_server_is_an_api_error_with_status_0() -> None:
    with socket.socket() as bound:  # bound, not listening: a connection is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with MetadataClient(url, TOKEN) as api, pytest.raises(ApiUnavailable) as caught:
            api.get(1)
    assert caught.value.status == 0
    assert caught.value.retryable
    assert url in caught.value.message


def test_a_slow_answer_is_an_api_error_with_status_0_after_the_timeout(serve: Serve) -> None:
    server = serve(latency=30.0)
    with MetadataClient(server.url, TOKEN, timeout=0.2) as api, pytest.raises(ApiError) as caught:
        api.put(1, record())
    assert caught.value.status == 0
    assert "within 0.2 s" in caught.value.message


def test_check_passes_against_a_good_setup(client: MetadataClient) -> None:
    client.check()


def test_check_names_the_url_when_nothing_answers() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with MetadataClient(url, TOKEN) as api, pytest.raises(MigrationConfigError) as caught:
            api.check()
    assert str(caught.value).startswith(f"cannot reach the metadata API at {url}: ")
    assert str(caught.value).endswith("(check --api-url)")


def test_check_names_the_token_when_it_is_refused(server: MetadataServer) -> None:
    with MetadataClient(server.url, "wrong") as api, pytest.raises(MigrationConfigError) as caught:
        api.check()
    assert str(caught.value) == (
        f"the metadata API at {server.url} refused the token "
        f"(check --api-token or {TOKEN_VARIABLE})"
    )


def test_check_names_the_url_when_something_else_answers(server: MetadataServer) -> None:
    expected = r"is not the metadata API: /health gave HTTP 404.*\(check --api-url\)"
    with (
        MetadataClient(server.url + "/elsewhere", TOKEN) as api,
        pytest.raises(MigrationConfigError, match=expected),
    ):
        api.check()


def test_check_tries_again_through_passing_failures(serve: Serve) -> None:
    server = serve(fail_rate=0.5, seed=7)  # seed 7: the first two draws fail, the third passes
    with MetadataClient(server.url, TOKEN) as api:
        api.check()


def test_check_fails_on_an_api_that_keeps_failing(serve: Serve) -> None:
    server = serve(fail_rate=1.0)
    expected = "fails an authenticated request: HTTP 503: injected failure"
    with (
        MetadataClient(server.url, TOKEN) as api,
        pytest.raises(MigrationConfigError, match=expected),
    ):
        api.check()


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        (("ftp://h", TOKEN), ValueError, "'url'"),
        (("127.0.0.1:80", TOKEN), ValueError, "'url'"),
        (("http://", TOKEN), ValueError, "'url'"),
        (("http://h:99999", TOKEN), ValueError, "'url'"),
        (("http://h/?q=1", TOKEN), ValueError, "'url'"),
        ((b"http://h", TOKEN), TypeError, "'url'"),
        (("http://h", ""), ValueError, "'token'"),
        (("http://h", "a b"), ValueError, "'token'"),
        (("http://h", "line\r\nX-Evil: 1"), ValueError, "'token'"),
        (("http://h", None), TypeError, "'token'"),
    ],
)
def test_client_arguments_are_checked_at_once(
    arguments: tuple[Any, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        MetadataClient(*arguments)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "1"])
def test_client_timeout_is_checked(timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="'timeout'"):
        MetadataClient("http://h", TOKEN, timeout=timeout)


def test_put_checks_the_id_and_the_record(client: MetadataClient) -> None:
    with pytest.raises(ValueError, match="'file_id'"):
        client.put(-1, record())
    with pytest.raises(TypeError, match="'file_id'"):
        client.put(True, record())
    with pytest.raises(TypeError, match="'record'"):
        client.put(1, record(when=object()))
    with pytest.raises(TypeError, match="'record'"):
        client.put(1, record(size=float("nan")))
    assert repr(client) == f"MetadataClient({client.url!r})"  # and never the token


# -- the server's life -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"port": -1}, ValueError, "'port'"),
        ({"port": 65536}, ValueError, "'port'"),
        ({"port": "80"}, TypeError, "'port'"),
        ({"host": ""}, ValueError, "'host'"),
        ({"token": ""}, ValueError, "'token'"),
        ({"token": "a b"}, ValueError, "'token'"),
        ({"latency": -0.1}, ValueError, "'latency'"),
        ({"latency": "1"}, TypeError, "'latency'"),
        ({"fail_rate": 1.5}, ValueError, "'fail_rate'"),
        ({"fail_rate": float("nan")}, ValueError, "'fail_rate'"),
        ({"rate": 0}, ValueError, "'rate'"),
        ({"rate": float("inf")}, ValueError, "'rate'"),
        ({"seed": "x"}, TypeError, "'seed'"),
        ({"seed": True}, TypeError, "'seed'"),
        ({"db_path": 3}, TypeError, "'db_path'"),
        ({"db_path": ""}, TypeError, "'db_path'"),
    ],
)
def test_server_arguments_are_checked_at_once(
    options: dict[str, Any], error: type[Exception], named: str
) -> None:
    db_path = options.pop("db_path", ":memory:")
    with pytest.raises(error, match=named):
        MetadataServer(db_path, **options)


def test_the_server_generates_a_token_and_tells_its_port(tmp_path: Path) -> None:
    one, two = MetadataServer(tmp_path / "a.db"), MetadataServer(tmp_path / "b.db")
    assert one.token != two.token
    assert len(one.token) >= 24
    with one:
        assert one.port != 0
        assert one.url == f"http://127.0.0.1:{one.port}"
        with pytest.raises(RuntimeError, match="already started"):
            one.start()
        with MetadataClient(one.url, one.token) as api:
            api.check()
    with two.start() as started:  # entering a started server keeps it, and stops it at the end
        assert started is two
        assert stored(two) == 0
    assert two.port == 0


def test_a_port_in_use_is_a_config_error_naming_the_address(server: MetadataServer) -> None:
    with pytest.raises(MigrationConfigError, match=f"127.0.0.1:{server.port}"):
        MetadataServer(":memory:", port=server.port).start()


def test_stop_joins_every_thread_even_with_a_connection_kept_alive(serve: Serve) -> None:
    before = set(threading.enumerate())
    server = serve()
    with MetadataClient(server.url, TOKEN) as api:
        api.health()  # its connection's thread now waits for a next request
        assert len(set(threading.enumerate()) - before) == 2  # "metadata-api" and that one
        started = time.perf_counter()
        server.stop()
        assert time.perf_counter() - started < 10.0  # not IDLE_SECONDS: woken, not timed out
        assert set(threading.enumerate()) <= before
        server.stop()  # a second stop does nothing


def test_stop_drops_a_request_waiting_out_its_latency(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(latency=120.0)
    waiting = threading.Event()
    pause = server._pause

    def signalled_pause(seconds: float) -> None:
        waiting.set()
        pause(seconds)

    monkeypatch.setattr(server, "_pause", signalled_pause)
    errors: list[ApiError] = []

    def request() -> None:
        with MetadataClient(server.url, TOKEN) as api:
            try:
                api.put(1, record())
            except ApiError as error:
                errors.append(error)

    thread = threading.Thread(target=request, name="test-request")
    thread.start()
    assert waiting.wait(10.0)
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 10.0
    thread.join()
    assert [error.status for error in errors] == [0]
    second = serve()  # same db file: nothing was stored
    assert stored(second) == 0


def test_stop_waits_for_a_request_still_being_handled(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    handling = threading.Event()
    pause = server._pause

    def slow_pause(seconds: float) -> None:
        handling.set()
        threading.Event().wait(0.3)  # a request slow to finish, whatever stop() signals
        pause(seconds)

    monkeypatch.setattr(server, "_pause", slow_pause)
    errors: list[ApiError] = []

    def request() -> None:
        with MetadataClient(server.url, TOKEN) as api:
            try:
                api.put(1, record())
            except ApiError as error:
                errors.append(error)

    thread = threading.Thread(target=request, name="test-request")
    thread.start()
    assert handling.wait(10.0)
    server.stop()
    assert [t.name for t in threading.enumerate() if t.name.startswith("metadata-api")] == []
    thread.join()
    assert [error.status for error in errors] == [0]  # dropped: the server was stopping


def test_requests_are_logged_at_debug_not_to_stderr(
    server: MetadataServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="pipeline.api"):
        stored(server)
        raw(server, "GET", "/nope")
    assert capfd.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.api"]
    assert any('"GET /health HTTP/1.1" 200' in line for line in lines)
    assert any('"GET /nope HTTP/1.1" 404' in line for line in lines)


# -- the command -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "--port"),
        (["--port", "http"], "--port"),
        (["--port", "65536"], "--port"),
        (["--port", "0", "--latency", "-1"], "--latency"),
        (["--port", "0", "--fail-rate", "2"], "--fail-rate"),
        (["--port", "0", "--rate", "0"], "--rate"),
        (["--port", "0", "--token", "a b"], "--token"),
        (["--port", "0", "--seed", "-1"], "--seed"),
    ],
)
def test_main_exits_2_naming_a_bad_option(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert named in capsys.readouterr().err.splitlines()[-1]  # the error, not the usage


def test_main_exits_2_on_a_port_in_use_or_a_bad_db(
    server: MetadataServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", str(server.port), "--db", str(tmp_path / "other.db")]) == 2
    assert f"cannot serve the metadata API on 127.0.0.1:{server.port}" in capsys.readouterr().err
    assert main(["--port", "0", "--db", str(tmp_path / "no" / "such" / "dir.db")]) == 2
    assert "cannot open the API's database" in capsys.readouterr().err


def test_main_names_a_bad_token_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, "two words")
    assert main(["--port", "0", "--db", str(tmp_path / "api.db")]) == 2
    assert f"${TOKEN_VARIABLE}" in capsys.readouterr().err


def test_main_serves_in_the_foreground_until_ctrl_c(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    command = [sys.executable, "-m", "pipeline.migration._api", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--db", str(tmp_path / "api.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        shown = re.fullmatch(r"metadata API at (http://127\.0\.0\.1:\d+) \(token: (\S+)\)\n", line)
        assert shown is not None, line
        with MetadataClient(shown[1], shown[2]) as api:
            api.check()
            api.put(1, record())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert (process.returncode, out) == (0, ""), err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_generated_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # `--api-token -x...` would be read as an option: a drawn token that
    # starts with "-" is drawn again.
    import secrets

    from pipeline.migration import _api_client

    draws = iter(["-starts-with-a-dash", "fine_token"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _: next(draws))
    assert _api_client.new_token() == "fine_token"
    monkeypatch.undo()
    assert not any(_api_client.new_token().startswith("-") for _ in range(2000))
    server = MetadataServer(":memory:")
    assert not server.token.startswith("-")
