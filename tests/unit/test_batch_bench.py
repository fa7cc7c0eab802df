"""The batch benchmark's pure parts: the rounds' order alternates, an output is accepted
only with every input id once and scikit-learn's predictions on the sample, peak memory
is read from /proc for the contender's whole session, and the README section states
the issue's goals from the figures alone."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from tests.kubetest import ROOT


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("batch_bench", ROOT / "bench" / "batch_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_alternate_the_order(bench: ModuleType) -> None:
    names = ["sklearn", "kubeloop-w1", "ray", "spark"]
    orders = bench.round_orders(names, 3)
    assert orders == [names, names[::-1], names]
    assert all(sorted(o) == sorted(names) for o in orders)


def test_ids_exactly_once(bench: ModuleType) -> None:
    assert bench.check_ids(np.random.default_rng(0).permutation(10), 10) == []
    assert bench.check_ids(np.arange(9), 10) == ["9 rows written for 10 read"]
    doubled = bench.check_ids(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 8]), 10)
    assert doubled == ["1 rows written twice"]
    assert bench.check_ids(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]), 10) == [
        "ids that are not the input's"
    ]


@pytest.fixture(scope="module")
def scored(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two input files of a few row groups, a 3-class model, and its true output."""
    root = tmp_path_factory.mktemp("batch")
    (root / "data").mkdir()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 20))
    for i in range(2):
        part = {"id": pa.array(np.arange(i * 600, (i + 1) * 600))}
        rows = x[i * 600 : (i + 1) * 600]
        part |= {n: pa.array(rows[:, j]) for j, n in enumerate(bench.FEATURE_NAMES)}
        pq.write_table(pa.table(part), root / "data" / f"part-{i}.parquet", row_group_size=200)
    estimator = LogisticRegression(max_iter=200).fit(x, np.argmax(x[:, :3], axis=1))
    proba = estimator.predict_proba(x)
    output = {"id": np.arange(1200), "prediction": estimator.predict(x)}
    output |= {f"probability_{c}": proba[:, k] for k, c in enumerate(bench.CLASSES)}
    return {"root": root, "estimator": estimator, "output": output}


def write_output(out: Path, columns: dict[str, np.ndarray]) -> None:
    """As the engines write: several part files, beside files readers skip."""
    (out / "_shards").mkdir(parents=True)
    (out / "_shards" / "part-0.parquet").write_text("a manifest, not data")
    (out / "_SUCCESS").write_text("")
    half = len(columns["id"]) // 2
    for i, part in enumerate((slice(None, half), slice(half, None))):
        pq.write_table(pa.table({k: v[part] for k, v in columns.items()}), out / f"p{i}.parquet")


def test_verify_accepts_the_true_output(bench: ModuleType, scored: dict, tmp_path: Path) -> None:
    write_output(tmp_path, scored["output"])
    check = bench.verify(scored["root"], tmp_path, 1200, scored["estimator"])
    # Every file's sampled row group holds 200 rows: all of them checked.
    assert check == {"rows": 1200, "ids_exactly_once": True, "sampled_rows_equal": 400}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("drop", "1199 rows written for 1200 read"),
        ("double", "rows written twice"),
        ("predictions", "predictions differ"),
        ("probabilities", "probabilities differ"),
    ],
)
def test_verify_refuses_a_wrong_output(
    bench: ModuleType, scored: dict, tmp_path: Path, change: str, said: str
) -> None:
    output = {k: v.copy() for k, v in scored["output"].items()}
    if change == "drop":
        output = {k: v[1:] for k, v in output.items()}
    elif change == "double":
        output["id"][1:] = output["id"][:-1]
    elif change == "predictions":
        output["prediction"] = (output["prediction"] + 1) % 3
    else:
        output["probability_a"] = output["probability_a"] + 1e-6
    write_output(tmp_path, output)
    with pytest.raises(SystemExit, match=said):
        bench.verify(scored["root"], tmp_path, 1200, scored["estimator"])


def test_peak_memory_of_the_session(bench: ModuleType) -> None:
    """A process in a session of its own and its child; both peaks seen, by name."""
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'b = bytearray(96 << 20); import time; time.sleep(30)'])\n"
        "a = bytearray(48 << 20); print('up', flush=True); time.sleep(30)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    memory = bench.PeakMemory(process.pid, interval=0.05)
    try:
        assert process.stdout and process.stdout.readline() == "up\n"
        memory.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            peaks = memory.summary()
            if peaks["processes"] == 2 and peaks["largest_worker"] >= 96:
                break
            time.sleep(0.05)
    finally:
        memory.stop()
        bench.end_session(process.pid)
        process.wait(timeout=10)
    peaks = memory.summary()
    assert peaks["processes"] == 2, peaks
    assert 48 <= peaks["self"] < 96 <= peaks["largest_worker"], peaks
    assert process.returncode == -9  # end_session killed what was left


def test_peak_kib(bench: ModuleType) -> None:
    assert bench.peak_kib("Name:\tjava\nVmPeak:\t  900 kB\nVmHWM:\t  4096 kB\n") == 4096
    assert bench.peak_kib("Name:\tzombie\n") == 0


def result(rate: int, ceiling: int, **extra: Any) -> dict[str, Any]:
    memory = {"self": 300.0, "largest_worker": 0.0, "largest_worker_name": "", "processes": 1,
              "by_name": {}}
    return {"rows_per_second": rate, "runs_rows_per_second": [rate, rate + 1, rate - 1],
            "fraction_of_ceiling": round(rate / ceiling, 3), "peak_rss_mib": memory, **extra}


def document(kube1: int, kube2: int, ray: int, spark: int) -> dict[str, Any]:
    ceiling = 100_000
    return {
        "generated": "2026-12-07T20:00:00+00:00", "commit": {"sha": "a" * 40, "dirty": False},
        "machine": {"cpus": 2, "load_at_start": 0.3}, "rows": 10_000_000, "features": 20,
        "files": 8, "row_group_rows": 125_000, "batch_rows": 65_536, "cpus": 2,
        "model": "GradientBoostingClassifier(n_estimators=100), 3 classes",
        "outputs": "id, prediction and 3 class probabilities (Parquet)", "repeats": 3,
        "settings": {
            "kubeloop": {"how": "the scorer"},
            "ray": {"version": "2.60.0", "ray.init": {"num_cpus": 2}, "map_batches": {
                "concurrency": 2, "num_cpus": 0.5, "batch_size": 65_536, "batch_format": "numpy"}},
            "spark": {"version": "4.3.0", "master": "local[2]",
                      "conf": {"spark.sql.execution.arrow.maxRecordsPerBatch": "65536"},
                      "predict_batch_udf": {"batch_size": 65_536}},
        },
        "results": {
            "sklearn": result(ceiling, ceiling),
            "kubeloop-w1": result(kube1, ceiling),
            "kubeloop-w2": result(kube2, ceiling),
            "ray": result(ray, ceiling, startup_seconds_median=9.5),
            "spark": result(spark, ceiling, startup_seconds_median=6.25),
        },
    }


def test_render_states_the_goals_from_the_figures(bench: ModuleType) -> None:
    text = bench.render(document(85_000, 160_000, 40_000, 200_000))
    assert "| Kubeloop scorer, 1 worker | 1 | 85,000 | 85,000 / 85,001 / 84,999 | 85% |" in text
    assert "| Ray Data 2.60.0 | 2 | 40,000 |" in text
    assert "`concurrency=2`, `num_cpus=0.5`" in text and "`local[2]`" in text
    assert "10,000,000 rows" in text
    assert "85% of the ceiling's rows/s including I/O (goal: at least 80%: met)" in text
    assert "vs Ray Data: 4.00x (ahead)" in text and "vs Spark: 0.80x (behind)" in text
    assert "Ray Data 2.60.0 9.5 s, Spark 4.3.0 6.25 s" in text
    low = bench.render(document(70_000, 90_000, 40_000, 30_000))
    assert "(goal: at least 80%: not met)" in low and "vs Spark: 3.00x (ahead)" in low


def test_readme_section_between_its_markers(bench: ModuleType, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nbefore\n")
    bench.write_readme(readme, "one\n")
    bench.write_readme(readme, "two\n")
    assert readme.read_text() == (
        f"# Benchmarks\n\nbefore\n\n{bench.START_MARKER}\ntwo\n{bench.END_MARKER}\n"
    )
