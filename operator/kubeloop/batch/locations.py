"""Where a batch run reads and writes: a location URI turned into local files.

``file://PATH``, a plain path, and ``pvc://CLAIM/PATH`` (the claim mounted at
``/mnt/pvc/CLAIM``, as :mod:`kubeloop.render.storage` mounts it for every kind) name a
directory, one file, or a glob (``*``, ``?``, ``[...]``; ``**`` crosses directories).
A directory means every ``.csv``, ``.parquet`` and ``.pq`` file under it, at any depth,
except names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc`` files, temporary
files), as Spark and pyarrow's datasets skip them. ``s3://`` is not read yet: the pod
would have to list and stream objects itself; a claim or a mounted volume works today.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from kubeloop.batch import BatchError
from kubeloop.render import storage

CSV = "csv"
PARQUET = "parquet"
SUFFIXES = {".csv": CSV, ".parquet": PARQUET, ".pq": PARQUET}
FORMATS = (PARQUET, CSV)
"""The output formats, the default first."""
GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class InputFile:
    path: Path
    relpath: str
    """POSIX path below the location's root: the file's name in shard identities, the
    same in every pod whatever the mount point."""
    format: str
    size: int


def local_path(uri: str) -> Path:
    """The path in this pod that ``uri`` names: ``pvc://`` under its mount, ``file://``
    and plain paths as they are; any other scheme is refused with what works."""
    uri = storage.local_uri(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BatchError(f"{uri}: file:// URIs must name a local path")
        return Path(url2pathname(parts.path))
    if scheme == "":
        return Path(uri)
    if scheme == "s3":
        raise BatchError(
            f"{uri}: s3:// is not supported for batch input or output yet: "
            "use a pvc:// claim or a mounted volume (file://)"
        )
    raise BatchError(f"{uri}: unsupported scheme {scheme!r}: use pvc://, file:// or a path")


def _format_of(path: Path) -> str | None:
    return SUFFIXES.get(path.suffix.lower())


def _hidden(relpath: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relpath.split("/"))


def _glob_root(pattern: str) -> Path:
    """The longest leading directory of ``pattern`` without glob characters."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if any(c in part for c in GLOB_CHARACTERS):
            return Path(*parts[:i]) if i else Path(".")
    return Path(pattern).parent


def _input_file(path: Path, root: Path) -> InputFile:
    fmt = _format_of(path)
    if fmt is None:
        raise BatchError(f"{path}: unsupported file type {path.suffix!r}: use .csv or .parquet")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BatchError(f"{path}: {exc.strerror or exc}") from exc
    relpath = path.name if path == root else path.relative_to(root).as_posix()
    return InputFile(path=path, relpath=relpath, format=fmt, size=size)


def list_inputs(uri: str) -> list[InputFile]:
    """The input files ``uri`` names, sorted by relative path: every pod lists the same
    files in the same order, which is what makes the shard assignment agree."""
    path = local_path(uri)
    text = str(path)
    if any(c in text for c in GLOB_CHARACTERS):
        root = _glob_root(text)
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p for p in matches if p.is_file() and not _hidden(p.relative_to(root).as_posix())]
        if not files:
            raise BatchError(f"{uri}: no file matches")
        chosen = [_input_file(p, root) for p in files]
    elif path.is_file():
        chosen = [_input_file(path, path)]
    elif path.is_dir():
        chosen = [
            _input_file(p, path)
            for p in sorted(path.rglob("*"))
            if p.is_file() and _format_of(p) and not _hidden(p.relative_to(path).as_posix())
        ]
        if not chosen:
            raise BatchError(f"{path}: no .csv or .parquet files in this directory")
    else:
        raise BatchError(f"{path}: no such file or directory")
    return sorted(chosen, key=lambda f: f.relpath)


def check_apart(input_uri: str, output_uri: str) -> None:
    """Refuse an output inside the input (its files would become input on a retry) or
    an input inside the output (a re-run would overwrite what it reads)."""
    source = local_path(input_uri)
    text = str(source)
    if any(c in text for c in GLOB_CHARACTERS):
        source = _glob_root(text)
    source = source.resolve()
    target = local_path(output_uri).resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise BatchError(
            f"the output {output_uri} and the input {input_uri} overlap: "
            "write the output to a directory of its own"
        )
