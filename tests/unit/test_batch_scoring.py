"""Batch prediction end to end in one process, on a model that examples/train/train.py
wrote: output rows equal input rows, predictions equal scikit-learn's on the same rows,
each shard written exactly once across retries, and bad input named by its file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import kubeloop.train
from kubeloop.batch import BatchError, report
from kubeloop.batch.commit import MANIFEST_FILE, SHARDS_DIR, sha256_file
from kubeloop.batch.features import OutputSpec
from kubeloop.batch.run import Request, finalize_run, score
from kubeloop.cli import main as cli_main
from tests.kubetest import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "train"))
from train import main as train_main  # noqa: E402  (an example script, not a package)

FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(autouse=True)
def quiet_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No progress server in the test process; the final message in a file we read."""
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBELOOP_PROGRESS_PORT", "0")
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", str(log))
    yield log
    kubeloop.train.reset()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's model, written by the example's own training code path."""
    root = tmp_path_factory.mktemp("batch-model")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KUBELOOP_PROGRESS_PORT", "0")
        env.setenv("KUBELOOP_TERMINATION_LOG", str(root / "train-termination-log"))
        env.delenv("KUBELOOP_DATASET_URI", raising=False)
        try:
            assert train_main(["--output", str(root / "model"), "--n-estimators", "10"]) == 0
        finally:
            kubeloop.train.reset()
    return root / "model"


def rows(n: int, seed: int, first_id: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0]])
    x = centers[rng.integers(0, 3, n)] + rng.normal(scale=0.4, size=(n, 4))
    columns = {"id": pa.array(np.arange(first_id, first_id + n))}
    columns |= {name: pa.array(x[:, j]) for j, name in enumerate(FEATURES)}
    return pa.table(columns)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three Parquet files (one of 5 row groups, one of 1, one in a subdirectory) and a
    CSV whose header names the features as iris does ('sepal length (cm)')."""
    root = tmp_path / "in"
    (root / "more").mkdir(parents=True)
    pq.write_table(rows(1000, 1, 0), root / "a.parquet", row_group_size=200)
    pq.write_table(rows(300, 2, 1000), root / "b.parquet")
    pq.write_table(rows(450, 3, 1300), root / "more" / "c.parquet", row_group_size=100)
    csv = rows(250, 4, 1750).rename_columns(
        ["id", "sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    )
    pacsv.write_csv(csv, root / "d.csv")
    return root


TOTAL = 2000


def request(model_dir: Path, data: Path, out: Path, **spec: Any) -> Request:
    spec.setdefault("passthrough", ("id",))
    return Request(
        model_dir=str(model_dir),
        input=str(data),
        output=str(out),
        spec=OutputSpec(**spec),
        batch_rows=64,
        min_shard_rows=150,
    )


def read_output(out: Path) -> pa.Table:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    tables = []
    for entry in manifest["files"]:
        path = out / entry["path"]
        table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
        assert table.num_rows == entry["rows"]
        assert sha256_file(path) == entry["sha256"]
        tables.append(table)
    return pa.concat_tables(tables)


def expected(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, feature rows) of every input row, in id order."""
    parts = [pq.read_table(p) for p in sorted(data.rglob("*.parquet"))]
    csv = pacsv.read_csv(data / "d.csv")
    ids = np.concatenate([p.column("id").to_numpy() for p in parts] + [csv.column(0).to_numpy()])
    x = np.vstack(
        [np.column_stack([p.column(f).to_numpy() for f in FEATURES]) for p in parts]
        + [np.column_stack([csv.column(j).to_numpy() for j in range(1, 5)])]
    )
    order = np.argsort(ids)
    return ids[order], x[order]


def test_every_row_once_with_scikit_learns_predictions(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    req = request(model_dir, dataset, out)
    summaries = [score(req, index, 3, workers=1) for index in range(3)]
    assert sum(s["rows"] for s in summaries) == TOTAL
    # Only the last pod to finish finds every shard in and writes the manifest.
    assert "output" not in summaries[0] and summaries[2]["output"]["rows"] == TOTAL

    table = read_output(out).sort_by("id")
    ids, x = expected(dataset)
    assert table.num_rows == TOTAL
    assert np.array_equal(table.column("id").to_numpy(), ids)  # each row exactly once
    estimator = joblib.load(model_dir / "model.joblib")
    assert np.array_equal(table.column("prediction").to_numpy(), estimator.predict(x))
    proba = np.column_stack([table.column(f"probability_{c}").to_numpy() for c in CLASSES])
    assert np.allclose(proba, estimator.predict_proba(x), rtol=0, atol=1e-12)
    assert table.column_names == ["id", "prediction", *(f"probability_{c}" for c in CLASSES)]

    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["rows"] == TOTAL
    assert manifest["model"]["name"] == "iris"
    model_digest = hashlib.sha256((model_dir / "manifest.json").read_bytes()).hexdigest()
    assert manifest["model"]["sha256"] == model_digest
    # a.parquet's 5 row groups of 200 in shards of >= 150 rows: 5 shards; b: 1; c's
    # 100-row groups in pairs: 3 shards (2+2+1 groups); the CSV: 1.
    assert len(manifest["files"]) == 10
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("count", [1, 2, 4, 7, 12])
def test_any_parallelism_scores_every_row_once(
    model_dir: Path, dataset: Path, tmp_path: Path, count: int
) -> None:
    out = tmp_path / "out"
    req = request(model_dir, dataset, out, probabilities=False)
    for index in reversed(range(count)):
        score(req, index, count, workers=1)
    ids = read_output(out).column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(TOTAL))


def shard_files(out: Path) -> dict[str, tuple[int, int]]:
    """Each part's (inode, mtime_ns): a rewritten part changes both."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*")}


def part(out: Path, shard: str) -> Path:
    """The file the shard's manifest names (each attempt's has a name of its own)."""
    return out / json.loads((out / SHARDS_DIR / f"{shard}.json").read_text())["output"]["path"]


def without_paths(manifest: dict[str, Any]) -> dict[str, Any]:
    """An output manifest less its file names, which differ from attempt to attempt."""
    return {**manifest, "files": [{**f, "path": None} for f in manifest["files"]]}


def test_a_killed_pod_redoes_only_its_unfinished_shards(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    req = request(model_dir, dataset, out)
    score(req, 0, 1, workers=1)
    before = shard_files(out)
    done = json.loads((out / MANIFEST_FILE).read_text())

    # A pod killed while writing part-00002 (a temporary file, no manifest), and one
    # killed between renaming part-00006's file (d.csv) and writing its manifest.
    second, sixth = part(out, "part-00002"), part(out, "part-00006")
    (out / SHARDS_DIR / "part-00002.json").unlink()
    second.rename(out / f".{second.name}.123-abcd.tmp")
    (out / SHARDS_DIR / "part-00006.json").unlink()
    (out / MANIFEST_FILE).unlink()
    with pytest.raises(BatchError, match=r"2 of 10 shards not done: part-00002 .*part-00006"):
        finalize_run(req)

    summary = score(req, 0, 1, workers=1)
    after = shard_files(out)
    # The two shards redone as new files; the orphan of the killed attempt removed.
    assert set(before) - set(after) == {second.name, sixth.name}
    assert sorted(n[:10] for n in set(after) - set(before)) == ["part-00002", "part-00006"]
    assert all(after[name] == before[name] for name in set(after) & set(before))
    assert summary["rowsScored"] == 450  # a.parquet's third shard and the CSV, no more
    assert summary["rows"] == TOTAL
    assert not list(out.glob(".*"))  # the leftover temporary file is gone
    again = json.loads((out / MANIFEST_FILE).read_text())
    assert without_paths(again) == without_paths(done)  # the same bytes again

    # A pod retried after everything was done scores nothing.
    assert score(req, 0, 1, workers=1)["rowsScored"] == 0


def test_a_manifest_whose_file_is_gone_or_cut_short_vouches_for_nothing(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    req = request(model_dir, dataset, out)
    score(req, 0, 1, workers=1)
    part(out, "part-00005").unlink()  # b.parquet's output: 300 rows
    cut = part(out, "part-00009")  # c.parquet's last row group: 50 rows
    cut.write_bytes(cut.read_bytes()[:-10])
    assert score(req, 0, 1, workers=1)["rowsScored"] == 350
    assert sorted(read_output(out).column("id").to_pylist()) == list(range(TOTAL))
    assert not cut.exists()  # named by no manifest now: removed with the output's manifest


def test_changed_input_or_model_redoes_the_shards_it_touches(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    score(request(model_dir, dataset, out), 0, 1, workers=1)
    pq.write_table(rows(300, 9, 1000), dataset / "b.parquet", compression="gzip")
    assert score(request(model_dir, dataset, out), 0, 1, workers=1)["rowsScored"] == 300
    # Other output columns are another run: every shard again.
    summary = score(request(model_dir, dataset, out, probabilities=False), 0, 1, workers=1)
    assert summary["rowsScored"] == TOTAL
    assert read_output(out).column_names == ["id", "prediction"]


def test_processes_write_the_same_bytes_as_one(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    score(request(model_dir, dataset, one), 0, 1, workers=1)
    summary = score(request(model_dir, dataset, two), 0, 1, workers=2)
    assert summary["rowsScored"] == TOTAL
    manifests = [json.loads((o / MANIFEST_FILE).read_text()) for o in (one, two)]
    assert without_paths(manifests[0]) == without_paths(manifests[1])


def test_csv_output(model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    score(request(model_dir, dataset, out, format="csv"), 0, 1, workers=1)
    table = read_output(out)
    assert sorted(table.column("id").to_pylist()) == list(range(TOTAL))
    assert all(p.suffix == ".csv" for p in out.glob("part-*"))


def test_progress_is_reported_as_a_training_run_reports_it(
    model_dir: Path, dataset: Path, tmp_path: Path, quiet_progress: Path
) -> None:
    score(request(model_dir, dataset, tmp_path / "out"), 1, 2, workers=1)
    final = json.loads(quiet_progress.read_text())
    report = kubeloop.train.current()
    assert final["step"] == final["totalSteps"] == report.step
    assert 0 < report.step < TOTAL
    assert final["metrics"]["shards_done"] == final["metrics"]["shards_total"] > 0
    assert final["metrics"]["rows_per_second"] > 0


def test_the_final_message_names_the_model_and_the_last_pod_the_output(
    model_dir: Path, dataset: Path, tmp_path: Path, quiet_progress: Path
) -> None:
    """Every pod says which model it scored with (its manifest's sha256); the pod that
    wrote _manifest.json also says the output's rows, files and that file's sha256."""
    out = tmp_path / "out"
    score(request(model_dir, dataset, out), 0, 2, workers=1)
    first = report.parse(quiet_progress.read_text())
    model_sha = hashlib.sha256((model_dir / "manifest.json").read_bytes()).hexdigest()
    assert first is not None and first.model_sha256 == model_sha and first.output is None
    kubeloop.train.reset()
    score(request(model_dir, dataset, out), 1, 2, workers=1)
    last = report.parse(quiet_progress.read_text())
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert last is not None and last.model_sha256 == model_sha
    assert last.output == report.OutputSummary(
        rows=TOTAL, files=len(manifest["files"]), sha256=sha256_file(out / MANIFEST_FILE)
    )
    # The standard final report is still there for the progress reader.
    final = json.loads(quiet_progress.read_text())
    assert final["step"] == final["totalSteps"] > 0


# -- bad input ------------------------------------------------------------------------


def fails(model_dir: Path, data: Path, tmp_path: Path, pattern: str, **spec: Any) -> None:
    with pytest.raises(BatchError, match=pattern):
        score(request(model_dir, data, tmp_path / "out", **spec), 0, 1, workers=1)


def test_missing_columns_name_the_file(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(rows(10, 1).drop_columns(["id", "petal_width_cm"]), data / "x.parquet")
    fails(
        model_dir,
        data,
        tmp_path,
        r"x.parquet: missing columns: petal_width_cm, id \(pass-through\); the file has: sepal_l",
    )


def test_wrong_types_name_the_file_and_column(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    table = rows(10, 1)
    table = table.set_column(2, "sepal_width_cm", pa.array([str(v) for v in range(10)]))
    pq.write_table(table, data / "x.parquet")
    fails(model_dir, data, tmp_path, r"x.parquet: column 'sepal_width_cm' holds string")
    (data / "x.parquet").unlink()
    (data / "y.csv").write_text("id," + ",".join(FEATURES) + "\n1,1,2,3,4\n2,1,oops,3,4\n")
    fails(model_dir, data, tmp_path, r"y.csv: cannot read: .*invalid value 'oops'")


def test_empty_files_name_the_file(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "zero.parquet").write_bytes(b"")
    fails(model_dir, data, tmp_path, r"zero.parquet: empty file")
    (data / "zero.parquet").unlink()
    pq.write_table(rows(0, 1), data / "none.parquet")
    fails(model_dir, data, tmp_path, r"none.parquet: no rows")
    (data / "none.parquet").unlink()
    (data / "header.csv").write_text("id," + ",".join(FEATURES) + "\n")
    fails(model_dir, data, tmp_path, r"header.csv: no rows")


def test_a_corrupt_parquet_file_is_named(model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    good = (dataset / "b.parquet").read_bytes()
    (dataset / "b.parquet").write_bytes(good[: len(good) // 2])
    fails(model_dir, dataset, tmp_path, r"b.parquet: not a readable Parquet file")
    # A footer intact and a page garbled: found while reading, named with its row group.
    data = bytearray(good)
    data[4:200] = bytes(196)
    (dataset / "b.parquet").write_bytes(bytes(data))
    fails(model_dir, dataset, tmp_path, r"b.parquet \(row group 0\): cannot read")


def test_missing_values_are_refused_for_a_model_without_nan(
    model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "gaps.csv").write_text("id," + ",".join(FEATURES) + "\n1,1,2,3,4\n2,1,,3,4\n")
    fails(model_dir, data, tmp_path, r"gaps.csv: column 'sepal_width_cm': row 2 is empty")
    (data / "gaps.csv").write_text("id," + ",".join(FEATURES) + "\n1,1,2,3,inf\n")
    fails(model_dir, data, tmp_path, r"gaps.csv: column 'petal_width_cm': row 1 is inf")


def test_a_model_that_does_not_match_its_manifest_is_refused(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    data = bytearray((copy / "model.joblib").read_bytes())
    data[-3] ^= 0xFF
    (copy / "model.joblib").write_bytes(bytes(data))
    fails(copy, dataset, tmp_path, r"model.joblib.*sha256")


def test_output_settings_are_checked(model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    fails(model_dir, dataset, tmp_path, "named twice: prediction", passthrough=("prediction",))
    fails(model_dir, dataset, tmp_path, "no predictions", predictions=False, probabilities=False)
    fails(model_dir, dataset, tmp_path, "format 'json'", format="json")


# -- the command ------------------------------------------------------------------------


def test_the_command_scores_and_says_why_it_fails(
    model_dir: Path,
    dataset: Path,
    tmp_path: Path,
    quiet_progress: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    common = ["--model-dir", str(model_dir), "--input", f"file://{dataset}", "--output", str(out)]
    argv = ["batch", "score", *common, "--passthrough", "id", "--workers", "1", "--count", "1"]
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["output"]["rows"] == TOTAL
    assert cli_main(["batch", "finalize", *common, "--passthrough", "id"]) == 0
    assert json.loads(capsys.readouterr().out) == {"rows": TOTAL, "files": 4}

    capsys.readouterr()
    assert cli_main(["batch", "shards", *common, "--passthrough", "id", "--count", "3"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [p["index"] for p in plan] == [0, 1, 2]
    assert sorted(s for p in plan for s in p["shards"]) == [
        "a.parquet (row groups 0-4)",
        "b.parquet (row group 0)",
        "d.csv",
        "more/c.parquet (row groups 0-4)",
    ]

    kubeloop.train.reset()
    (dataset / "b.parquet").write_bytes(b"not parquet")
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "b.parquet: not a readable Parquet file" in err
    assert "b.parquet: not a readable Parquet file" in quiet_progress.read_text()

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert cli_main(["batch", "score", *common, "--count", "3"]) == 2
    assert "index 3 is not in 0..2 (count 3)" in capsys.readouterr().err


def test_pods_running_at_once_finalize_once_with_every_row(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    """Three pods of one run as separate processes at the same time: whichever finishes
    last finds every shard in and writes the output's manifest."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "operator"),
        "KUBELOOP_PROGRESS_PORT": "0",
        "KUBELOOP_TERMINATION_LOG": str(tmp_path / "log"),
        "KUBELOOP_BATCH_COUNT": "3",
    }
    common = ["--model-dir", str(model_dir), "--input", str(dataset), "--output", str(out)]
    argv = [sys.executable, "-m", "kubeloop", "batch", "score", *common, "--passthrough", "id"]
    pods = [
        subprocess.Popen(
            [*argv, "--min-shard-rows", "150", "--workers", "1"],
            env={**env, "JOB_COMPLETION_INDEX": str(index)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(3)
    ]
    summaries = []
    for pod in pods:
        stdout, stderr = pod.communicate(timeout=120)
        assert pod.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    assert sum(s["rows"] for s in summaries) == TOTAL
    assert any("output" in s for s in summaries)
    assert sorted(read_output(out).column("id").to_pylist()) == list(range(TOTAL))


def test_refuse_keeps_another_runs_output_and_resumes_its_own(
    model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    out = tmp_path / "out"
    first = request(model_dir, dataset, out)
    score(first, 0, 1, workers=1)
    manifest = (out / MANIFEST_FILE).read_bytes()
    # The same run again (a retried pod) is no other run: resumed, nothing scored twice.
    assert score(replace(first, if_exists="refuse"), 0, 1, workers=1)["rowsScored"] == 0
    other = replace(request(model_dir, dataset, out, probabilities=False), if_exists="refuse")
    with pytest.raises(BatchError, match="output exists: it holds the complete output"):
        score(other, 0, 1, workers=1)
    assert (out / MANIFEST_FILE).read_bytes() == manifest


def test_the_output_counts_what_it_scored_as_the_model_server_counts(
    model_dir: Path, dataset: Path, tmp_path: Path, quiet_progress: Path
) -> None:
    """Drift counts on the model's profile bins: per shard in its manifest, added up in
    _manifest.json and reported by the pod that wrote it; the same numbers the model
    server's own counter gives for the same rows."""
    from kubeloop.drift.profile import bins_hash
    from kubeloop.modeldir import load_model
    from kubeloop.serving.livestats import LiveStats

    out = tmp_path / "out"
    score(request(model_dir, dataset, out), 0, 2, workers=2)
    kubeloop.train.reset()
    score(request(model_dir, dataset, out), 1, 2, workers=1)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    model = load_model(model_dir)
    assert model.profile is not None
    served = LiveStats("iris", model, monitoring=True)
    served.observe_inputs(expected(dataset)[1])
    drift = manifest["drift"]
    assert drift["rows"] == TOTAL and drift["reference"] == bins_hash(model.profile)
    assert drift["features"] == served.feature_counts()
    assert sum(drift["features"]["petal_width_cm"]) == TOTAL
    last = report.parse(quiet_progress.read_text())
    assert last is not None and last.drift == drift

    # A retried pod that skips a done shard still counts it (its manifest has them).
    (out / MANIFEST_FILE).unlink()
    kubeloop.train.reset()
    score(request(model_dir, dataset, out), 1, 2, workers=1)
    assert json.loads((out / MANIFEST_FILE).read_text())["drift"] == drift


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed child of a parent gone is reaped by init)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_a_pod_at_once_and_a_retry_goes_on(
    model_dir: Path, tmp_path: Path
) -> None:
    """A deleted or evicted pod gets SIGTERM: it stops now (the first process of a
    container has no default action for it, and would score on until SIGKILL), saying
    so in its termination message; the shards committed stay, and the retried pod
    finishes with every row once."""
    data = tmp_path / "in"
    data.mkdir()
    for f in range(4):
        pq.write_table(rows(4000, f, f * 4000), data / f"{f}.parquet")
    out, log = tmp_path / "out", tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBELOOP_PROGRESS_PORT": "0",
           "KUBELOOP_TERMINATION_LOG": str(log)}
    argv = [sys.executable, "-m", "kubeloop", "batch", "score", "--model-dir", str(model_dir),
            "--input", str(data), "--output", str(out), "--passthrough", "id", "--workers", "2"]
    # Two rows a predict: slow enough to be stopped in the middle of a shard.
    pod = subprocess.Popen([*argv, "--batch-rows", "2"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(out.glob(".part-*.tmp")) and time.monotonic() < deadline:
        assert pod.poll() is None, pod.communicate()
        time.sleep(0.05)
    workers = children(pod.pid)
    assert len(workers) >= 2, workers  # the scorer's processes (and the tracker)
    stopped = time.monotonic()
    pod.send_signal(signal.SIGTERM)
    assert pod.wait(timeout=10) == 143
    assert time.monotonic() - stopped < 5
    assert "stopped by SIGTERM" in log.read_text()
    # Its worker processes went with it (outside a container nothing else ends them).
    wait_for(lambda: not any(alive(w) for w in workers), 10, f"workers {workers} gone")
    assert not (out / MANIFEST_FILE).exists()

    retried = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert retried.returncode == 0, retried.stderr
    ids = read_output(out).column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(16000))
    assert not list(out.glob(".*.tmp"))
