#!/usr/bin/env python3
"""The batch benchmark's outside contenders, each run by its own virtualenv's Python.

Imports nothing of Kubeloop's: Ray and Spark live in virtualenvs of their own (made by
bench/batch_bench.sh), with the project's scikit-learn, NumPy and joblib so that they load
the same joblib model. One run per process: it scores every row of the Parquet dataset in
``--data`` with the model in ``--model`` and writes id, prediction and the class
probabilities as Parquet under ``--out``, then prints one JSON line: the timed seconds,
the seconds spent starting the engine before the clock (not timed, reported), and the
settings it ran with.

    python bench/batch_contenders.py ray|spark --data D --model M --out O \\
        [--cpus 2] [--batch-rows 65536]

Each is set up as its documentation recommends for batch inference:

- Ray Data (the batch inference guide): ``read_parquet``, then ``map_batches`` with a
  callable class that loads the model once in ``__init__`` (a pool of actors, one per
  core: ``concurrency=cpus``, half a logical CPU each, see ACTOR_CPUS), NumPy batches
  of ``batch_rows``, then ``write_parquet``; a local Ray: ``ray.init(num_cpus=cpus)``.
- Spark (``pyspark.ml.functions.predict_batch_udf``): a ``make_predict_fn`` that loads
  the model once per Python worker and returns a function of one N x 20 array (the
  features combined with ``array()`` and ``input_tensor_shapes``, as the docs say for a
  model of one input), ``batch_size=batch_rows``, Arrow batches of the same size
  (``spark.sql.execution.arrow.maxRecordsPerBatch``, of which the UDF's docs say the
  batch size is a sub-batch), a ``StructType`` return of the prediction and one column per
  class; ``local[cpus]``, then ``write.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FEATURES = [f"f{j:02d}" for j in range(20)]
CLASSES = ["a", "b", "c"]
MODEL_FILE = "model.joblib"
# Ray's logical CPUs per predictor actor. With 1 (the default), one actor per CPU holds
# every CPU of a 2-CPU Ray and Ray Data never schedules its read and write tasks (seen:
# no row read in 9 minutes); half a CPU each leaves one for them, the actors still one
# per core.
ACTOR_CPUS = 0.5


def output_names() -> list[str]:
    """The output's columns, as Kubeloop's scorer names them."""
    return ["id", "prediction", *(f"probability_{c}" for c in CLASSES)]


class RayPredictor:
    """Ray Data's stateful transform: the model loaded once per actor."""

    def __init__(self, model_dir: str) -> None:
        import joblib

        self.estimator = joblib.load(Path(model_dir) / MODEL_FILE)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        x = np.column_stack([batch[name] for name in FEATURES])
        out = {"id": batch["id"], "prediction": self.estimator.predict(x)}
        proba = self.estimator.predict_proba(x)
        for k, label in enumerate(CLASSES):
            out[f"probability_{label}"] = proba[:, k]
        return out


def run_ray(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=args.cpus, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    startup = time.perf_counter() - began
    settings = {
        "version": ray.__version__,
        "ray.init": {"num_cpus": args.cpus},
        "read": "ray.data.read_parquet(columns=id and the 20 features)",
        "map_batches": {
            "fn": "callable class (model loaded once per actor)",
            "concurrency": args.cpus,
            "num_cpus": ACTOR_CPUS,
            "batch_size": args.batch_rows,
            "batch_format": "numpy",
        },
        "write": "Dataset.write_parquet",
    }
    start = time.perf_counter()
    ds = ray.data.read_parquet(args.data, columns=["id", *FEATURES])
    ds = ds.map_batches(
        RayPredictor,
        fn_constructor_kwargs={"model_dir": args.model},
        concurrency=args.cpus,
        num_cpus=ACTOR_CPUS,
        batch_size=args.batch_rows,
        batch_format="numpy",
    )
    ds.write_parquet(args.out)
    seconds = time.perf_counter() - start
    ray.shutdown()
    return {"seconds": seconds, "startup_seconds": startup, "settings": settings}


def make_predict_fn_factory(model_dir: str) -> Any:
    def make_predict_fn() -> Any:
        import joblib

        estimator = joblib.load(Path(model_dir) / MODEL_FILE)

        def predict(x: Any) -> dict[str, Any]:
            out = {"prediction": estimator.predict(x)}
            proba = estimator.predict_proba(x)
            for k, label in enumerate(CLASSES):
                out[f"probability_{label}"] = proba[:, k]
            return out

        return predict

    return make_predict_fn


def run_spark(args: argparse.Namespace) -> dict[str, Any]:
    import pyspark
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import array
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    # Python workers run this virtualenv's Python (Spark's default is python3 on the PATH).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    conf = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.batch_rows),
        "spark.driver.memory": args.spark_driver_memory,
        "spark.ui.enabled": "false",
    }
    began = time.perf_counter()
    builder = SparkSession.builder.master(f"local[{args.cpus}]").appName("kubeloop-batch-bench")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - began
    return_type = StructType(
        [StructField("prediction", LongType())]
        + [StructField(f"probability_{c}", DoubleType()) for c in CLASSES]
    )
    score = predict_batch_udf(
                make_predict_fn_factory(args.model),
        return_type=return_type,
        batch_size=args.batch_rows,
        input_tensor_shapes=[[len(FEATURES)]],
    )
    settings = {
        "version": pyspark.__version__,
        "master": f"local[{args.cpus}]",
        "PYSPARK_PYTHON": "the virtualenv's python",
        "conf": conf,
        "predict_batch_udf": {
            "make_predict_fn": "loads the model once per Python worker",
            "batch_size": args.batch_rows,
            "inputs": "array(the 20 feature columns), input_tensor_shapes=[[20]]",
            "return_type": "struct<prediction:bigint, probability_<class>:double...>",
        },
        "write": "DataFrame.write.parquet (default snappy)",
    }
    start = time.perf_counter()
    df = spark.read.parquet(args.data)
    scored = df.select("id", score(array(*FEATURES)).alias("s")).select("id", "s.*")
    scored.write.mode("overwrite").parquet(args.out)
    seconds = time.perf_counter() - start
    spark.stop()
    return {"seconds": seconds, "startup_seconds": startup, "settings": settings}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=["ray", "spark"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--spark-driver-memory", default="2g")
    args = parser.parse_args(argv)
    result = run_ray(args) if args.engine == "ray" else run_spark(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
