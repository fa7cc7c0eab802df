#!/usr/bin/env python3
"""The contenders of bench/quality_bench.py, each run under its own virtualenv's
interpreter (never the project's): imports numpy, pandas and the contender only.

    <venv>/bin/python bench/quality_contenders.py nannyml JOB.npz OUT.json
    <venv>/bin/python bench/quality_contenders.py evidently JOB.npz OUT.json
    <venv>/bin/python bench/quality_contenders.py versions - OUT.json
    <nannyml venv>/bin/python bench/quality_contenders.py census - OUT.npz

* census: the real data set NannyML's wheel ships (``load_us_census_ma_employment_data``:
  the US Census ACS of Massachusetts, 2015-2018, whether a person is employed), its
  reference and analysis rows together with their labels, as arrays.

* nannyml: CBPE fitted on the reference's (probabilities, prediction, label), then
  estimating accuracy on the analysis rows in chunks of ``window`` rows (the windows,
  back to back, so chunk i is window i).
* evidently: ``Report([DataDriftPreset()])`` with its defaults, one run per window
  against the reference; the preset's dataset drift (share of drifted columns at or
  above its ``drift_share``) and each column's verdict.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def nannyml(job: Any) -> dict[str, Any]:
    import nannyml as nml
    import pandas as pd

    classes = [str(c) for c in job["classes"]]
    window = int(job["window"])

    def frame(proba: np.ndarray, pred: np.ndarray, y: np.ndarray | None) -> Any:
        data: dict[str, Any] = {"y_pred": pred.astype(str)}
        if y is not None:
            data["y_true"] = y.astype(str)
        for i, c in enumerate(classes):
            data[f"proba_{c}"] = proba[:, i]
        return pd.DataFrame(data)

    binary = len(classes) == 2
    if binary:
        # CBPE's binary form takes the positive class's probability and 0/1 labels.
        def frame2(proba: np.ndarray, pred: np.ndarray, y: np.ndarray | None) -> Any:
            data: dict[str, Any] = {"y_pred": (pred == job["classes"][1]).astype(int),
                                    "proba": proba[:, 1]}
            if y is not None:
                data["y_true"] = (y == job["classes"][1]).astype(int)
            return pd.DataFrame(data)

        make, problem = frame2, "classification_binary"
        proba_arg: Any = "proba"
    else:
        make, problem = frame, "classification_multiclass"
        proba_arg = {c: f"proba_{c}" for c in classes}
    reference = make(job["ref_proba"], job["ref_pred"], job["ref_y"])
    analysis = make(job["proba"], job["pred"], None)
    start = time.perf_counter()
    estimator = nml.CBPE(y_pred_proba=proba_arg, y_pred="y_pred", y_true="y_true",
                         problem_type=problem, metrics=["accuracy"], chunk_size=window)
    estimator.fit(reference)
    result = estimator.estimate(analysis).filter(period="analysis").to_df()
    seconds = time.perf_counter() - start
    values = [float(v) for v in result[("accuracy", "value")]]
    if len(values) != len(analysis) // window:
        raise SystemExit(f"nannyml gave {len(values)} chunks for {len(analysis)} rows")
    return {"estimated": values, "seconds": round(seconds, 3)}


def evidently(job: Any) -> dict[str, Any]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    names = [str(n) for n in job["names"]]
    window = int(job["window"])
    definition = DataDefinition(numerical_columns=names)
    reference = Dataset.from_pandas(pd.DataFrame(job["ref_x"], columns=names),
                                    data_definition=definition)
    current = job["x"]
    out: dict[str, Any] = {"dataset_drift": [], "drifted_columns": []}
    start = time.perf_counter()
    for i in range(len(current) // window):
        rows = pd.DataFrame(current[i * window:(i + 1) * window], columns=names)
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(rows, data_definition=definition),
            reference_data=reference)
        metrics = snapshot.dict()["metrics"]
        count = next(m for m in metrics if m["config"]["type"].endswith("DriftedColumnsCount"))
        share, rule = float(count["value"]["share"]), float(count["config"]["drift_share"])
        out["dataset_drift"].append(share >= rule)
        out["drifted_columns"].append(sorted(
            m["config"]["column"] for m in metrics
            if m["config"]["type"].endswith("ValueDrift")
            and float(m["value"]) >= float(m["config"]["threshold"])))
        if i == 0:
            method = next(m for m in metrics if m["config"]["type"].endswith("ValueDrift"))
            out["method"] = (f"{method['config']['method']} >= {method['config']['threshold']}"
                             f", dataset drift at a share of drifted columns >= {rule}")
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


CENSUS_FEATURES = ["AGEP", "SCHL", "MAR", "RELP", "DIS", "ESP", "CIT", "MIG", "MIL", "ANC",
                   "NATIVITY", "DEAR", "DEYE", "DREM", "SEX", "RAC1P"]


def census(out_path: str) -> None:
    import pandas as pd
    from nannyml.datasets import load_us_census_ma_employment_data

    reference, analysis, targets = load_us_census_ma_employment_data()
    analysis = analysis.merge(targets, on="id")
    rows = pd.concat([reference, analysis], ignore_index=True)
    np.savez(out_path, x=rows[CENSUS_FEATURES].to_numpy(dtype=np.float64),
             y=rows["employed"].to_numpy(dtype=np.int64), names=np.array(CENSUS_FEATURES))


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in ("nannyml", "evidently", "pandas", "numpy", "scikit-learn", "scipy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def main() -> None:
    what, job_path, out_path = sys.argv[1:4]
    if what == "census":
        census(out_path)
        return
    if what == "versions":
        result = versions()
    else:
        with np.load(job_path, allow_pickle=False) as data:
            job = dict(data)
        result = {"nannyml": nannyml, "evidently": evidently}[what](job)
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
