"""The one error hierarchy of Shoal.

Every error a user can see is a `ShoalError`. Errors carry their data as attributes and their
`str()` is one readable line. Servicers raise these; `shoal.common.rpc` turns them into gRPC
status codes plus a `shoal-error` trailer, and the SDK turns them back into the same class, so
no raw gRPC error reaches a user.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of every error Shoal raises to its users.

    `request_id` is the id of the SDK operation that failed (sent with each of its RPCs and
    logged by the daemons that handled them); "" when the error did not come from one.
    """

    request_id: str = ""


class InvalidArgument(ShoalError):
    """A name, key, size, `k`/`n` or flag is out of range; the message says what is allowed."""


class NotFound(ShoalError):
    """The bucket, object, node or job does not exist."""


class AlreadyExists(ShoalError):
    """The bucket (or other named thing) already exists."""


class BucketNotEmpty(ShoalError):
    """A bucket that still holds objects cannot be deleted."""


class Unavailable(ShoalError):
    """The data or service cannot be reached now (too many nodes down, timeouts)."""


class InsufficientNodes(Unavailable):
    """The cluster has fewer nodes (or live nodes) than the request needs."""

    def __init__(self, message: str, *, needed: int = 0, available: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class CorruptData(ShoalError):
    """Stored bytes failed checksum verification and could not be recovered."""


class ConnectionFailed(ShoalError):
    """The coordinator (or a daemon) could not be reached at all."""


class PermissionDenied(ShoalError):
    """The caller lacks the cluster's credentials."""


class ConfigError(ShoalError):
    """A daemon setting is unknown or invalid; the message names the key and its source."""


class JobFailed(ShoalError):
    """A job failed (or was cancelled); `remote_traceback` holds the failing task's traceback."""

    def __init__(self, message: str, *, job_id: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.job_id = job_id
        self.remote_traceback = remote_traceback


class JobCancelled(JobFailed):
    """The job was cancelled before it finished."""


ERROR_CLASSES: dict[str, type[ShoalError]] = {
    cls.__name__: cls
    for cls in (
        ShoalError,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        BucketNotEmpty,
        Unavailable,
        InsufficientNodes,
        CorruptData,
        ConnectionFailed,
        PermissionDenied,
        ConfigError,
        JobFailed,
        JobCancelled,
    )
}
