#!/usr/bin/env python3
"""`make bench-quality`: the served model's quality, Kubeloop vs NannyML and Evidently on
the same data and the same windows (issue 23).

Kubeloop's side runs the product's own code: the reference profile with the model's
calibration (`build_profile` + `with_model`, what `kubeloop profile --model --labels`
does); the model server's collectors (`LiveStats`, `Quality`: served inputs on the
profile's bins, the calibrated expected correctness of each answer, the feedback route's
checks and counts) rendered as `/metrics` text; the operator's reading of that text
(`parse_metrics`, `parse_quality`) and its judgement of each window (`judge`, with the
DriftMonitor spec as a user writes it), whose `wants_retrain` is "the loop acts".

1. **Estimation error.** Covariate shifts made by resampling the rows on one feature
   (weights exp(s z), P(label | inputs) untouched), on a synthetic 3-class table
   (scikit-learn's make_classification) and on real data: the US Census ACS employment
   rows of Massachusetts that NannyML's wheel ships (covertype and adult need a
   download, which this machine cannot do). The realised accuracy of each window
   against Kubeloop's estimate and NannyML CBPE's (fitted on the same reference, on the
   same windows): the mean absolute error.
2. **False alarms.** 200 windows of 10,000 rows drawn as the reference, the second
   hundred with a growing shift of a feature the model does not use (its pipeline drops
   it); labels for 10% of the answers. Windows that would retrain: Kubeloop with
   `spec.performance`, Kubeloop input-only (psi, the default, and ks with its
   Benjamini-Hochberg correction), Evidently's DataDriftPreset.
3. **Detection delay.** Concept drift at a known window: the labels of one region of the
   inputs change (class c -> c+1 where one informative feature is above its 85th
   percentile), the inputs do not; labels for 10% of the answers. Windows until the loop
   acts, per seed, and what the input-only monitors and Evidently do.

Results: bench/results/quality.json (commit, dirty flag, date, machine, versions) and the
section between the markers in bench/README.md. The contenders run under their own
interpreters (bench/quality_bench.sh makes their virtualenvs):

    .venv/bin/python bench/quality_bench.py --nannyml-python P --evidently-python P
    .venv/bin/python bench/quality_bench.py --render-only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One thread for scikit-learn's OpenMP loops: on a shared 2-CPU machine several busy
# threads each wait on the others; the figures are counts and errors, not timings.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

RESULTS = ROOT / "bench" / "results" / "quality.json"
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- quality-bench:start -->", "<!-- quality-bench:end -->"
CONTENDERS = ROOT / "bench" / "quality_contenders.py"
WINDOW = 10_000
LABEL_SHARE = 0.10
MAX_DROP = 0.05
MIN_LABELS = 100
GOALS = {"mae": 0.02, "false_alarm_rate": 0.01, "delay_windows": 2}
# The DriftMonitors compared, as a user writes them (the rest of the spec is shared).
MONITORS: dict[str, dict[str, Any]] = {
    "Kubeloop, performance": {
        "performance": {"metric": "accuracy", "source": "both", "maxDrop": MAX_DROP,
                        "minLabels": MIN_LABELS}},
    "Kubeloop, performance estimated only": {
        "performance": {"metric": "accuracy", "source": "estimated", "maxDrop": MAX_DROP}},
    "Kubeloop input-only, psi": {"method": "psi"},
    "Kubeloop input-only, ks": {"method": "ks"},
}


# --- pure parts -------------------------------------------------------------------------

def shifted_sample(
    column: np.ndarray, strength: float, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices drawn (with replacement) with weights exp(strength * z) of ``column``'s
    standardised values: a covariate shift on that feature that keeps P(label | inputs)."""
    z = (column - column.mean()) / (column.std() or 1.0)
    logits = strength * z
    weights = np.exp(logits - logits.max())
    return rng.choice(len(column), size=size, replace=True, p=weights / weights.sum())


def label_noise(x: np.ndarray) -> np.ndarray:
    """The synthetic table's chance that a row's label is another class: 0 to 0.5."""
    return 0.5 / (1.0 + np.exp(-2.0 * x + 1.0))


def mae(estimated: list[float], realised: list[float]) -> float:
    if len(estimated) != len(realised) or not realised:
        raise ValueError("one estimate per window")
    return float(np.mean(np.abs(np.asarray(estimated) - np.asarray(realised))))


def concept_drift(y: np.ndarray, region: np.ndarray, classes: int) -> np.ndarray:
    """Labels after the drift: class c becomes c + 1 (mod classes) inside ``region``."""
    out = y.copy()
    out[region] = (y[region] + 1) % classes
    return out


def delay(acted: list[bool], arrival: int) -> int | None:
    """Windows from the drift's arrival until the loop acts, counting the arrival window
    as 1 (acting at the end of the first drifted window is a delay of 1); None: never."""
    for i in range(arrival, len(acted)):
        if acted[i]:
            return i - arrival + 1
    return None


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


# --- Kubeloop: the server's collectors and the operator's judgement ------------------------

@dataclass
class Model:
    estimator: Any
    names: list[str]
    classes: np.ndarray


class Served:
    """One model server's counters (what `kubeloop serve` registers for a model), fed
    with what it answers and the labels posted to it, scraped as `/metrics` text."""

    def __init__(self, model: Model, profile: Any) -> None:
        from prometheus_client import CollectorRegistry

        from kubeloop.modeldir import LoadedModel, ModelMetadata, TensorSpec
        from kubeloop.serving.livestats import LiveStats
        from kubeloop.serving.quality import Quality

        self.model, self.profile, self.name = model, profile, "bench"
        metadata = ModelMetadata(
            name=self.name, version="v1", framework="sklearn",
            inputs=[TensorSpec(name=n, datatype="FP64", shape=[-1]) for n in model.names],
            outputs=[TensorSpec(name="predict", datatype="INT64", shape=[-1])],
            classes=[str(c) for c in model.classes], created="2026-01-01T00:00:00Z")
        loaded = LoadedModel(metadata=metadata, profile=profile, estimator=model.estimator,
                             allow_nan=False, classes=model.classes,
                             class_labels=[str(c) for c in model.classes])
        self.registry = CollectorRegistry()
        self.stats = LiveStats(self.name, loaded, monitoring=True)
        self.quality = Quality(self.name, "v1", loaded, monitoring=True)
        self.registry.register(self.stats)
        self.registry.register(self.quality)
        assert self.quality.estimating, "the profile has no calibration"

    def answer(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba = np.asarray(self.model.estimator.predict_proba(rows), dtype=np.float64)
        predicted = np.asarray(self.model.estimator.predict(rows))
        self.stats.observe(rows, predicted)
        self.quality.observe(predicted, proba)
        return predicted, proba

    def feedback(self, labels: np.ndarray, predicted: np.ndarray) -> int:
        """POST /v2/models/{name}/feedback's body, as a client sends it (JSON values)."""
        from kubeloop.serving.quality import MAX_RECORDS

        records = [{"label": int(a), "prediction": int(b)}
                   for a, b in zip(labels.tolist(), predicted.tolist(), strict=True)]
        counted = 0
        for start in range(0, len(records), MAX_RECORDS):
            counted += self.quality.feedback(
                {"model_version": "v1", "records": records[start:start + MAX_RECORDS]})
        return counted

    def scrape(self) -> Any:
        """What the operator reads from the pod's `/metrics` (driftread.scrape_metrics)."""
        from prometheus_client import generate_latest

        from kubeloop.controllers.driftverdict import Scrape
        from kubeloop.drift import performance as perf
        from kubeloop.drift import sources

        text = generate_latest(self.registry).decode()
        quality = perf.parse_quality(text, self.name)
        return Scrape(sources.parse_metrics(text, self.profile, self.name), cumulative=True,
                      quality=quality, versions=frozenset(perf.served_versions(quality)))


class Monitor:
    """A DriftMonitor's checks, as the reconcile runs them (status carried over)."""

    def __init__(self, fields: dict[str, Any], profile: Any) -> None:
        from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus

        self.spec = DriftMonitorSpec.model_validate({
            "modelDeployment": "bench", "minSamples": 1000,
            "onDrift": {"retrain": {"cooldown": "0s", "template": {"image": "train:1"}}},
            **fields})
        self.status = DriftMonitorStatus()
        self.profile = profile
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.events: list[tuple[str, str, str]] = []

    def check(self, scrape: Any) -> bool:
        """Judge the window since the last check: whether the loop acts (starts a retrain;
        none is ever started here, so no cooldown or running retrain holds one back)."""
        from kubeloop.api.common import Condition
        from kubeloop.controllers.driftverdict import judge

        verdict = judge(self.spec, self.status, self.profile, scrape, self.now, self.events)
        self.status.conditions = [
            Condition(type=cd.type, status=cd.status_str, reason=cd.reason, message=cd.message)
            for cd in verdict.conds]
        self.now += dt.timedelta(minutes=10)
        return verdict.wants_retrain


def fit(x: np.ndarray, y: np.ndarray, names: list[str], used: list[int], seed: int) -> Model:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    estimator = make_pipeline(
        ColumnTransformer([("used", "passthrough", used)], remainder="drop"),
        HistGradientBoostingClassifier(max_iter=100, random_state=seed))
    estimator.fit(x, y)
    return Model(estimator, names, np.asarray(estimator.classes_))


def profile_of(model: Model, x: np.ndarray, y: np.ndarray) -> Any:
    """`kubeloop profile --model --labels` on held-out reference rows."""
    from kubeloop.drift.calibration import with_model
    from kubeloop.drift.profile import build_profile

    profile = build_profile({n: x[:, i] for i, n in enumerate(model.names)})
    return with_model(profile, model.estimator, x, y, [str(c) for c in model.classes])


# --- data ----------------------------------------------------------------------------------

@dataclass
class Data:
    name: str
    names: list[str]
    train: tuple[np.ndarray, np.ndarray]
    reference: tuple[np.ndarray, np.ndarray]
    pool: tuple[np.ndarray, np.ndarray]
    used: list[int]
    shifted: list[int]
    """Features the covariate shifts resample on."""


def split(name: str, x: np.ndarray, y: np.ndarray, names: list[str], used: list[int],
          shifted: list[int], train: int, reference: int, seed: int) -> Data:
    order = np.random.default_rng(seed).permutation(len(y))
    a, b = order[:train], order[train:train + reference]
    c = order[train + reference:]
    return Data(name, names, (x[a], y[a]), (x[b], y[b]), (x[c], y[c]), used, shifted)


def synthetic(seed: int) -> Data:
    """make_classification, 3 classes, with label noise that grows with x7 (so that the
    model is less sure, and less often right, where x7 is high: a shift on x7 moves its
    accuracy), plus one column the model does not use."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=300_000, n_features=8, n_informative=5,
                               n_redundant=1, n_classes=3, n_clusters_per_class=2,
                               class_sep=1.0, flip_y=0.0, shuffle=False, random_state=seed)
    rng = np.random.default_rng(seed)
    noisy = rng.random(len(y)) < label_noise(x[:, 7])
    y = np.where(noisy, (y + rng.integers(1, 3, size=len(y))) % 3, y)
    unused = rng.normal(size=(len(y), 1))
    names = [f"x{i}" for i in range(8)] + ["unused"]
    return split("synthetic (make_classification, 3 classes)", np.hstack([x, unused]), y,
                 names, list(range(8)), [7, 0], 50_000, 50_000, seed)


def census(path: Path, seed: int) -> Data:
    with np.load(path) as data:
        x, y, names = data["x"], data["y"], [str(n) for n in data["names"]]
    return split("US Census ACS, Massachusetts, employed (NannyML's wheel)", x, y, names,
                 list(range(len(names))), [names.index("AGEP"), names.index("SCHL")],
                 50_000, 50_000, seed)


# --- the contenders -----------------------------------------------------------------------

def contender(python: str, what: str, job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    job_path, out_path = tmp / f"{what}-job.npz", tmp / f"{what}-out.json"
    np.savez(job_path, **job)
    subprocess.run([python, "-W", "ignore", str(CONTENDERS), what, str(job_path),
                    str(out_path)], check=True)
    log(f"{what} done")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def versions_of(python: str, tmp: Path) -> dict[str, Any]:
    out = tmp / "versions.json"
    subprocess.run([python, str(CONTENDERS), "versions", "-", str(out)], check=True)
    found: dict[str, Any] = json.loads(out.read_text())
    return found


# --- 1. estimation error ------------------------------------------------------------------

def prepared(data: Data, seed: int) -> tuple[Model, Any]:
    """The model trained on the data set's training rows and its reference profile."""
    model = fit(*data.train, data.names, data.used, seed)
    log(f"{data.name}: model trained")
    return model, profile_of(model, *data.reference)


def estimation(data: Data, model: Model, profile: Any, windows: int, nannyml: str, tmp: Path,
               seed: int) -> dict[str, Any]:
    served = Served(model, profile)
    monitor = Monitor(MONITORS["Kubeloop, performance estimated only"], profile)
    monitor.check(served.scrape())  # the baseline
    rng = np.random.default_rng(seed + 1)
    x, y = data.pool
    strengths = np.linspace(-2.0, 2.0, windows // len(data.shifted))
    rows, realised, estimated, shifts = [], [], [], []
    for feature in data.shifted:
        for s in strengths:
            index = shifted_sample(x[:, feature], float(s), WINDOW, rng)
            predicted, _ = served.answer(x[index])
            monitor.check(served.scrape())
            assert monitor.status.performance is not None
            estimated.append(float(monitor.status.performance.estimated or 0.0))
            realised.append(float(np.mean(predicted == y[index])))
            rows.append(index)
            shifts.append(f"{data.names[feature]} {s:+.2f}")
    index = np.concatenate(rows)
    ref_x, ref_y = data.reference
    theirs = contender(nannyml, "nannyml", {
        "classes": model.classes, "window": WINDOW,
        "ref_proba": model.estimator.predict_proba(ref_x),
        "ref_pred": model.estimator.predict(ref_x), "ref_y": ref_y,
        "proba": model.estimator.predict_proba(x[index]),
        "pred": model.estimator.predict(x[index])}, tmp)
    return {
        "data": data.name, "windows": len(realised), "rows per window": WINDOW,
        "reference accuracy": round(float(profile.calibration.accuracy), 4),
        "shifts": shifts, "realised": realised, "kubeloop": estimated,
        "nannyml": theirs["estimated"], "nannyml seconds": theirs["seconds"],
        "kubeloop mae": round(mae(estimated, realised), 5),
        "nannyml mae": round(mae(theirs["estimated"], realised), 5),
        "realised range": [round(min(realised), 4), round(max(realised), 4)],
    }


# --- 2 and 3: windows judged by every monitor ----------------------------------------------

def run_windows(
    data: Data, model: Model, profile: Any, plan: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
) -> dict[str, Any]:
    """Serve each window (rows, labels), post labels for LABEL_SHARE of its answers, and
    let every monitor judge it; per monitor, whether it acted in each window."""
    served = Served(model, profile)
    monitors = {name: Monitor(fields, profile) for name, fields in MONITORS.items()}
    scrape = served.scrape()
    for m in monitors.values():
        m.check(scrape)  # the baseline
    rng = np.random.default_rng(seed)
    acted: dict[str, list[bool]] = {name: [] for name in monitors}
    realised, judged, estimated, input_drift = [], [], [], []
    for rows, labels in plan:
        predicted, _ = served.answer(rows)
        some = rng.random(len(rows)) < LABEL_SHARE
        served.feedback(labels[some], predicted[some])
        scrape = served.scrape()
        for name, m in monitors.items():
            acted[name].append(m.check(scrape))
        perf = monitors["Kubeloop, performance"].status.performance
        assert perf is not None
        realised.append(float(np.mean(predicted == labels)))
        judged.append(perf.judged)
        estimated.append(perf.estimated)
        input_drift.append(bool(monitors["Kubeloop, performance"].status.drifted))
    return {"acted": acted, "realised": realised, "judged": judged, "estimated": estimated,
            "input drift reported": input_drift}


def false_alarms(data: Data, model: Model, profile: Any, windows: int, evidently: str,
                 tmp: Path, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed + 2)
    x, y = data.pool
    unused = data.names.index("unused")
    std = float(data.reference[0][:, unused].std())
    half = windows // 2
    shift = [0.0] * half + [float(s) for s in np.linspace(0.1, 1.0, windows - half)]
    plan = []
    for s in shift:
        index = rng.choice(len(y), size=WINDOW, replace=False)
        rows = x[index].copy()
        rows[:, unused] += s * std
        plan.append((rows, y[index]))
    out = run_windows(data, model, profile, plan, seed + 3)
    theirs = contender(evidently, "evidently", {
        "names": np.array(data.names), "window": WINDOW, "ref_x": data.reference[0],
        "x": np.concatenate([rows for rows, _ in plan])}, tmp)
    out["acted"]["Evidently DataDriftPreset"] = theirs["dataset_drift"]
    out["evidently any column drifted"] = [bool(c) for c in theirs["drifted_columns"]]
    out["evidently method"] = theirs.get("method")
    out["evidently seconds"] = theirs["seconds"]
    out["unused shift, std"] = shift
    out["data"] = data.name
    out["windows"] = windows
    out["reference accuracy"] = round(float(profile.calibration.accuracy), 4)
    out["rate"] = {name: sum(a) / len(a) for name, a in out["acted"].items()}
    out["rate, windows without shift"] = {name: sum(a[:half]) / half
                                          for name, a in out["acted"].items()}
    out["rate, windows with the unused feature shifted"] = {
        name: sum(a[half:]) / (windows - half) for name, a in out["acted"].items()}
    return out


def detection(data: Data, model: Model, profile: Any, windows: int, arrival: int, seeds: int,
              evidently: str, tmp: Path, seed: int) -> dict[str, Any]:
    x, y = data.pool
    feature = 0
    region = x[:, feature] > np.quantile(data.reference[0][:, feature], 0.85)
    drifted_y = concept_drift(y, region, len(model.classes))
    runs = []
    for k in range(seeds):
        rng = np.random.default_rng(seed + 10 + k)
        plan = []
        for w in range(windows):
            index = rng.choice(len(y), size=WINDOW, replace=False)
            plan.append((x[index], (drifted_y if w >= arrival else y)[index]))
        run = run_windows(data, model, profile, plan, seed + 20 + k)
        theirs = contender(evidently, "evidently", {
            "names": np.array(data.names), "window": WINDOW, "ref_x": data.reference[0],
            "x": np.concatenate([rows for rows, _ in plan])}, tmp)
        run["acted"]["Evidently DataDriftPreset"] = theirs["dataset_drift"]
        run["delay"] = {name: delay(a, arrival) for name, a in run["acted"].items()}
        run["acted before the drift"] = {name: sum(a[:arrival]) for name, a in run["acted"].items()}
        runs.append(run)
    return {"data": data.name, "windows": windows, "arrival": arrival, "seeds": seeds,
            "region": f"{data.names[feature]} above its reference 85th percentile",
            "region share": round(float(region.mean()), 4),
            "reference accuracy": round(float(profile.calibration.accuracy), 4), "runs": runs}


# --- results ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model or platform.processor(),
            "python": platform.python_version(), "load before": [round(v, 2)
                                                                for v in os.getloadavg()]}


def product_versions() -> dict[str, str]:
    from importlib import metadata

    return {p: metadata.version(p) for p in ("numpy", "scikit-learn", "prometheus-client")}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(out: dict[str, Any]) -> str:
    dirty = " with uncommitted changes" if out["dirty"] else ""
    m, v = out["machine"], out["versions"]
    lines = [
        "## Model quality: estimated accuracy, false alarms, detection delay",
        "",
        "`make bench-quality` (`bench/quality_bench.sh`, then `bench/quality_bench.py`; "
        "results in `bench/results/quality.json`, this section written from it). "
        f"Run {out['date']} at {out['commit'][:12]}{dirty} on {m['cpus']} CPUs ({m['cpu']}), "
        f"load average {m['load before'][0]} before and {m['load after'][0]} after, "
        f"{out['seconds']:.0f} s in all. Kubeloop: Python {m['python']}, scikit-learn "
        f"{v['kubeloop']['scikit-learn']}, NumPy {v['kubeloop']['numpy']}; NannyML "
        f"{v['nannyml'].get('nannyml')} (pandas {v['nannyml'].get('pandas')}, scikit-learn "
        f"{v['nannyml'].get('scikit-learn')}) and Evidently {v['evidently'].get('evidently')} "
        f"(pandas {v['evidently'].get('pandas')}) each in its own virtualenv "
        "(`~/.cache/kubeloop/bench/`). The figures are counts and errors, not timings.",
        "",
        "Kubeloop runs its own code paths: the reference profile with the model's "
        "calibration (`build_profile` + `with_model`, as `kubeloop profile --model "
        "--labels`), the model server's collectors (`LiveStats`, `Quality`: inputs on the "
        "profile's bins, the calibrated expected correctness of each answer, the feedback "
        "route's checks and counts) rendered as `/metrics` text, read by the operator's "
        "parsers (`parse_metrics`, `parse_quality`) and judged by `judge`, the "
        "DriftMonitor's check, once per window; \"acts\" is its `wants_retrain`. The model "
        "is a scikit-learn pipeline (HistGradientBoostingClassifier) trained on 50,000 "
        "rows; the reference (profile, calibration, NannyML's fit, Evidently's reference) "
        f"is 50,000 other rows; windows are {WINDOW:,} rows from the rest. DriftMonitors "
        f"(besides `modelDeployment`, `minSamples: 1000`, a retrain with no cooldown): "
        f"performance = `{{metric: accuracy, source: both, maxDrop: {MAX_DROP}, "
        f"minLabels: {MIN_LABELS}}}` (the baseline is the reference's accuracy; realised "
        "accuracy from the labels when a window has enough, else the estimate); "
        f"estimated only = `{{source: estimated, maxDrop: {MAX_DROP}}}`; input-only = no "
        "`performance`, `method: psi` (the default; threshold 0.2) or `method: ks` "
        "(p < 0.05, Benjamini-Hochberg across features, the default correction). "
        f"Labels are posted for {LABEL_SHARE:.0%} of the answers, drawn at random.",
        "",
        "### Estimated accuracy without labels",
        "",
        "Covariate shift made by resampling rows with weights exp(s z) of one feature "
        "(z standardised; P(label | inputs) unchanged), s from -2 to +2; the realised "
        "accuracy of each window (all its labels) against each estimate. Kubeloop "
        "calibrates the top class probability (isotonic, on the reference); NannyML CBPE "
        "(`CBPE(metrics=['accuracy'], chunk_size=10000)`) fitted on the same reference "
        "rows, estimating the same windows.",
        "",
        "| data | windows | shifted on | realised accuracy (min to max) | Kubeloop MAE | "
        "NannyML CBPE MAE | goal (Kubeloop <= NannyML and <= 0.02) |",
        "| --- | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for e in out["estimation"]:
        features = sorted({s.split()[0] for s in e["shifts"]})
        met = e["kubeloop mae"] <= e["nannyml mae"] and e["kubeloop mae"] <= GOALS["mae"]
        lines.append(
            f"| {e['data']} | {e['windows']} | {', '.join(features)} | "
            f"{e['realised range'][0]:.3f} to {e['realised range'][1]:.3f} | "
            f"{e['kubeloop mae']:.4f} | {e['nannyml mae']:.4f} | {verdict(met)} |")
    fa = out["false alarms"]
    half = fa["windows"] // 2
    lines += [
        "",
        "### False alarms: windows that would retrain, quality unchanged",
        "",
        f"{fa['windows']} windows of {WINDOW:,} rows drawn as the reference ({fa['data']}); "
        f"in the last {fa['windows'] - half} the feature `unused` (which the model's "
        "pipeline drops) is shifted by 0.1 to 1.0 of its standard deviation. Evidently: "
        f"`Report([DataDriftPreset()])` with its defaults ({fa['evidently method']}); its "
        "dataset drift is what would retrain; the last column counts windows where any of "
        "its columns drifted.",
        "",
        "| contender | windows that would retrain | no shift | unused feature shifted | "
        "goal (<= 1%) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name in fa["acted"]:
        n = sum(fa["acted"][name])
        goal = verdict(fa["rate"][name] <= GOALS["false_alarm_rate"]) \
            if name == "Kubeloop, performance" else "-"
        lines.append(
            f"| {name} | {n} of {fa['windows']} ({_pct(fa['rate'][name])}) | "
            f"{_pct(fa['rate, windows without shift'][name])} | "
            f"{_pct(fa['rate, windows with the unused feature shifted'][name])} | {goal} |")
    any_col = fa["evidently any column drifted"]
    lines += [
        "",
        f"Evidently flagged at least one column in {sum(any_col)} of {fa['windows']} windows "
        f"({sum(any_col[:half])} without the shift, {sum(any_col[half:])} with it). "
        f"Kubeloop with performance reported InputDrift in "
        f"{sum(fa['input drift reported'])} windows and acted on none of them unless its "
        f"accuracy dropped; realised accuracy per window "
        f"{min(fa['realised']):.3f} to {max(fa['realised']):.3f}, the judged figure "
        f"(realised over about {int(WINDOW * LABEL_SHARE)} labels) "
        f"{min(j for j in fa['judged'] if j is not None):.3f} to "
        f"{max(j for j in fa['judged'] if j is not None):.3f}, against the baseline "
        f"{fa['reference accuracy']:.3f} - {MAX_DROP}.",
    ]
    d = out["detection"]
    lines += [
        "",
        "### Detection delay: concept drift, inputs unchanged",
        "",
        f"{d['windows']} windows of {WINDOW:,} rows drawn as the reference ({d['data']}); "
        f"from window {d['arrival'] + 1} on, the label of every row with {d['region']} "
        f"({_pct(d['region share'])} of rows) moves to the next class, the inputs do not. "
        "Delay = windows judged from the drift's arrival until the loop acts, the arrival "
        "window counting as 1 (acting at the end of the first drifted window is 1); "
        "\"never\" = not within the run. One row per seed (each its own draw of rows and "
        "of the labelled 10%).",
        "",
        "| seed | realised accuracy before / after | " + " | ".join(
            f"{name}: delay (acted before the drift)" for name in d["runs"][0]["acted"])
        + " |",
        "| ---: | --- | " + " | ".join("---" for _ in d["runs"][0]["acted"]) + " |",
    ]
    for k, run in enumerate(d["runs"]):
        before = np.mean(run["realised"][:d["arrival"]])
        after = np.mean(run["realised"][d["arrival"]:])
        cells = [f"{'never' if run['delay'][n] is None else run['delay'][n]} "
                 f"({run['acted before the drift'][n]})" for n in run["acted"]]
        lines.append(f"| {k} | {before:.3f} / {after:.3f} | " + " | ".join(cells) + " |")
    delays = [run["delay"]["Kubeloop, performance"] for run in d["runs"]]
    within = all(x is not None and x <= GOALS["delay_windows"] for x in delays)
    silent = all(run["delay"][n] is None and run["acted before the drift"][n] == 0
                 for run in d["runs"] for n in run["acted"] if "input-only" in n)
    worst = max((x for x in delays if x is not None), default=None)
    lines += [
        "",
        "### Goals",
        "",
    ]
    for e in out["estimation"]:
        met = e["kubeloop mae"] <= e["nannyml mae"] and e["kubeloop mae"] <= GOALS["mae"]
        lines.append(f"- Estimation, {e['data']}: Kubeloop MAE {e['kubeloop mae']:.4f} vs "
                     f"NannyML {e['nannyml mae']:.4f}, goal <= NannyML's and <= 0.02: "
                     f"{verdict(met)}.")
    rate = fa["rate"]["Kubeloop, performance"]
    lines += [
        f"- False alarms, Kubeloop with performance: {_pct(rate)}, goal <= 1%: "
        f"{verdict(rate <= GOALS['false_alarm_rate'])} (input-only: psi "
        f"{_pct(fa['rate']['Kubeloop input-only, psi'])}, ks "
        f"{_pct(fa['rate']['Kubeloop input-only, ks'])}; Evidently's dataset drift "
        f"{_pct(fa['rate']['Evidently DataDriftPreset'])}).",
        f"- Detection delay, Kubeloop with performance: {', '.join(map(str, delays))} "
        f"window(s) over {d['seeds']} seeds (worst {worst}), goal within 2: "
        f"{verdict(within)}; input-only never firing: {verdict(silent)}.",
        "- The cost on the server (requests/s with feedback counting and estimation on vs "
        "off): not measured here; `make bench-serving` has no switch for it (its server "
        "always runs with monitoring on).",
    ]
    return "\n".join(lines)


def render(out: dict[str, Any]) -> None:
    text = README.read_text()
    block = f"{BEGIN}\n{table(out)}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = f"{head}{block}{rest.split(END, 1)[1]}"
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    README.write_text(text)
    print(table(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nannyml-python")
    parser.add_argument("--evidently-python")
    parser.add_argument("--estimation-windows", type=int, default=20,
                        help="per data set, split between its shifted features")
    parser.add_argument("--false-alarm-windows", type=int, default=200)
    parser.add_argument("--delay-windows", type=int, default=12)
    parser.add_argument("--delay-arrival", type=int, default=4,
                        help="0-based index of the first drifted window")
    parser.add_argument("--delay-seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true",
                        help="only write the README section again from the results file")
    args = parser.parse_args()
    if args.render_only:
        render(json.loads(args.results.read_text()))
        return
    if not (args.nannyml_python and args.evidently_python):
        parser.error("--nannyml-python and --evidently-python are needed (quality_bench.sh)")

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    start = time.monotonic()
    out: dict[str, Any] = {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "seed": args.seed,
        "settings": {"window": WINDOW, "label share": LABEL_SHARE, "max drop": MAX_DROP,
                     "min labels": MIN_LABELS, "monitors": MONITORS},
    }
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as name:
        tmp = Path(name)
        out["versions"] = {"kubeloop": product_versions(),
                           "nannyml": versions_of(args.nannyml_python, tmp),
                           "evidently": versions_of(args.evidently_python, tmp)}
        census_path = tmp / "census.npz"
        subprocess.run([args.nannyml_python, str(CONTENDERS), "census", "-", str(census_path)],
                       check=True)
        syn = synthetic(args.seed)
        model, profile = prepared(syn, args.seed)
        real = census(census_path, args.seed)
        out["estimation"] = [
            estimation(syn, model, profile, args.estimation_windows, args.nannyml_python, tmp,
                       args.seed),
            estimation(real, *prepared(real, args.seed), args.estimation_windows,
                       args.nannyml_python, tmp, args.seed)]
        log("estimation done")
        out["false alarms"] = false_alarms(syn, model, profile, args.false_alarm_windows,
                                           args.evidently_python, tmp, args.seed)
        log("false alarms done")
        out["detection"] = detection(syn, model, profile, args.delay_windows,
                                     args.delay_arrival, args.delay_seeds,
                                     args.evidently_python, tmp, args.seed)
        log("detection done")
    out["machine"]["load after"] = [round(v, 2) for v in os.getloadavg()]
    out["seconds"] = round(time.monotonic() - start, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(out, indent=1) + "\n")
    render(out)


if __name__ == "__main__":
    main()
