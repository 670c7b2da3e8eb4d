"""A real S3 server for the tests: moto's, one per session, on 127.0.0.1.

The fixtures (a pytest plugin, registered in ``conftest.py``):

- ``s3_endpoint`` (session): the URL (``http://127.0.0.1:PORT``) of a moto
  S3 server started on first use, in a subprocess, and stopped at the
  session's end. It checks no credentials: any key id will do.
- ``s3_auth_endpoint`` (session): another one that does check them
  (``INITIAL_NO_AUTH_ACTION_COUNT=0``): it knows no key id, so every
  request is refused with 403. Started only for the tests that ask.

The server runs in a subprocess so that moto's patching of botocore stays
out of the tests' process, and so that a Python without moto (a
free-threaded 3.13t, for which moto has no wheels) can still test against
it. :func:`find_moto_server` says which program is started, first found:

1. this Python, ``python -m moto.server``, if moto (with its server's
   flask) is installed in it;
2. a ``moto_server`` beside this Python;
3. the command in ``$PIPELINE_TEST_MOTO_SERVER`` (split like a shell);
4. the repository's own ``.venv/bin/moto_server``.

With none of them the fixtures skip, saying so (or fail, with
``$PIPELINE_TEST_REQUIRE_SERVERS`` set, as in ``.ci/run``). The server's output goes
to a file (a pipe nobody read would fill and stall it), shown when it
fails to start.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.helpers import free_port, skip_without_server

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "MotoServer",
    "find_moto_server",
    "free_port",
    "s3_auth_endpoint",
    "s3_endpoint",
]

# moto takes any credentials; these are passed to every client explicitly,
# so the tests change no environment variable and read no ~/.aws.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
ENV_COMMAND = "PIPELINE_TEST_MOTO_SERVER"
START_SECONDS = 30.0  # how long the server may take to answer its first request
STOP_SECONDS = 10.0  # how long it may take to exit on SIGTERM, before SIGKILL
REPO_ROOT = Path(__file__).resolve().parents[1]


def find_moto_server() -> list[str] | None:
    """The command that starts moto's S3 server (without ``-H``/``-p``), or ``None``."""
    if _has_moto_server():
        return [sys.executable, "-m", "moto.server"]
    beside = Path(sys.executable).parent / "moto_server"
    if os.access(beside, os.X_OK):
        return [str(beside)]
    command = os.environ.get(ENV_COMMAND, "").strip()
    if command:
        return shlex.split(command)
    own = REPO_ROOT / ".venv" / "bin" / "moto_server"
    if os.access(own, os.X_OK):
        return [str(own)]
    return None


def _has_moto_server() -> bool:
    # Whether `import moto.server` would work, without importing it: moto's
    # import hooks botocore, and the tests' process should have none of it.
    spec = importlib.util.find_spec("moto")
    if spec is None or not spec.submodule_search_locations:
        return False
    if not any((Path(p) / "server.py").is_file() for p in spec.submodule_search_locations):
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("flask", "flask_cors"))


class MotoServer:
    """moto's S3 server in a subprocess: :meth:`start`, then :meth:`stop`.

    Args:
        command: the program and its arguments, as :func:`find_moto_server` gives.
        env: variables added to the server's environment.
    """

    def __init__(self, command: list[str], env: Mapping[str, str] | None = None) -> None:
        self.command = command
        self.env = {**os.environ, **(env or {})}
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        handle, log = tempfile.mkstemp(prefix="pipeline-moto-", suffix=".log")
        os.close(handle)  # reopened for each start
        self.log = Path(log)

    @property
    def url(self) -> str:
        """The server's endpoint URL."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server; return once it answers HTTP (polled against a deadline).

        Should another process take the port between the probe and the
        server's bind, the start is tried again on another port.
        """
        for _ in range(3):
            self.port = free_port()
            with self.log.open("wb") as log:
                self.process = subprocess.Popen(
                    [*self.command, "-H", self.host, "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                )
            failure = self._wait_until_up(self.process)
            if failure is None:
                return
            self._reap()
            if "in use" not in self.output():
                break
        message = f"moto's server ({shlex.join(self.command)}) {failure}:\n{self.output()}"
        raise RuntimeError(message)

    def _wait_until_up(self, process: subprocess.Popen[bytes]) -> str | None:
        """``None`` once the server answers HTTP; else why it did not."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"exited with code {process.returncode}"
            connection = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
            try:
                connection.request("GET", "/")
                connection.getresponse().read()
                return None  # any answer: it serves HTTP
            except (OSError, http.client.HTTPException):
                pass  # not listening (or not answering) yet
            finally:
                connection.close()
            time.sleep(0.05)  # a poll interval, not a wait for readiness
        return f"did not answer HTTP within {START_SECONDS:g} s"

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _reap(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a while), wait for it, drop its log."""
        try:
            self._reap()
        finally:
            self.log.unlink(missing_ok=True)


def _serve(env: Mapping[str, str] | None = None) -> Iterator[str]:
    command = find_moto_server()
    if command is None:
        skip_without_server(
            "no moto S3 server: moto[server] is not installed in this Python, there is no"
            f" moto_server beside it, ${ENV_COMMAND} is not set and {REPO_ROOT}/.venv/bin/"
            "moto_server does not exist (pip install 'moto[server]')"
        )
    server = MotoServer(command, env)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of the session's moto S3 server; skips if there is none to run."""
    yield from _serve()


@pytest.fixture(scope="session")
def s3_auth_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server that checks credentials, and knows none."""
    yield from _serve({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
