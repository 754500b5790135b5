"""The Shoal Python SDK.

    from shoal.client import Client
    with Client("127.0.0.1:7000") as shoal:
        shoal.create_bucket("photos", k=4, n=6)
        shoal.put("photos", "cat.jpg", "cat.jpg")          # bytes, a path, a file or an iterable
        data = shoal.get("photos", "cat.jpg", offset=0, length=1024)

`AsyncClient` has the same methods as coroutines. Every error is a `ShoalError` subclass.
"""

import os

# gRPC's C core writes failed TLS handshakes and similar to stderr at INFO level; the SDK
# reports them as typed errors (ConnectionFailed saying what went wrong), so unless the user
# chose a verbosity, core logging is kept to errors. It must be set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from shoal.client.async_client import AsyncClient, AsyncObjectStream
from shoal.client.get import GetTuning
from shoal.client.jobs import AsyncJob, JobOptions, JobStatus, TaskLog
from shoal.client.put import PutTuning
from shoal.client.sync_client import Client, Job, ObjectStream
from shoal.client.types import BucketInfo, ObjectInfo, RepairErrorInfo
from shoal.common.errors import (
    AlreadyExists,
    BucketNotEmpty,
    ConnectionFailed,
    CorruptData,
    InsufficientNodes,
    InvalidArgument,
    JobCancelled,
    JobFailed,
    NotFound,
    PermissionDenied,
    ShoalError,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncJob",
    "AsyncObjectStream",
    "BucketInfo",
    "BucketNotEmpty",
    "Client",
    "ConnectionFailed",
    "CorruptData",
    "GetTuning",
    "InsufficientNodes",
    "InvalidArgument",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobOptions",
    "JobStatus",
    "NotFound",
    "ObjectInfo",
    "ObjectStream",
    "PermissionDenied",
    "PutTuning",
    "RepairErrorInfo",
    "ShoalError",
    "TaskLog",
    "Unavailable",
]
