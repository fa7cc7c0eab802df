"""``kubeloop fetch-model URI DIR``: the init container that puts a model directory on
the pod's shared volume before the server starts.

URI names a model *directory*: ``http(s)://``, ``s3://`` (needs ``kubeloop[s3]``),
``file://`` or a plain path (a mounted volume). Its ``manifest.json`` lists every file
with size and sha256. Each file is streamed to a temporary name beside its target,
checked, then renamed into place, so the server never reads a partial or corrupt file;
``manifest.json`` is written last and so marks a complete directory (the format:
:mod:`kubeloop.modeldir`). Files already
present with the right digest are kept, which makes a restarted init container cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

import requests
from pydantic import ValidationError

from kubeloop.modeldir import (
    CHUNK_BYTES,
    MANIFEST_FILE,
    Manifest,
    ManifestEntry,
    check_entry,
    temp_beside,
    write_atomically,
)

MAX_MANIFEST_BYTES = 1 << 20
# (connect, read) seconds: a stalled download fails and the kubelet restarts the init
# container, instead of a pod that waits forever.
HTTP_TIMEOUT = (10.0, 60.0)


class FetchError(Exception):
    """The model could not be fetched whole; the message names the file and the cause."""


class Source(Protocol):
    """Where a model directory lives; ``stream`` yields one file's bytes in chunks."""

    def stream(self, relpath: str) -> contextlib.AbstractContextManager[Iterable[bytes]]: ...


class LocalSource:
    """A directory on a mounted volume (``file://`` or a plain path)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def stream(self, relpath: str) -> Iterator[Iterable[bytes]]:
        path = self.root / relpath
        try:
            f = path.open("rb")
        except OSError as exc:
            raise FetchError(f"{path}: {exc.strerror or exc}") from exc
        with f:
            yield iter(lambda: f.read(CHUNK_BYTES), b"")


class HttpSource:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.session = requests.Session()

    @contextlib.contextmanager
    def stream(self, relpath: str) -> Iterator[Iterable[bytes]]:
        url = self.base_url + quote(relpath)
        try:
            response = self.session.get(url, stream=True, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise FetchError(f"{url}: {exc}") from exc
        with response:
            if response.status_code != 200:
                raise FetchError(f"{url}: HTTP {response.status_code} {response.reason}")
            try:
                yield response.iter_content(CHUNK_BYTES)
            except requests.RequestException as exc:
                raise FetchError(f"{url}: {exc}") from exc


class S3Source:
    """An S3 prefix; credentials and endpoint come from boto3's usual environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL`` for MinIO and the like)."""

    def __init__(self, bucket: str, prefix: str) -> None:
        try:
            import boto3
        except ImportError as exc:
            raise FetchError(
                "s3:// URIs need boto3, which comes with the s3 extra: pip install 'kubeloop[s3]'"
            ) from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client: Any = boto3.client("s3")

    @contextlib.contextmanager
    def stream(self, relpath: str) -> Iterator[Iterable[bytes]]:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{relpath}" if self.prefix else relpath
        where = f"s3://{self.bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise FetchError(f"{where}: {exc}") from exc
        try:
            yield body.iter_chunks(CHUNK_BYTES)
        except (BotoCoreError, ClientError) as exc:
            raise FetchError(f"{where}: {exc}") from exc
        finally:
            body.close()


def open_source(uri: str) -> Source:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return HttpSource(uri)
    if scheme == "s3":
        if not parts.netloc:
            raise FetchError(f"{uri}: no bucket")
        return S3Source(parts.netloc, parts.path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"{uri}: file:// URIs must name a local path")
        return LocalSource(Path(url2pathname(parts.path)))
    if scheme == "":
        return LocalSource(Path(uri))
    raise FetchError(f"{uri}: unsupported scheme {scheme!r} (use http, https, s3, file)")


def _read_all(chunks: Iterable[bytes], limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise FetchError(f"{what}: larger than {limit} bytes")
    return bytes(data)


def _download(source: Source, entry: ManifestEntry, target: Path) -> None:
    fd, tmp = temp_beside(target)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out, source.stream(entry.path) as chunks:
            for chunk in chunks:
                size += len(chunk)
                if size > entry.size:
                    # Stop at once: an oversized file must not fill the volume.
                    raise FetchError(
                        f"{entry.path}: more than the manifest's {entry.size} bytes arrived"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != entry.size:
            raise FetchError(f"{entry.path}: {size} bytes arrived, the manifest says {entry.size}")
        if digest.hexdigest() != entry.sha256:
            raise FetchError(
                f"{entry.path}: sha256 {digest.hexdigest()} does not match the manifest's "
                f"{entry.sha256}: the file did not arrive whole"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_model(uri: str, dest: str | Path) -> list[ManifestEntry]:
    """Fetch the model directory at ``uri`` into ``dest``; returns the files it holds.

    Raises :class:`FetchError` on any unreadable, unsafe or mismatching file; files
    already moved into place stay (each is whole), the manifest is not written.
    """
    source = open_source(uri)
    with source.stream(MANIFEST_FILE) as chunks:
        raw = _read_all(chunks, MAX_MANIFEST_BYTES, MANIFEST_FILE)
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise FetchError(f"{uri}: invalid {MANIFEST_FILE}: {exc}") from exc

    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    resolved_root = root.resolve()
    for entry in manifest.files:
        target = root / entry.path
        # Paths are checked lexically above; this also catches symlinks already in dest.
        if not target.resolve().is_relative_to(resolved_root):
            raise FetchError(f"{entry.path}: resolves outside {root}")
        if check_entry(root, entry) is None:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(source, entry, target)
    write_atomically(root / MANIFEST_FILE, raw)
    return manifest.files
