"""A BatchPrediction on the real node: several Parquet files scored by two pods, one pod
deleted while it writes a shard. The output holds every input row exactly once, with
the predictions scikit-learn gives for those rows with the same model file. And a small
run from and to S3 (a local S3 server on this machine) with the credentials from a
Secret that only the kubelet reads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from kubernetes.client.exceptions import ApiException
from moto.server import ThreadedMotoServer
from sklearn.datasets import load_iris

from e2e.real.conftest import ON_REAL_NODE, REAL_NODE, ModelVolume, pods_of, record
from kubeloop.batch.commit import MANIFEST_FILE, SHARDS_DIR, sha256_file
from kubeloop.batch.place import TEMP_SUFFIX
from kubeloop.batch.run import Request, prepare_run
from kubeloop.batch.shards import assign
from kubeloop.evaluation.data import snake_case
from kubeloop.modeldir import load_model
from kubeloop.names import BATCH_PREDICTION_LABEL, COMPLETION_INDEX_ANNOTATION
from tests.kubetest import ROOT, Cluster, wait_for

BP = "BatchPrediction"
NAME = "scores"
FILES, ROWS_PER_FILE = 4, 30_000
# Three rows a predict: slow enough (~15 s a shard on half a core) for the test to see
# a shard being written, and to delete its pod then, and for the operator's live reads
# (every 10 s) to land within a shard. At five rows (~10 s a shard) a read could fall
# at each shard's boundary and none show a count within one (4 of 6 runs, 95a08dc).
BATCH_ROWS = 3
PODS = 2


def chown_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        os.chown(root, 10001, 10001)
        for name in files:
            os.chown(os.path.join(root, name), 10001, 10001)


def write_inputs(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """FILES Parquet files of iris-like rows (one row group each: one shard each), with
    a unique `id`; returns (ids, features) of every row in id order."""
    iris = load_iris()
    rng = np.random.default_rng(7)
    total = FILES * ROWS_PER_FILE
    picks = rng.integers(0, len(iris.data), total)
    features = iris.data[picks] + rng.normal(0.0, 0.15, (total, iris.data.shape[1]))
    ids = np.arange(total, dtype=np.int64) * 3 + 11  # not 0..n-1: ids are copied, not made
    folder.mkdir(parents=True)
    names = [snake_case(n) for n in iris.feature_names]
    for f in range(FILES):
        part = slice(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE)
        table = pa.table({"id": ids[part], **{n: features[part, j] for j, n in
                                              enumerate(names)}})
        pq.write_table(table, folder / f"day-{f}.parquet", row_group_size=ROWS_PER_FILE)
    return ids, features


def shards_of_index(volume: ModelVolume, index: int) -> list[str]:
    """The shard names completion index `index` scores, by the pods' own assignment."""
    prepared = prepare_run(Request(model_dir=str(volume.path / "model"),
                                   input=str(volume.path / "input"),
                                   output=str(volume.path / "unused")))
    return [s.name for s in assign(list(prepared.layout.shards), index, PODS)]


def pod_of_index(cluster: Cluster, namespace: str, index: int) -> dict[str, Any] | None:
    for pod in pods_of(cluster, namespace, f"{BATCH_PREDICTION_LABEL}={NAME}"):
        annotations = pod["metadata"].get("annotations") or {}
        if (annotations.get(COMPLETION_INDEX_ANNOTATION) == str(index)
                and pod["status"].get("phase") == "Running"
                and not pod["metadata"].get("deletionTimestamp")):
            return pod
    return None


@pytest.mark.timeout(300)
def test_two_pods_score_every_row_once_though_one_is_killed_mid_shard(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    subprocess.run([sys.executable, str(ROOT / "examples" / "train" / "train.py"),
                    "--output", str(volume.path / "model")], check=True, capture_output=True)
    ids, features = write_inputs(volume.path / "input")
    chown_tree(volume.path)
    first, second = shards_of_index(volume, 0)
    out = volume.path / "out"

    started = time.monotonic()
    cluster.create(BP, namespace, NAME, {
        "model": {"uri": "pvc://models/model"},
        "input": {"uri": "pvc://models/input/", "passThrough": ["id"]},
        "output": {"uri": "pvc://models/out/"},
        "parallelism": PODS, "batchRows": BATCH_ROWS, "backoffLimit": 2,
        "resources": {"cpu": "500m", "memory": "512Mi"}, "scheduling": ON_REAL_NODE,
    })

    # Progress while Running, as kubectl get bp shows it: a running index's live count
    # strictly inside a shard (its pod's final report, and every count the operator had
    # before the live reads, comes in whole shards), with the run's rate.
    seen: list[dict[str, Any]] = []
    live: list[dict[str, Any]] = []

    def look() -> dict[str, Any]:
        status = cluster.status(BP, namespace, NAME)
        if status.get("phase") == "Running" and status.get("progress"):
            seen.append({"progress": status["progress"], "shards": status.get("shards")})
            live.extend(
                {"shard": s, "progress": status["progress"]}
                for s in status.get("shards") or []
                if s.get("state") == "Running" and (s.get("rows") or 0) % ROWS_PER_FILE
                and status["progress"].get("rowsPerSecond")
            )
        return status

    # Index 0 committed its first shard and is writing its second: delete its pod now.
    def mid_second_shard() -> dict[str, Any] | None:
        look()
        committed = (out / SHARDS_DIR / f"{first}.json").is_file()
        writing = any(out.glob(f".{second}-*{TEMP_SUFFIX}")) if out.is_dir() else False
        pod = pod_of_index(cluster, namespace, 0) if committed and writing else None
        return pod

    victim = wait_for(mid_second_shard, 150, f"index 0 done with {first}, writing {second}")
    # The file the first shard's manifest names (each attempt writes a file of its own).
    shard_manifest = json.loads((out / SHARDS_DIR / f"{first}.json").read_text())
    first_file = out / shard_manifest["output"]["path"]
    kept = first_file.stat()
    assert not (out / SHARDS_DIR / f"{second}.json").exists(), "the shard was done already"
    victim_name = victim["metadata"]["name"]
    cluster.kubectl("delete", "pod", "-n", namespace, victim_name, "--wait=false")

    # The pod stops at SIGTERM (exit 143), well before the kubelet's SIGKILL 30 s later.
    def stopped() -> str | None:
        try:
            pod = cluster.core.read_namespaced_pod(victim_name, namespace)
        except ApiException as err:
            return "gone" if err.status == 404 else None
        for container in pod.status.container_statuses or []:
            if container.state.terminated:
                return f"exit {container.state.terminated.exit_code}"
        return None

    assert wait_for(stopped, 20, "the deleted pod stopping at SIGTERM") in ("gone", "exit 143")
    # Seen by now, or while the retried index 0 and index 1 score their last shards.
    try:
        wait_for(lambda: (look(), live)[1], 60, "a live count within a shard")
    except AssertionError as err:
        raise AssertionError(f"{err}; seen while Running: {seen[-4:]}") from None

    status = wait_for(lambda: (s := look()).get("phase") == "Succeeded" and s, 150,
                      f"{NAME} Succeeded")
    record("batch_prediction_with_a_pod_killed_s", round(time.monotonic() - started, 1))

    # The pod stopped at SIGTERM (not at the kubelet's SIGKILL, 30 s later); index 0 ran
    # again in a new pod, which skipped the shard already committed.
    again = [p for p in pods_of(cluster, namespace, f"{BATCH_PREDICTION_LABEL}={NAME}")
             if (p["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION) == "0"
             and p["metadata"]["uid"] != victim["metadata"]["uid"]]
    assert [p["status"]["phase"] for p in again] == ["Succeeded"], again
    assert first_file.stat().st_ino == kept.st_ino, "the done shard was redone"

    # The output: the files the manifest lists and no other, every input row once.
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    listed = sorted(f["path"] for f in manifest["files"])
    assert listed == sorted(p.name for p in out.glob("part-*.parquet")), listed
    assert not list(out.glob(f".*{TEMP_SUFFIX}")), "a temporary file was left"
    table = pa.concat_tables([pq.read_table(out / name) for name in listed])
    assert table.num_rows == manifest["rows"] == len(ids) == status["output"]["rows"], status
    got = table.column("id").to_numpy()
    assert len(np.unique(got)) == len(got), "a row was written twice"
    assert set(got.tolist()) == set(ids.tolist()), "a row was lost"

    # The predictions are scikit-learn's for the same rows and the same model file.
    order = np.argsort(got)
    rows = features[np.searchsorted(ids, got[order])]
    model = load_model(volume.path / "model")
    np.testing.assert_array_equal(table.column("prediction").to_numpy()[order],
                                  model.estimator.predict(rows))
    expected = model.estimator.predict_proba(rows)
    for k, label in enumerate(model.class_labels):
        np.testing.assert_allclose(table.column(f"probability_{label}").to_numpy()[order],
                                   expected[:, k], rtol=1e-12, atol=1e-15)
    assert status["progress"]["rowsDone"] == len(ids), status["progress"]
    inside = live[0]
    assert 0 < inside["shard"]["rows"] < inside["shard"]["rowsTotal"], inside
    assert inside["progress"]["rowsDone"] < len(ids), inside
    # The status names the model's and the output's exact bytes.
    assert status["model"]["sha256"] == sha256_file(volume.path / "model" / "manifest.json")
    assert status["output"]["sha256"] == sha256_file(out / MANIFEST_FILE), status["output"]
    assert status["output"]["files"] == len(listed)
    # What it scored, counted on the model's profile bins for a DriftMonitor.
    assert status["drift"]["rows"] == len(ids) == manifest["drift"]["rows"], status.get("drift")


@pytest.mark.timeout(180)
def test_s3_input_and_output_with_the_credentials_of_a_secret(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    """One pod reads two Parquet objects and writes its output to a bucket of a local S3
    server (moto's, on the node's address): pyarrow's S3 filesystem in the image, the
    endpoint and region from spec.s3, the keys from the Secret through the kubelet (the
    operator's chart has no access to Secrets)."""
    subprocess.run([sys.executable, str(ROOT / "examples" / "train" / "train.py"),
                    "--output", str(volume.path / "s3-model")], check=True, capture_output=True)
    chown_tree(volume.path)
    node = cluster.core.read_node(REAL_NODE)
    host = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    keys = {"AWS_ACCESS_KEY_ID": "AKIDREALNODE", "AWS_SECRET_ACCESS_KEY": "real-node-secret"}
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        fs = pafs.S3FileSystem(access_key=keys["AWS_ACCESS_KEY_ID"],
                               secret_key=keys["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                               endpoint_override=f"{host}:{port}", scheme="http",
                               allow_bucket_creation=True)
        fs.create_dir("lake")
        iris = load_iris()
        names = [snake_case(n) for n in iris.feature_names]
        for f in range(2):
            part = slice(f * 75, (f + 1) * 75)
            pq.write_table(pa.table({"id": np.arange(part.start, part.stop),
                                     **{n: iris.data[part, j] for j, n in enumerate(names)}}),
                           f"lake/in/{f}.parquet", filesystem=fs)
        cluster.core.create_namespaced_secret(
            namespace, {"metadata": {"name": "lake-keys"}, "stringData": keys})
        cluster.create(BP, namespace, "from-s3", {
            "model": {"uri": "pvc://models/s3-model"},
            "input": {"uri": "s3://lake/in/", "passThrough": ["id"]},
            "output": {"uri": "s3://lake/out/"},
            "s3": {"endpoint": f"http://{host}:{port}", "region": "us-east-1",
                   "credentialsSecret": "lake-keys"},
            "resources": {"cpu": "500m", "memory": "512Mi"}, "scheduling": ON_REAL_NODE,
        })
        status = wait_for(
            lambda: (s := cluster.status(BP, namespace, "from-s3")).get("phase")
            in ("Succeeded", "Failed") and s, 150, "from-s3 done")
        assert status["phase"] == "Succeeded", status
        with fs.open_input_stream(f"lake/out/{MANIFEST_FILE}") as stream:
            manifest = json.loads(stream.read())
        table = pa.concat_tables([pq.read_table(f"lake/out/{e['path']}", filesystem=fs)
                                  for e in manifest["files"]])
    finally:
        server.stop()
    assert sorted(table.column("id").to_pylist()) == list(range(150))
    assert status["output"]["rows"] == manifest["rows"] == 150, status
    model = load_model(volume.path / "s3-model")
    order = np.argsort(table.column("id").to_numpy())
    np.testing.assert_array_equal(table.column("prediction").to_numpy()[order],
                                  model.estimator.predict(iris.data[:150]))
