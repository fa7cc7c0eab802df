"""fetch-model: model directories from a path, file:// and a local HTTP server, checked
against their manifest."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubeloop.modeldir import MANIFEST_FILE, write_manifest
from kubeloop.serving.cli import add_commands
from kubeloop.serving.fetch import FetchError, fetch_model

FILES = {
    "model.joblib": b"\x80\x04not really a pickle" * 1000,
    "model.json": b'{"name": "m"}',
    "weights/part-0.bin": bytes(range(256)) * 50,
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    write_manifest(root)
    return root


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_url(source: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(source))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def assert_fetched(dest: Path) -> None:
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert {f["path"] for f in manifest["files"]} == set(FILES)
    assert not list(dest.rglob("*.part")), "no temporary files left behind"


def test_manifest_lists_every_file_with_size_and_digest(source: Path) -> None:
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    assert manifest["version"] == 1
    assert manifest["files"] == [
        {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in sorted(FILES.items())
    ]


def test_manifest_and_fetched_files_are_readable_by_other_users(
    source: Path, tmp_path: Path
) -> None:
    """A model written by one user (a training pod, a pipeline) is served by another:
    the manifest must not keep mkstemp's owner-only mode (seen on the real node)."""
    assert (source / MANIFEST_FILE).stat().st_mode & 0o777 == 0o644
    fetch_model(str(source), tmp_path / "dest")
    for path in (tmp_path / "dest").iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, path


@pytest.mark.parametrize("form", ["path", "file-uri"])
def test_fetch_from_a_mounted_directory(source: Path, tmp_path: Path, form: str) -> None:
    uri = str(source) if form == "path" else source.as_uri()
    entries = fetch_model(uri, tmp_path / "dest")
    assert [e.path for e in entries] == sorted(FILES)
    assert_fetched(tmp_path / "dest")


def test_fetch_over_http(http_url: str, tmp_path: Path) -> None:
    fetch_model(http_url + "/", tmp_path / "dest")
    assert_fetched(tmp_path / "dest")


def test_refetch_keeps_files_that_are_already_whole(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    fetch_model(str(source), dest)
    before = {name: (dest / name).stat().st_ino for name in FILES}
    (dest / "model.json").write_bytes(b'{"name": "tampered"}')
    fetch_model(str(source), dest)
    assert_fetched(dest)
    assert (dest / "model.joblib").stat().st_ino == before["model.joblib"]
    assert (dest / "model.json").stat().st_ino != before["model.json"]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (corrupt, "did not arrive whole"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "bytes arrived, the manifest says"),
        (lambda p: p.write_bytes(p.read_bytes() + b"x"), "more than the manifest's"),
        (lambda p: p.unlink(), "No such file"),
    ],
)
def test_damaged_file_is_refused(source: Path, tmp_path: Path, damage: Any, error: str) -> None:
    damage(source / "weights" / "part-0.bin")
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match=error):
        fetch_model(source.as_uri(), dest)
    assert not (dest / "weights" / "part-0.bin").exists()
    assert not (dest / MANIFEST_FILE).exists(), "an incomplete directory has no manifest"
    assert not list(dest.rglob("*.part"))


def test_damaged_file_over_http_is_refused(source: Path, http_url: str, tmp_path: Path) -> None:
    corrupt(source / "model.joblib")
    with pytest.raises(FetchError, match=r"sha256 .* does not match"):
        fetch_model(http_url, tmp_path / "dest")


def test_http_errors_name_the_url(http_url: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"/nothing/manifest\.json: HTTP 404"):
        fetch_model(http_url + "/nothing", tmp_path / "dest")


@pytest.mark.parametrize(
    "path",
    [
        "../escaped",
        "weights/../../escaped",
        "/etc/escaped",
        "./model.json",
        "a//b",
        "a\\..\\b",
        "",
        MANIFEST_FILE,
    ],
)
def test_unsafe_manifest_paths_are_refused(source: Path, tmp_path: Path, path: str) -> None:
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest["files"].append({**manifest["files"][0], "path": path})
    (source / MANIFEST_FILE).write_text(json.dumps(manifest))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(FetchError, match=r"invalid manifest\.json"):
        fetch_model(str(source), dest)
    assert not (tmp_path / "deep" / "escaped").exists()
    assert not dest.exists()


def test_symlink_out_of_the_destination_is_refused(source: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "weights").symlink_to(outside)
    with pytest.raises(FetchError, match="resolves outside"):
        fetch_model(str(source), dest)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        (b"not json", "invalid manifest.json"),
        (b'{"files": [{"path": "a", "size": 1, "sha256": "XYZ"}]}', "sha256"),
        (b'{"files": [{"path": "a", "size": -1, "sha256": "' + b"0" * 64 + b'"}]}', "size"),
        (b'{"version": 2, "files": []}', "version"),
    ],
)
def test_invalid_manifests_are_refused(
    source: Path, tmp_path: Path, manifest: bytes, error: str
) -> None:
    (source / MANIFEST_FILE).write_bytes(manifest)
    with pytest.raises(FetchError, match=error):
        fetch_model(str(source), tmp_path / "dest")


def test_duplicate_manifest_paths_are_refused(source: Path, tmp_path: Path) -> None:
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest["files"].append(manifest["files"][0])
    (source / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(FetchError, match="duplicate paths"):
        fetch_model(str(source), tmp_path / "dest")


def test_s3_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail
    with pytest.raises(FetchError, match=r"pip install 'kubeloop\[s3\]'"):
        fetch_model("s3://bucket/models/iris", tmp_path / "dest")


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("ftp://host/model", "unsupported scheme 'ftp'"),
        ("file://otherhost/model", "must name a local path"),
        ("s3:///model", "no bucket"),
    ],
)
def test_unusable_uris_are_refused(tmp_path: Path, uri: str, error: str) -> None:
    with pytest.raises(FetchError, match=error):
        fetch_model(uri, tmp_path / "dest")


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_fetch_command_exit_codes(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert run_cli("fetch-model", source.as_uri(), str(tmp_path / "ok")) == 0
    assert_fetched(tmp_path / "ok")
    corrupt(source / "model.joblib")
    assert run_cli("fetch-model", source.as_uri(), str(tmp_path / "bad")) == 1
    assert "did not arrive whole" in caplog.text
