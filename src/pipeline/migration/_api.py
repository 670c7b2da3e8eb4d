"""The migration's metadata API: its protocol, its server and client, the ``api-server`` command.

The API keeps one JSON record per file id, where the migration registers
each file it copied and the verifier reads it back. Over HTTP/1.1 (JSON in
and out, keep-alive), every ``/files`` request carrying
``Authorization: Bearer TOKEN``::

    GET /health        200 {"status": "ok", "records": N}    (no token needed)
    GET /files         200 {"ids": [0, 1, ...]}                  (sorted)
    GET /files/ID      200 the record; 404 if there is none
    PUT /files/ID      201 the record, stored for the first time;
                       200 the record, replacing one (or the same again)

A ``PUT`` body is a JSON object with ``name`` (a string), ``size`` (a whole
number >= 0), ``checksum`` (sha256, 64 hex digits) and ``dest_key`` (a
string); other string or number fields are kept as given. It is idempotent:
the same ``PUT`` replayed leaves one record. Every refusal is
``{"error": "..."}`` naming what is wrong, and changes nothing:

    400  bad JSON, not an object, a field missing or ill-typed, a bad id
    401  no token, or not the API's          404  an unknown path or record
    405  a method the path does not take     411  a PUT without Content-Length
    413  a body over 1 MiB                   500  the server's database failed
    501  a method HTTP does not know         503  ``fail_rate``'s injected failure

The server is :class:`MetadataServer` (:mod:`._api_server`), the client
:class:`MetadataClient` (:mod:`._api_client`); :func:`main` runs the server
in the foreground (``python -m pipeline api-server``).

>>> with MetadataServer(":memory:") as server, MetadataClient(server.url, server.token) as client:
...     record = {"name": "a.pdf", "size": 3, "checksum": "ab" * 32, "dest_key": "2026/a.pdf"}
...     client.put(1, record)["id"], client.get(1) == {"id": 1, **record}, client.get(2)
(1, True, None)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from ._api_client import MAX_FILE_ID, TOKEN_VARIABLE, MetadataClient, check_token, new_token
from ._api_server import MAX_BODY, MetadataServer, check_record
from ._errors import MigrationConfigError

__all__ = [
    "MAX_BODY",
    "MAX_FILE_ID",
    "TOKEN_VARIABLE",
    "MetadataClient",
    "MetadataServer",
    "build_parser",
    "check_record",
    "check_token",
    "main",
    "new_token",
]

EXIT_OK = 0
EXIT_USAGE = 2


def _token(text: str) -> str:
    try:
        return check_token("token", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("'token' must be", "must be")) from None


def build_parser(prog: str = "python -m pipeline api-server") -> argparse.ArgumentParser:
    """The ``api-server`` command's options."""
    # The CLI's argparse types, imported here: _cli imports the stages, which
    # import this package, so a module-level import could be circular.
    from .._cli import number, seconds, whole_number  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the migration's metadata API in the foreground until Ctrl-C.",
        epilog="Exit codes: 0 stopped by Ctrl-C, 2 bad option or setup (a port in use).",
    )
    parser.add_argument(
        "--port", type=whole_number(0, 65535), required=True, help="the port (0: any free one)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="the address (default 127.0.0.1)")
    parser.add_argument(
        "--db", default="metadata-api.db", help="the records' SQLite file (default metadata-api.db)"
    )
    parser.add_argument(
        "--token", type=_token, help=f"the bearer token (default: ${TOKEN_VARIABLE}, or generated)"
    )
    parser.add_argument(
        "--latency", type=seconds(60.0), default=0.0, help="seconds added to each PUT (0)"
    )
    parser.add_argument(
        "--fail-rate",
        type=number(0.0, 1.0, what="a fraction"),
        default=0.0,
        help="the share of requests answered 503 (0)",
    )
    parser.add_argument(
        "--rate",
        type=number(0.001, 1e6),
        default=None,
        help="the most requests a second; more wait their turn (default: no cap)",
    )
    parser.add_argument("--seed", type=whole_number(0), default=None, help="seed of --fail-rate")
    # For a parent that runs the server as its child (the migration tool's
    # embedded API): serve until stdin closes, which it does when the parent
    # ends, even by kill -9, so no server outlives its migrator.
    parser.add_argument("--until-stdin-closes", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Serve the metadata API in the foreground until Ctrl-C; return the exit code.

    Prints one line: the URL, and the token when it was generated.

    >>> main(["--port", "http"])
    2
    """
    from .._cli import parse_args, program_name  # noqa: PLC0415 (see build_parser)

    parser = build_parser(prog or f"{program_name()} api-server")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    try:
        if token is not None and args.token is None:
            check_token(f"${TOKEN_VARIABLE}", token)
        server = MetadataServer(
            args.db,
            host=args.host,
            port=args.port,
            token=token,
            latency=args.latency,
            fail_rate=args.fail_rate,
            rate=args.rate,
            seed=args.seed,
        ).start()
    except (MigrationConfigError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    try:
        shown = "" if token is not None else f" (token: {server.token})"
        print(f"metadata API at {server.url}{shown}", flush=True)  # noqa: T201 (its one line)
        if args.until_stdin_closes:
            sys.stdin.buffer.read()  # until EOF: the parent closed it, or ended
            return EXIT_OK
        while True:  # until Ctrl-C: a sleep is what SIGINT interrupts on every OS
            time.sleep(3600)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
