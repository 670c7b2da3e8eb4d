"""Whether a migration's parts can be reached from the Dask cluster its uploaders run on.

With ``Migration(executor=<a Dask cluster>)`` the S3 and API uploaders run
on the cluster's workers, carrying the table, the stores and the API client
as their configuration, and each worker connects to them from where it is.
On this machine anything goes: an SQLite file is shared by processes (see
:class:`~pipeline.migration.SQLiteFileTable`), and ``127.0.0.1`` is this
machine. A worker on another machine can reach neither: an SQLite file is
one machine's (its locks do not hold over a network filesystem), and a
loopback address is that worker's own. :func:`check_reachable` asks the
workers for their host names and refuses those parts, saying what to use
instead; a folder store is only warned about, as a folder all the machines
share (a network filesystem) does work.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from .._dask import Dask, is_dask_client
from ._errors import MigrationConfigError
from ._files import FileTable, SQLiteFileTable
from ._store import LocalStore, ObjectStore

__all__ = ["check_reachable"]

logger = logging.getLogger("pipeline.migration")

_CONNECT_SECONDS = 10.0  # how long the check waits to reach a scheduler given by address


def check_reachable(
    executor: object,
    table: FileTable,
    store: ObjectStore,
    dest_store: ObjectStore | None,
    api: object,
) -> None:
    """Refuse the parts only this machine reaches, if ``executor``'s cluster has other machines.

    Nothing to do unless ``executor`` is a Dask cluster (a Client, a
    ``"dask://"`` address, a :class:`~pipeline.Dask`); an address is
    connected to for the check. The workers are asked for their host
    names once: a worker that joins later is not checked.

    Raises:
        MigrationConfigError: some worker is on another machine, and the
            table is SQLite, or a part is at a loopback address; or the
            scheduler of an address cannot be reached.
    """
    hosts = _cluster_hosts(executor)
    here = socket.gethostname()
    elsewhere = sorted({f"{host} ({worker})" for worker, host in hosts.items() if host != here})
    if not elsewhere:
        return
    where = f"the Dask cluster has workers on other machines: {', '.join(elsewhere)}"
    unreachable = _one_machines(table, store, dest_store, api)
    if unreachable:
        raise MigrationConfigError(f"{where}; they cannot use {'; nor '.join(unreachable)}")
    for part in _stores(store, dest_store):
        if isinstance(part, LocalStore):
            logger.warning(
                "%s: the %s must be a folder they share, under the same path"
                " (else use --s3-endpoint)",
                where,
                part.describe(),
            )


def _stores(store: ObjectStore, dest_store: ObjectStore | None) -> list[ObjectStore]:
    # The store, and the destination's if it is another one.
    return [store] if dest_store is None or dest_store is store else [store, dest_store]


def _cluster_hosts(executor: object) -> dict[str, str]:
    """The host name of each worker of ``executor``'s Dask cluster; ``{}`` if it is none."""
    if isinstance(executor, str) and executor.startswith("dask://"):
        executor = Dask(executor)
    if is_dask_client(executor):
        return dict(_ask_hosts(executor))
    if not isinstance(executor, Dask):
        return {}
    if executor.client is not None:
        return dict(_ask_hosts(executor.client))
    import distributed  # noqa: PLC0415 (the dask extra: Dask() checked it is there)

    connect: Any = distributed.Client  # untyped
    try:
        client = connect(executor.address, timeout=_CONNECT_SECONDS, set_as_default=False)
    except OSError as exc:
        message = f"cannot reach the Dask scheduler at {executor.address}: {exc}"
        raise MigrationConfigError(message) from None
    with client:
        return dict(_ask_hosts(client))


def _ask_hosts(client: Any) -> Any:
    return client.run(socket.gethostname)


def _one_machines(
    table: FileTable, store: ObjectStore, dest_store: ObjectStore | None, api: object
) -> list[str]:
    """The parts that only this machine can reach, each saying what to use instead."""
    found = []
    table_url = getattr(table, "url", None)  # a PostgreSQL table's
    if isinstance(table, SQLiteFileTable):
        found.append(
            f"the {table.describe()}, a file of this machine (use PostgreSQL: --db postgresql://...)"
        )
    elif isinstance(table_url, str) and _postgres_is_local(table_url):
        found.append(f"the {table.describe()}, this machine's loopback or socket (check --db)")
    found += [
        f"the {part.describe()}, this machine's loopback (check --s3-endpoint)"
        for part in _stores(store, dest_store)
        if _is_loopback(getattr(part, "endpoint_url", None))
    ]
    url = getattr(api, "url", None)
    if _is_loopback(url):
        found.append(
            f"the metadata API at {url}, this machine's loopback"
            " (--api-url an address the workers reach)"
        )
    return found


def _is_loopback(url: object) -> bool:
    """Whether ``url`` names this machine's loopback (``127.0.0.1``, ``::1``, ``localhost``).

    >>> _is_loopback("http://127.0.0.1:9000"), _is_loopback("https://s3.example.com")
    (True, False)
    """
    if not isinstance(url, str):
        return False
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and _is_loopback_host(host)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _postgres_is_local(url: str) -> bool:
    """Whether a PostgreSQL connection string reaches this machine only.

    No host (libpq's default: a Unix socket), a socket's folder, or a
    loopback address; with several hosts, all of them.
    """
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 (the table imported it)

    try:
        hosts = str(conninfo_to_dict(url).get("host") or "")
    except Exception:  # noqa: BLE001 (the table connected with it: not ours to judge)
        return False
    return all(not h or h.startswith("/") or _is_loopback_host(h) for h in hosts.split(","))
