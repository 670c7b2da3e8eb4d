"""The migration's errors: one branch of the library's exception tree.

::

    PipelineError
     └── MigrationError
          ├── MigrationConfigError   a bad setting, found before any work starts
          ├── UnsafeKey              a name or key that would leave its bucket
          ├── ObjectMissing          a source object that is not there
          ├── ChecksumMismatch       bytes that are not the ones recorded
          ├── ApiError               the metadata API answered with an error
          │    └── ApiUnavailable     ... one worth retrying (no answer, 429, 5xx)
          └── LeaseLost              another migrator took over a claimed file

Every one but ``MigrationConfigError`` is about one file: the stages let it
fail that file (a ``FAILED`` row with the reason, a dead letter in the run's
report) and go on with the others.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import PipelineError

__all__ = [
    "ApiError",
    "ApiUnavailable",
    "ChecksumMismatch",
    "LeaseLost",
    "MigrationConfigError",
    "MigrationError",
    "ObjectMissing",
    "UnsafeKey",
]


class MigrationError(PipelineError):
    """Base class of the file migration's errors."""


class MigrationConfigError(MigrationError):
    """A setting the migration cannot work with; the message names what to fix.

    Raised before any file is touched: an unreachable endpoint, a database
    path that cannot be written, a bucket that does not exist, a wrong token.
    The command line exits with code 2 on it.
    """


class UnsafeKey(MigrationError, ValueError):  # noqa: N818 (reads as what the key is)
    """An object key or file name that would escape its bucket (``..``, an absolute path)."""


class ObjectMissing(MigrationError, LookupError):  # noqa: N818
    """The object to copy or verify is not in its bucket."""


class ChecksumMismatch(MigrationError):  # noqa: N818
    """An object's sha256 is not the one the database records for it."""


class ApiError(MigrationError):
    """The metadata API answered ``status`` (0: no answer at all).

    ``retryable`` is true for what may pass on a second try: no answer, a
    timeout, 429 and the 5xx answers.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its two fields: Exception's own reduce would call
        # cls(str(self)) and fail, and an API stage's error must come back
        # from a worker process (or a Dask cluster) as itself, so that
        # Retry(on=ApiUnavailable) still retries it.
        return type(self), (self.status, self.message), self.__dict__

    @property
    def retryable(self) -> bool:
        """Whether trying the same request again may succeed."""
        return self.status in {0, 429} or self.status >= 500

    @classmethod
    def of(cls, status: int, message: str) -> ApiError:
        """The error for an answer: an :class:`ApiUnavailable` when it is worth retrying.

        >>> type(ApiError.of(503, "busy")).__name__, type(ApiError.of(400, "bad")).__name__
        ('ApiUnavailable', 'ApiError')
        """
        error = cls(status, message)
        return ApiUnavailable(status, message) if error.retryable else error


class ApiUnavailable(ApiError):  # noqa: N818 (reads as the API's state)
    """No answer, or 429 or 5xx: a retry may pass (``Retry(on=ApiUnavailable)``)."""


class LeaseLost(MigrationError):  # noqa: N818
    """This migrator's claim on a file expired and another one took the file over."""
