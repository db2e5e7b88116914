"""Where outputs live: a local path or an ``s3://bucket/prefix`` URI, behind one small API.

Objects go through boto3, Ray Data through pyarrow's S3 filesystem. Both read the endpoint and
credentials from the standard AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), so the same code talks
to AWS, to an S3-compatible server on a cluster, or to the test suite's server on 127.0.0.1.

Writes are atomic: locally a temporary file in the target directory is renamed over the target;
on S3 an object appears with its single PUT. A reader therefore sees either the old object or the
whole new one, never a partial write.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

S3_SCHEME = "s3://"


class StorageError(OSError):
    """A storage URI that cannot be used: names the URI and what is wrong with it."""


def is_s3(uri: str | Path) -> bool:
    """True when ``uri`` names an object-storage location (``s3://bucket/...``)."""
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises StorageError without a bucket."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    rest = uri[len(S3_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
    return bucket, key.strip("/")


def join(uri: str | Path, *parts: str) -> str:
    """Join path parts onto a local path or an S3 URI (always with ``/`` on S3)."""
    uri = str(uri)
    if is_s3(uri):
        pieces = [uri.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
        return "/".join(pieces)
    return str(Path(uri, *parts))


# ---------------------------------------------------------------------------------------------
# S3 clients


def _endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


_clients: dict[tuple, object] = {}


def s3_client():
    """A boto3 S3 client for the endpoint in the environment (cached per endpoint and process).

    Standard retries with few attempts: an unreachable server fails in seconds, not minutes.
    """
    import boto3
    from botocore.config import Config

    key = (
        _endpoint_url(),
        _region(),
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    client = _clients.get(key)
    if client is None:
        client = boto3.client(
            "s3",
            endpoint_url=key[0],
            region_name=key[1],
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        _clients[key] = client
    return client


def _is_missing(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


# ---------------------------------------------------------------------------------------------
# Objects


def exists(uri: str | Path) -> bool:
    """True when ``uri`` is an existing file/object, or a directory/prefix holding something."""
    uri = str(uri)
    if not is_s3(uri):
        return Path(uri).exists()
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    client = s3_client()
    if key:
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as e:
            if not _is_missing(e):
                raise
    prefix = f"{key}/" if key else ""
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as e:
        if _is_missing(e):
            return False
        raise
    return listed.get("KeyCount", 0) > 0


def read_bytes(uri: str | Path) -> bytes:
    """The whole content of a file or object; FileNotFoundError names a missing one."""
    uri = str(uri)
    if not is_s3(uri):
        return Path(uri).read_bytes()
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if _is_missing(e):
            raise FileNotFoundError(f"{uri} does not exist") from e
        raise


def write_bytes(uri: str | Path, data: bytes) -> str:
    """Write ``data`` to ``uri`` atomically (temp file + rename locally, one PUT on S3)."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        if not key:
            raise StorageError(f"{uri!r} names a bucket, not an object")
        s3_client().put_object(Bucket=bucket, Key=key, Body=bytes(data))
        return uri
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return uri


def read_text(uri: str | Path, encoding: str = "utf-8") -> str:
    """The content of a text file or object."""
    return read_bytes(uri).decode(encoding)


def write_text(uri: str | Path, text: str, encoding: str = "utf-8") -> str:
    """Write text atomically (see :func:`write_bytes`)."""
    return write_bytes(uri, text.encode(encoding))


def delete(uri: str | Path) -> None:
    """Remove one file or object; a missing one is not an error."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


def list_prefix(uri: str | Path) -> list[str]:
    """Every file/object below a directory/prefix (recursively), as full URIs, sorted.

    A missing directory or prefix lists as empty. Temporary files of atomic writes are skipped,
    and so are the empty ``dir/`` marker objects pyarrow's S3 filesystem writes (files only, as
    on a local disk).
    """
    uri = str(uri)
    if not is_s3(uri):
        root = Path(uri)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            return []
        return sorted(
            str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
        )
    bucket, key = split_s3(uri)
    prefix = f"{key}/" if key else ""
    out: list[str] = []
    paginator = s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        out.extend(
            f"{S3_SCHEME}{bucket}/{obj['Key']}"
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        )
    return sorted(out)


def open_input(uri: str | Path) -> IO[bytes]:
    """A seekable binary file object over a file or object (S3 objects are read into memory)."""
    uri = str(uri)
    if not is_s3(uri):
        return open(uri, "rb")  # noqa: SIM115 - the caller owns the handle
    return io.BytesIO(read_bytes(uri))


def pyarrow_filesystem(uri: str | Path):
    """``(filesystem, path)`` for pyarrow / Ray Data: S3FileSystem + ``bucket/prefix`` for S3
    (endpoint and region from the environment), LocalFileSystem + an absolute path otherwise."""
    import pyarrow.fs as pafs

    uri = str(uri)
    if not is_s3(uri):
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    bucket, key = split_s3(uri)
    kwargs: dict = {"region": _region()}
    endpoint = _endpoint_url()
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:
            scheme, host = "https", endpoint
        kwargs["endpoint_override"] = host.rstrip("/")
        kwargs["scheme"] = scheme
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs), f"{bucket}/{key}".rstrip("/")


def copy_to_local(uri: str | Path, dir: str | Path) -> Path:
    """Copy a file/object or a whole directory/prefix into local ``dir``.

    Returns the local path of the copy: ``dir/<name>`` for one file, ``dir`` for a prefix (its
    tree mirrored below ``dir``).
    """
    uri = str(uri)
    dest = Path(dir)
    dest.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        src = Path(uri)
        if src.is_file():
            target = dest / src.name
            shutil.copy2(src, target)
            return target
        if not src.is_dir():
            raise FileNotFoundError(f"{uri} does not exist")
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return dest
    bucket, key = split_s3(uri)
    objects = list_prefix(uri)
    if not objects:
        if not key:
            raise FileNotFoundError(f"{uri} holds no objects")
        target = _confined(dest, key.rsplit("/", 1)[-1], uri)
        target.write_bytes(read_bytes(uri))  # raises FileNotFoundError when missing
        return target
    base = f"{S3_SCHEME}{bucket}/{key}/" if key else f"{S3_SCHEME}{bucket}/"
    for obj in objects:
        target = _confined(dest, obj[len(base) :], obj)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3_client().download_file(bucket, obj[len(S3_SCHEME) + len(bucket) + 1 :], str(target))
    return dest


def _confined(dest: Path, rel: str, uri: str) -> Path:
    """``dest / rel``, refusing keys that would land outside ``dest``: object keys are any
    string, and one holding ``../`` or a leading ``/`` must not write elsewhere on the disk."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("..", ".") for p in parts) or not parts[-1]:
        raise StorageError(
            f"{uri!r}: key part {rel!r} would be copied outside {dest} (absolute, '.' or '..' "
            "segments); only plain relative keys like 'audio/s1/a.wav' can be copied"
        )
    target = dest / rel
    if not target.resolve().is_relative_to(dest.resolve()):
        raise StorageError(f"{uri!r}: {target} resolves outside {dest} (a symlink in the way?)")
    return target


def upload_dir(dir: str | Path, uri: str | Path) -> list[str]:
    """Copy every file below local ``dir`` to ``uri`` keeping relative paths; returns the URIs."""
    src = Path(dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a directory")
    written: list[str] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        target = join(uri, *rel.split("/"))
        if is_s3(target):
            bucket, key = split_s3(target)
            s3_client().upload_file(str(path), bucket, key)
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        written.append(target)
    return written
