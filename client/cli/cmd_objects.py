"""Bucket and object commands: mb, rb, put, get, ls, rm, stat."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime

from shoal.client import Client
from shoal.client.cli.address import open_client
from shoal.client.cli.refs import parse_listing_ref, parse_object_ref
from shoal.client.cli.transfer import download_to_file, download_to_stdout, upload
from shoal.common.units import format_bytes


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _redundancy(args: argparse.Namespace) -> tuple[int | None, int | None]:
    k: int | None = args.k
    n: int | None = args.n
    return k, n


def cmd_mb(args: argparse.Namespace) -> int:
    """Create a bucket."""
    k, n = _redundancy(args)
    with open_client(args) as client:
        info = client.create_bucket(args.bucket, k, n)
    print(f"created bucket {info.name} (k={info.k}, n={info.n})")
    return 0


def cmd_rb(args: argparse.Namespace) -> int:
    """Delete an empty bucket."""
    with open_client(args) as client:
        client.delete_bucket(args.bucket)
    print(f"deleted bucket {args.bucket}")
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    """Upload a file (or stdin with '-') as BUCKET/KEY."""
    bucket, key = parse_object_ref(args.target)
    k, n = _redundancy(args)
    with open_client(args) as client:
        info = upload(client, args.file, bucket, key, k, n)
    print(f"{info.bucket}/{info.key}: {info.size} bytes, etag {info.etag}, k={info.k} n={info.n}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Download BUCKET/KEY to a file, or to stdout without FILE or with '-'."""
    bucket, key = parse_object_ref(args.source)
    with open_client(args) as client:
        if args.file in (None, "-"):
            download_to_stdout(client, bucket, key)
        else:
            download_to_file(client, bucket, key, args.file)
    return 0


def _list_buckets(client: Client) -> None:
    for bucket in client.list_buckets():
        print(f"{_when(bucket.created)}  k={bucket.k:<3} n={bucket.n:<3} {bucket.name}")


def _list_objects(client: Client, bucket: str, prefix: str) -> None:
    for info in client.list(bucket, prefix):
        print(f"{_when(info.created)}  {info.size:>14}  {info.key}")


def cmd_ls(args: argparse.Namespace) -> int:
    """List buckets, or the objects of BUCKET (optionally under PREFIX)."""
    with open_client(args) as client:
        if args.path is None:
            _list_buckets(client)
        else:
            _list_objects(client, *parse_listing_ref(args.path))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete BUCKET/KEY."""
    bucket, key = parse_object_ref(args.target)
    with open_client(args) as client:
        client.delete(bucket, key)
    print(f"deleted {bucket}/{key}")
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    """Print every metadata field of BUCKET/KEY."""
    bucket, key = parse_object_ref(args.target)
    with open_client(args) as client:
        info = client.head(bucket, key)
    for field in dataclasses.fields(info):
        value = getattr(info, field.name)
        if isinstance(value, datetime):
            text = value.isoformat()
        elif field.name == "size":
            text = f"{value} ({format_bytes(value)})"
        else:
            text = str(value)
        print(f"{field.name + ':':<14}{text}")
    return 0


def _add_redundancy(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--k", type=int, help=f"data shards per stripe ({what})")
    parser.add_argument("--n", type=int, help=f"total shards per stripe ({what})")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the bucket and object subcommands to `sub`."""
    mb = sub.add_parser("mb", parents=[common], help="create a bucket")
    mb.add_argument("bucket", metavar="BUCKET")
    _add_redundancy(mb, "default: the cluster's")
    mb.set_defaults(handler=cmd_mb)

    rb = sub.add_parser("rb", parents=[common], help="delete an empty bucket")
    rb.add_argument("bucket", metavar="BUCKET")
    rb.set_defaults(handler=cmd_rb)

    put = sub.add_parser("put", parents=[common], help="upload a file ('-' reads stdin)")
    put.add_argument("file", metavar="FILE")
    put.add_argument("target", metavar="BUCKET/KEY")
    _add_redundancy(put, "default: the bucket's")
    put.set_defaults(handler=cmd_put)

    get = sub.add_parser("get", parents=[common], help="download an object (stdout by default)")
    get.add_argument("source", metavar="BUCKET/KEY")
    get.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help="destination file or directory; '-' is stdout",
    )
    get.set_defaults(handler=cmd_get)

    ls = sub.add_parser("ls", parents=[common], help="list buckets, or the objects of a bucket")
    ls.add_argument("path", metavar="BUCKET[/PREFIX]", nargs="?")
    ls.set_defaults(handler=cmd_ls)

    rm = sub.add_parser("rm", parents=[common], help="delete an object")
    rm.add_argument("target", metavar="BUCKET/KEY")
    rm.set_defaults(handler=cmd_rm)

    stat = sub.add_parser("stat", parents=[common], help="show an object's metadata")
    stat.add_argument("target", metavar="BUCKET/KEY")
    stat.set_defaults(handler=cmd_stat)
