"""Batch scoring from and to S3 for real: pyarrow's S3 filesystem against a local S3
server (moto's, on loopback) with credentials from the environment, as a pod has them
from its Secret. Every input row once in the output, the commit marker (a shard's
manifest object, S3 having no rename) vouching only for whole objects, and a retried
pod skipping what is done and redoing what is not."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from test_batch_scoring import (  # pytest puts tests/unit on sys.path
    FEATURES,
    model_dir,
    quiet_progress,
    rows,
)

from kubeloop.batch import BatchError, report
from kubeloop.batch.commit import MANIFEST_FILE, SHARDS_DIR
from kubeloop.batch.features import OutputSpec
from kubeloop.batch.locations import list_inputs
from kubeloop.batch.place import s3_filesystem
from kubeloop.batch.run import Request, finalize_run, score
from kubeloop.modeldir import load_model
from tests.kubetest import wait_for

__all__ = ["model_dir", "quiet_progress"]  # fixtures, shared with test_batch_scoring

BUCKET = "scores"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDBATCHTEST", "AWS_SECRET_ACCESS_KEY": "batch-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A local S3 server on loopback for the module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_for(answers, 20, "the local S3 server")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[pafs.S3FileSystem]:
    """The pod's environment (endpoint, region, the Secret's keys) and an empty bucket."""
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", **CREDENTIALS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fs = pafs.S3FileSystem(
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        endpoint_override=endpoint.removeprefix("http://"),
        scheme="http",
        allow_bucket_creation=True,
        allow_bucket_deletion=True,
    )
    fs.create_dir(BUCKET)
    yield fs
    fs.delete_dir(BUCKET)


def put_dataset(fs: pafs.S3FileSystem) -> pa.Table:
    """Two Parquet objects (one of 4 row groups) and a CSV one, under in/; returns every
    input row (ids and features) in id order."""
    first, second, third = rows(800, 1, 0), rows(300, 2, 800), rows(250, 3, 1100)
    pq.write_table(first, f"{BUCKET}/in/a.parquet", filesystem=fs, row_group_size=200)
    pq.write_table(second, f"{BUCKET}/in/day=2/b.parquet", filesystem=fs)
    with fs.open_output_stream(f"{BUCKET}/in/c.csv") as out:
        pacsv.write_csv(third, out)
    with fs.open_output_stream(f"{BUCKET}/in/_SUCCESS") as out:
        out.write(b"")
    return pa.concat_tables([first, second, third]).sort_by("id")


def request(model: Path, **spec: Any) -> Request:
    return Request(
        model_dir=str(model),
        input=f"s3://{BUCKET}/in/",
        output=f"s3://{BUCKET}/out/",
        spec=OutputSpec(passthrough=("id",), **spec),
        batch_rows=64,
        min_shard_rows=150,
    )


def read_bytes(fs: pafs.S3FileSystem, key: str) -> bytes:
    with fs.open_input_stream(f"{BUCKET}/{key}") as f:
        return bytes(f.read())


def read_output(fs: pafs.S3FileSystem) -> tuple[dict[str, Any], pa.Table]:
    manifest = json.loads(read_bytes(fs, f"out/{MANIFEST_FILE}"))
    tables = []
    for entry in manifest["files"]:
        data = read_bytes(fs, f"out/{entry['path']}")
        assert len(data) == entry["size"]
        table = pq.read_table(pa.BufferReader(data))
        assert table.num_rows == entry["rows"]
        tables.append(table)
    return manifest, pa.concat_tables(tables)


def objects(fs: pafs.S3FileSystem, prefix: str = "out") -> dict[str, int]:
    found = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True))
    return {
        i.path.removeprefix(f"{BUCKET}/{prefix}/"): i.size or 0
        for i in found
        if i.type == pafs.FileType.File
    }


def test_s3_input_and_output_every_row_once_with_scikit_learns_predictions(
    model_dir: Path, s3: pafs.S3FileSystem
) -> None:
    expected = put_dataset(s3)
    summaries = [score(request(model_dir), i, 2, workers=1 + i) for i in range(2)]
    manifest, table = read_output(s3)
    assert manifest["rows"] == expected.num_rows == sum(s["rows"] for s in summaries)
    assert summaries[-1]["output"]["rows"] == expected.num_rows
    table = table.sort_by("id")
    assert table.column("id").to_pylist() == expected.column("id").to_pylist()
    x = np.column_stack([expected.column(f).to_numpy() for f in FEATURES])
    estimator = load_model(model_dir).estimator
    np.testing.assert_array_equal(table.column("prediction").to_numpy(), estimator.predict(x))
    # Nothing beside the parts and their manifests: no temporary object on S3.
    parts = {f["path"] for f in manifest["files"]}
    assert set(objects(s3)) == parts | {f"{SHARDS_DIR}/{p[:10]}.json" for p in parts} | {
        MANIFEST_FILE
    }
    # The input names that start with _ or . are skipped, as on a claim.
    assert [f.relpath for f in list_inputs(f"s3://{BUCKET}/in/")] == [
        "a.parquet",
        "c.csv",
        "day=2/b.parquet",
    ]


def test_a_retried_pod_on_s3_skips_whole_shards_and_redoes_the_rest(
    model_dir: Path, s3: pafs.S3FileSystem
) -> None:
    put_dataset(s3)
    score(request(model_dir), 0, 1, workers=1)
    manifest, _ = read_output(s3)
    done, cut, orphan = (f["path"] for f in manifest["files"][:3])
    kept = read_bytes(s3, f"out/{done}")
    # What a pod killed at each point leaves: an object cut short under a manifest that
    # vouches for the whole one (only a bug could do that; a size check catches it); an
    # object without its manifest (killed after its upload, before the commit marker);
    # and no output manifest.
    with s3.open_output_stream(f"{BUCKET}/out/{cut}") as out:
        out.write(read_bytes(s3, f"out/{cut}")[:100])
    s3.delete_file(f"{BUCKET}/out/{SHARDS_DIR}/{orphan[:10]}.json")
    s3.delete_file(f"{BUCKET}/out/{MANIFEST_FILE}")

    with pytest.raises(BatchError, match="2 of 6 shards not done"):
        finalize_run(request(model_dir))
    again = score(request(model_dir), 0, 1, workers=1)
    assert again["rowsScored"] == 400, again  # the two shards of 200 rows, no more
    assert read_bytes(s3, f"out/{done}") == kept
    manifest, table = read_output(s3)
    assert table.num_rows == manifest["rows"] == 1350
    assert len(set(table.column("id").to_pylist())) == 1350


def test_a_shard_that_fails_while_written_leaves_nothing_and_a_rerun_completes(
    model_dir: Path, s3: pafs.S3FileSystem
) -> None:
    """A shard that fails after some of its batches were written (a value the model
    cannot take at row 201, in its fourth batch of 64): its write is aborted, not
    closed (no Parquet footer), its object deleted, no manifest; the shards committed
    before it stay. Once the input is fixed, a rerun scores that shard and the rest,
    and the output has every input row exactly once."""
    expected = put_dataset(s3)
    bad = rows(300, 5, 1350)
    features = bad.column(FEATURES[1]).to_pylist()
    features[200] = float("nan")
    broken = bad.set_column(2, FEATURES[1], pa.array(features))
    pq.write_table(broken, f"{BUCKET}/in/b.parquet", filesystem=s3)  # a, b, c, day=2/b
    with pytest.raises(
        BatchError,
        match=r"s3://scores/in/b\.parquet \(row group 0\): "
        rf"column '{FEATURES[1]}': row 201 is nan",
    ):
        score(request(model_dir), 0, 1, workers=1)
    # a.parquet's 4 shards committed before; nothing of b.parquet's, part-00004.
    left = objects(s3)
    committed = {f"part-{n:05d}" for n in range(4)}
    assert {name[:10] for name in left if name.startswith("part-")} == committed, left
    assert {name for name in left if name.startswith(SHARDS_DIR)} == {
        f"{SHARDS_DIR}/{name}.json" for name in committed
    }
    assert MANIFEST_FILE not in left

    pq.write_table(bad, f"{BUCKET}/in/b.parquet", filesystem=s3)
    again = score(request(model_dir), 0, 1, workers=1)
    assert again["rowsScored"] == 300 + 250 + 300  # b.parquet, c.csv, day=2/b.parquet
    manifest, table = read_output(s3)
    ids = pa.concat_tables([expected, bad]).column("id").to_pylist()
    assert manifest["rows"] == table.num_rows == len(ids) == 1650
    assert sorted(table.column("id").to_pylist()) == sorted(ids)
    assert {name for name in objects(s3) if name.startswith("part-")} == {
        f["path"] for f in manifest["files"]
    }


def test_another_runs_output_on_s3_is_refused_or_replaced(
    model_dir: Path, s3: pafs.S3FileSystem, quiet_progress: Path
) -> None:
    put_dataset(s3)
    score(request(model_dir), 0, 1, workers=1)
    other = Request(**{**request(model_dir, probabilities=False).__dict__, "if_exists": "refuse"})
    with pytest.raises(BatchError, match=report.OUTPUT_EXISTS):
        score(other, 0, 1, workers=1)
    assert "probability_setosa" in read_output(s3)[1].column_names
    replaced = score(Request(**{**other.__dict__, "if_exists": "overwrite"}), 0, 1, workers=1)
    assert replaced["output"]["rows"] == 1350
    assert "probability_setosa" not in read_output(s3)[1].column_names


def test_s3_globs_single_objects_and_what_is_missing(s3: pafs.S3FileSystem) -> None:
    put_dataset(s3)
    assert [f.relpath for f in list_inputs(f"s3://{BUCKET}/in/**/*.parquet")] == [
        "a.parquet",
        "day=2/b.parquet",
    ]
    assert [f.relpath for f in list_inputs(f"s3://{BUCKET}/in/*.parquet")] == ["a.parquet"]
    (single,) = list_inputs(f"s3://{BUCKET}/in/c.csv")
    assert (single.relpath, single.shown) == ("c.csv", f"s3://{BUCKET}/in/c.csv")
    with pytest.raises(BatchError, match="no object matches"):
        list_inputs(f"s3://{BUCKET}/in/*.json")
    with pytest.raises(BatchError, match=r"no \.csv or \.parquet objects"):
        list_inputs(f"s3://{BUCKET}/nothing/")


def test_s3_settings_come_from_the_environment() -> None:
    fs = s3_filesystem(
        {"AWS_ENDPOINT_URL": "https://minio.storage:9000", "AWS_REGION": "eu-west-1",
         **CREDENTIALS}
    )
    settings = fs.__reduce__()[1][0]  # what the filesystem was made with, as it pickles
    assert {k: settings[k] for k in ("endpoint_override", "scheme", "region", "access_key")} == {
        "endpoint_override": "minio.storage:9000",
        "scheme": "https",
        "region": "eu-west-1",
        "access_key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
    }
    with pytest.raises(BatchError, match="must be http"):
        s3_filesystem({"AWS_ENDPOINT_URL": "minio:9000"})
