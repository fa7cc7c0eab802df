"""Where a batch run reads and writes: a location URI turned into files to open.

``file://PATH``, a plain path, ``pvc://CLAIM/PATH`` (the claim mounted at
``/mnt/pvc/CLAIM``, as :mod:`kubeloop.render.storage` mounts it for every kind) and
``s3://BUCKET/PREFIX`` (read through pyarrow's S3 filesystem, :mod:`.place`) name a
directory (a prefix), one file, or a glob (``*``, ``?``, ``[...]``; ``**`` crosses
directories). A directory means every ``.csv``, ``.parquet`` and ``.pq`` file under it,
at any depth, except names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc`` files,
temporary files), as Spark and pyarrow's datasets skip them.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.fs as pafs

from kubeloop.batch import BatchError
from kubeloop.batch.formats import SUFFIXES
from kubeloop.batch.place import Place, is_s3, local_place, s3_key, s3_place
from kubeloop.render import storage

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class InputFile:
    path: Path
    """Its path in ``source``: a local path, or ``BUCKET/KEY`` on S3."""
    relpath: str
    """POSIX path below the location's root: the file's name in shard identities, the
    same in every pod whatever the mount point."""
    format: str
    size: int
    source: Place = field(default_factory=local_place, compare=False)
    """The filesystem to open it with (names are whole paths)."""

    @property
    def shown(self) -> str:
        """For messages: the local path or the ``s3://`` URI."""
        return self.source.show(self.path.as_posix())


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
        raise BatchError(f"{uri}: an S3 location, not a path in this pod")
    raise BatchError(f"{uri}: unsupported scheme {scheme!r}: use pvc://, s3://, file:// or a path")


def place_of(uri: str) -> Place:
    """The directory ``uri`` names, local or on S3, to write into."""
    if is_s3(uri):
        return s3_place(uri)
    return local_place(str(local_path(uri)))


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


_GLOB_PIECES = re.compile(r"\[[^\]/]+\]|\*|\?|[^*?\[]+|\[")


def _glob_piece(piece: str) -> str:
    if piece == "*":
        return "[^/]*"
    if piece == "?":
        return "[^/]"
    if piece.startswith("[!") and len(piece) > 3:
        return "[^" + piece[2:]
    if piece.startswith("[") and len(piece) > 2:
        return piece
    return re.escape(piece)


def _glob_pattern(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression over ``/``-separated keys: ``*`` and ``?`` within
    one level, ``**`` (a whole level) across levels, ``[...]`` as in glob."""
    out = []
    for i, part in enumerate(pattern.split("/")):
        sep = "/" if i else ""
        if part == "**":
            out.append(f"(?:{sep}[^/]+)*")
        else:
            out.append(sep + "".join(_glob_piece(p) for p in _GLOB_PIECES.findall(part)))
    return re.compile("".join(out))


def _s3_inputs(uri: str) -> list[InputFile]:
    source = s3_place(uri)
    source = Place(source.fs, "", local=False)
    key = s3_key(uri)
    try:
        if any(c in key for c in GLOB_CHARACTERS):
            root = _glob_root(key).as_posix()
            pattern = _glob_pattern(key)
            infos = [
                i
                for i in source.fs.get_file_info(
                    pafs.FileSelector(root, recursive=True, allow_not_found=True)
                )
                if i.type == pafs.FileType.File and pattern.fullmatch(i.path)
            ]
            if not infos:
                raise BatchError(f"{uri}: no object matches")
        else:
            info = source.fs.get_file_info(key)
            root = key
            if info.type == pafs.FileType.File:
                root = str(PurePosixPath(key).parent)
                infos = [info]
            else:
                infos = [
                    i
                    for i in source.fs.get_file_info(
                        pafs.FileSelector(key, recursive=True, allow_not_found=True)
                    )
                    if i.type == pafs.FileType.File and _format_of(Path(i.path))
                ]
                if not infos:
                    raise BatchError(f"{uri}: no .csv or .parquet objects under this prefix")
    except (OSError, pa.ArrowException) as exc:
        raise BatchError(f"{uri}: cannot list: {exc}") from exc
    files = []
    for info in infos:
        relpath = PurePosixPath(info.path).relative_to(root).as_posix()
        if _hidden(relpath):
            continue
        fmt = _format_of(Path(info.path))
        if fmt is None:
            raise BatchError(
                f"s3://{info.path}: unsupported file type {Path(info.path).suffix!r}: "
                "use .csv or .parquet"
            )
        files.append(InputFile(Path(info.path), relpath, fmt, info.size or 0, source))
    if not files:
        raise BatchError(f"{uri}: no .csv or .parquet objects")
    return sorted(files, key=lambda f: f.relpath)


def list_inputs(uri: str) -> list[InputFile]:
    """The input files ``uri`` names, sorted by relative path: every pod lists the same
    files in the same order, which is what makes the shard assignment agree."""
    if is_s3(uri):
        return _s3_inputs(uri)
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


def _overlap(input_uri: str, output_uri: str) -> BatchError:
    return BatchError(
        f"the output {output_uri} and the input {input_uri} overlap: "
        "write the output to a directory of its own"
    )


def check_apart(input_uri: str, output_uri: str) -> None:
    """Refuse an output inside the input (its files would become input on a retry) or
    an input inside the output (a re-run would overwrite what it reads)."""
    if is_s3(input_uri) or is_s3(output_uri):
        if not (is_s3(input_uri) and is_s3(output_uri)):
            return
        key = s3_key(input_uri)
        if any(c in key for c in GLOB_CHARACTERS):
            key = _glob_root(key).as_posix()
        keys = PurePosixPath(key), PurePosixPath(s3_key(output_uri))
        if keys[0] == keys[1] or keys[1].is_relative_to(keys[0]) or keys[0].is_relative_to(keys[1]):
            raise _overlap(input_uri, output_uri)
        return
    source = local_path(input_uri)
    text = str(source)
    if any(c in text for c in GLOB_CHARACTERS):
        source = _glob_root(text)
    source = source.resolve()
    target = local_path(output_uri).resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise _overlap(input_uri, output_uri)
