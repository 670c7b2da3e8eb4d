"""The file migration's real parts: the files database, object stores, the metadata API.

The stages that use them (:class:`~pipeline.stages.S3Uploader`,
:class:`~pipeline.stages.APIUploader`, :class:`~pipeline.stages.Verifier`)
are in :mod:`pipeline.stages`; ``python -m pipeline data`` (and
``./run_data_example.py``) wires them into the migration tool.

- :class:`FileTable`: the ``files`` table, with claims and leases so that
  several migrators can share it: :class:`SQLiteFileTable` (embedded) and
  ``PostgresFileTable`` (the ``postgres`` extra); :func:`open_file_table`.
- :class:`ObjectStore`: buckets of objects: :class:`LocalStore` (a folder
  per bucket, embedded) and ``S3Store`` (the ``s3`` extra, boto3).
- The metadata API: :class:`MetadataServer` (stdlib ``http.server``) and
  :class:`MetadataClient`.

``MetadataServer``, ``MetadataClient``, ``S3Store`` and ``PostgresFileTable``
are imported when first used (``S3Store`` needs boto3, ``PostgresFileTable``
psycopg), so importing the package stays cheap.
"""

import typing

from ._errors import ApiError as ApiError
from ._errors import ApiUnavailable as ApiUnavailable
from ._errors import ChecksumMismatch as ChecksumMismatch
from ._errors import LeaseLost as LeaseLost
from ._errors import MigrationConfigError as MigrationConfigError
from ._errors import MigrationError as MigrationError
from ._errors import ObjectMissing as ObjectMissing
from ._errors import UnsafeKey as UnsafeKey
from ._files import API_UPLOADED as API_UPLOADED
from ._files import FAILED as FAILED
from ._files import READY as READY
from ._files import S3_COPIED as S3_COPIED
from ._files import STATUSES as STATUSES
from ._files import UNFINISHED as UNFINISHED
from ._files import VERIFIED as VERIFIED
from ._files import FileRecord as FileRecord
from ._files import FileTable as FileTable
from ._files import SQLiteFileTable as SQLiteFileTable
from ._files import open_file_table as open_file_table
from ._migrate import Migration as Migration
from ._migrate import MigrationResult as MigrationResult
from ._migrate import PlannedStep as PlannedStep
from ._migrate import seed_files as seed_files
from ._store import LocalStore as LocalStore
from ._store import ObjectInfo as ObjectInfo
from ._store import ObjectStore as ObjectStore
from ._store import check_key as check_key

if typing.TYPE_CHECKING:
    from ._api import MetadataClient as MetadataClient
    from ._api import MetadataServer as MetadataServer
    from ._postgres import PostgresFileTable as PostgresFileTable
    from ._s3 import S3Store as S3Store

_ON_DEMAND = {
    "MetadataClient": "._api",
    "MetadataServer": "._api",
    "PostgresFileTable": "._postgres",
    "S3Store": "._s3",
}


def __getattr__(name: str) -> typing.Any:
    """Import the names of :data:`_ON_DEMAND` when first asked for."""
    if name not in _ON_DEMAND:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(_ON_DEMAND[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "API_UPLOADED",
    "FAILED",
    "READY",
    "S3_COPIED",
    "STATUSES",
    "UNFINISHED",
    "VERIFIED",
    "ApiError",
    "ApiUnavailable",
    "ChecksumMismatch",
    "FileRecord",
    "FileTable",
    "LeaseLost",
    "LocalStore",
    "MetadataClient",
    "MetadataServer",
    "Migration",
    "MigrationConfigError",
    "MigrationError",
    "MigrationResult",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "PlannedStep",
    "PostgresFileTable",
    "S3Store",
    "SQLiteFileTable",
    "UnsafeKey",
    "check_key",
    "open_file_table",
    "seed_files",
]
