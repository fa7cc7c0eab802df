"""A directory a batch run reads or writes, on the pod's filesystem or under an S3
prefix, through pyarrow's own filesystems (``pyarrow.fs``; no other S3 client).

Local places (``pvc://`` mounted, ``file://``, a path) keep POSIX's guarantees: a file
is written under a temporary name, flushed and renamed. S3 has no rename (a "move" is
a copy and a delete), but an object appears whole or not at all: a PUT, or a multipart
upload, becomes visible only when it completes. So on S3 a shard's file is uploaded
straight to its key, one of its own for each attempt, and the shard's manifest (its own
small object, written after) is the commit marker (:mod:`kubeloop.batch.commit`). A pod
killed mid-upload leaves no object, only an incomplete multipart upload that the
bucket's AbortIncompleteMultipartUpload lifecycle rule removes.

S3 settings come from the pod's environment (the operator renders them from
``spec.s3``): ``AWS_ENDPOINT_URL`` (``http(s)://HOST[:PORT]``: MinIO, Ceph and the like),
``AWS_REGION``, and ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``
from the user's Secret; without keys, the AWS SDK's default chain (a pod identity).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from kubeloop.batch import BatchError
from kubeloop.names import (
    S3_ENDPOINT_ENV,
    S3_KEY_ID_ENV,
    S3_REGION_ENV,
    S3_SECRET_KEY_ENV,
    S3_SESSION_TOKEN_ENV,
)

S3_SCHEME = "s3"
TEMP_SUFFIX = ".tmp"
CHUNK_BYTES = 1 << 20


def is_s3(uri: str) -> bool:
    return urlsplit(uri).scheme.lower() == S3_SCHEME


def s3_key(uri: str) -> str:
    """``BUCKET/KEY`` of an ``s3://`` URI (no trailing slash), as pyarrow names it."""
    parts = urlsplit(uri)
    if not parts.netloc:
        raise BatchError(f"{uri}: an s3:// location names its bucket: s3://BUCKET/PREFIX")
    return f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")


def s3_filesystem(env: Mapping[str, str] | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem from the environment (see the module's docstring)."""
    env = os.environ if env is None else env
    options: dict[str, str] = {}
    endpoint = env.get(S3_ENDPOINT_ENV, "").strip()
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BatchError(f"${S3_ENDPOINT_ENV}={endpoint!r}: must be http(s)://HOST[:PORT]")
        options |= {"endpoint_override": parts.netloc, "scheme": parts.scheme}
    if env.get(S3_REGION_ENV, "").strip():
        options["region"] = env[S3_REGION_ENV].strip()
    if env.get(S3_KEY_ID_ENV) and env.get(S3_SECRET_KEY_ENV):
        options |= {"access_key": env[S3_KEY_ID_ENV], "secret_key": env[S3_SECRET_KEY_ENV]}
        if env.get(S3_SESSION_TOKEN_ENV):
            options["session_token"] = env[S3_SESSION_TOKEN_ENV]
    try:
        return pafs.S3FileSystem(**options)
    except (pa.ArrowException, ValueError) as exc:
        raise BatchError(f"cannot reach S3: {exc}") from exc


@dataclass(frozen=True)
class Place:
    """A directory: ``root`` is its path in ``fs`` (an absolute local path, or
    ``BUCKET/PREFIX``). Pickled into worker processes with its filesystem."""

    fs: pafs.FileSystem
    root: str
    local: bool

    def path(self, name: str = "") -> str:
        if not self.root:
            return name
        return f"{self.root}/{name}" if name else self.root

    def show(self, name: str = "") -> str:
        """For messages: a local path, or the ``s3://`` URI."""
        return self.path(name) if self.local else f"s3://{self.path(name)}"


def local_place(path: str = "") -> Place:
    """A local directory; with no path, the filesystem itself (names are paths)."""
    return Place(pafs.LocalFileSystem(), os.path.abspath(path) if path else "", local=True)


def s3_place(uri: str, env: Mapping[str, str] | None = None) -> Place:
    return Place(s3_filesystem(env), s3_key(uri), local=False)


def _error(place: Place, name: str, exc: BaseException) -> BatchError:
    return BatchError(f"{place.show(name)}: {getattr(exc, 'strerror', None) or exc}")


def size(place: Place, name: str) -> int | None:
    """The file's size; None when there is none."""
    try:
        info = place.fs.get_file_info(place.path(name))
    except (OSError, pa.ArrowException) as exc:
        raise _error(place, name, exc) from exc
    return info.size if info.type == pafs.FileType.File else None


def read_bytes(place: Place, name: str) -> bytes | None:
    """The file's bytes; None when it is not there (or cannot be read)."""
    try:
        with place.fs.open_input_stream(place.path(name)) as f:
            return bytes(f.read())
    except (OSError, pa.ArrowException):
        return None


def delete(place: Place, name: str) -> None:
    try:
        place.fs.delete_file(place.path(name))
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        raise _error(place, name, exc) from exc


def names(place: Place, folder: str = "") -> list[str]:
    """The names of the files directly in ``folder`` (none when it is not there)."""
    try:
        found = place.fs.get_file_info(pafs.FileSelector(place.path(folder), allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise _error(place, folder, exc) from exc
    return sorted(i.base_name for i in found if i.type == pafs.FileType.File)


def make_folder(place: Place, folder: str = "") -> None:
    """Local only: S3 has no folders, a key's prefix is enough."""
    if place.local:
        os.makedirs(place.path(folder), exist_ok=True)


def open_output(place: Place, name: str) -> pa.NativeFile:
    try:
        return place.fs.open_output_stream(place.path(name))
    except (OSError, pa.ArrowException) as exc:
        raise _error(place, name, exc) from exc


def sha256(place: Place, name: str) -> str:
    digest = hashlib.sha256()
    try:
        with place.fs.open_input_stream(place.path(name)) as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
    except (OSError, pa.ArrowException) as exc:
        raise _error(place, name, exc) from exc
    return digest.hexdigest()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(place: Place, name: str) -> str:
    """Where ``name`` is written before it is committed: a fresh hidden name beside it
    on a local place, ``name`` itself on S3 (an object is never seen half written)."""
    if not place.local:
        return name
    folder, _, base = name.rpartition("/")
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    hidden = f".{base}.{token}{TEMP_SUFFIX}"
    return f"{folder}/{hidden}" if folder else hidden


def move_into_place(place: Place, temp: str, name: str) -> None:
    """A written file under its final name, durably (local: flushed, renamed, the
    directory flushed; S3: nothing to do, the upload was the commit)."""
    if not place.local or temp == name:
        return
    _fsync(place.path(temp))
    os.replace(place.path(temp), place.path(name))
    _fsync(os.path.dirname(place.path(name)))


def write_whole(place: Place, name: str, data: bytes) -> None:
    """``data`` as the file ``name``: readers see the old file or the new, whole."""
    temp = temp_name(place, name)
    try:
        with open_output(place, temp) as f:
            f.write(data)
        move_into_place(place, temp, name)
    except BaseException:
        if temp != name:
            delete(place, temp)
        raise
