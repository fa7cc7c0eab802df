"""The drift benchmark, end to end on tiny data, and the README section it renders: every
number in it comes from the results file, and it lands between its markers.

Evidently lives in its own virtualenv and takes seconds to import per worker, so the run
here leaves it out; Evidently-shaped runs are then derived from the SciPy and Kubeloop
runs to exercise the rendering of the full results. KUBELOOP_TEST_EVIDENTLY=1 runs the
real Evidently too when its virtualenv exists (slower).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
from bisect import bisect_left
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.kubetest import ROOT

BENCH = ROOT / "bench" / "drift_bench.py"
ROWS = 2000
EVIDENTLY_PYTHON = (
    Path(os.environ.get("KUBELOOP_EVIDENTLY_VENV", Path.home() / ".cache/kubeloop/venv-evidently"))
    / "bin"
    / "python"
)
# A number not glued to a word (f08, float64) or to a preceding dot (3.11.7's ".7").
NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)(%|x)?(?!\w)")


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("drift_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def run_bench(*args: str | Path | int, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
    )


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One real run on tiny data: (results file, results)."""
    pytest.importorskip("scipy", reason="the SciPy contender needs scipy")
    out = tmp_path_factory.mktemp("drift-bench")
    output = out / "results.json"
    extra: list[str] = []
    if os.environ.get("KUBELOOP_TEST_EVIDENTLY") == "1" and EVIDENTLY_PYTHON.exists():
        extra = ["--evidently-python", str(EVIDENTLY_PYTHON)]
    run_bench(
        "--rows", ROWS, "--data", out / "data", "--output", output, "--no-readme", *extra
    )  # fmt: skip
    return output, json.loads(output.read_text())


def with_evidently(results: dict[str, Any]) -> dict[str, Any]:
    """The results plus Evidently-shaped runs (unless Evidently really ran): KS p-values
    and Wasserstein distances as SciPy's, PSI as Kubeloop's scaled, times 100x SciPy's."""
    full = copy.deepcopy(results)
    runs = bench._index(full)
    if ("evidently", "ks") in runs:
        return full
    full["versions"]["evidently"] = dict(full["versions"]["kubeloop"], evidently="0.7.23")
    full["versions"]["evidently"].pop("kubeloop_constants", None)
    for method, source in (
        ("ks", runs[("scipy", "ks")]),
        ("psi", runs[("kubeloop-report", "psi")]),
        ("wasserstein", runs[("scipy", "wasserstein")]),
    ):
        run = copy.deepcopy(source)
        run.update(contender="evidently", method=method)
        run["seconds_all"] = [100 * s for s in run["seconds_all"]]
        run["seconds"] = statistics.median(run["seconds_all"])
        run["peak_rss_mb"] += 300
        if method == "psi":
            run["scores"] = [0.9 * s for s in run["scores"]]
            run["drifted"] = [s >= full["thresholds"]["psi"] for s in run["scores"]]
            run["bins_per_feature"] = [13 if i % 5 == 4 else 15 for i in range(len(run["scores"]))]
        full["runs"].append(run)
    return full


# --- what the results may yield -----------------------------------------------------


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in leaves(v)]
    return [value]


def token_value(number: str, suffix: str | None) -> float:
    value = float(number.replace(",", ""))
    return value / 100 if suffix == "%" else value


def candidates(results: dict[str, Any]) -> list[float]:
    """Every value the renderer may quote: the results' numbers and what it computes
    from them (medians, per-feature times, ratios, sums, differences, counts)."""
    found: set[float] = set()
    for leaf in leaves(results):
        if isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, int | float):
            found.add(float(leaf))
        elif isinstance(leaf, str):
            found.update(token_value(n, s) for n, s in NUMBER.findall(leaf))
    found.update(range(results["features"] + 1))
    rows = results["rows"]
    en = round(rows * rows / (rows + rows))
    found.update({2 * rows, en, results["ks_p_bound"] / en, results["data"]["bytes"] / 2**20})
    runs = results["runs"]
    medians = [bench.median_s(r) for r in runs]
    for run in runs:
        found.update(
            {bench.median_s(run), bench.per_feature_ms(run), bench.over_data_mb(run)}
            | {bench.cpu_per_wall(run) or 0.0}
        )
        if "drifted" in run:
            found.add(bench.drifted_count(run))
    for a, b in itertools.product(medians, repeat=2):
        found.update({a / b, a + b})
    for a, b, c in itertools.product(medians, repeat=3):
        found.add(a / (b + c))
    for a, b in itertools.product(runs, repeat=2):
        if bench.over_data_mb(b) > 0:
            found.add(bench.over_data_mb(a) / bench.over_data_mb(b))
        for key in ("scores", "p_values"):
            for x, y in zip(a.get(key, []), b.get(key, []), strict=False):
                if x is not None and y is not None:
                    found.add(abs(x - y))
                    if y:
                        found.add(abs(x - y) / abs(y))
    return sorted(x for x in found if np.isfinite(x))


def tolerance(number: str, suffix: str | None) -> float:
    """Half a unit in the last digit shown."""
    text = number.replace(",", "")
    if "e" in text:
        mantissa, exponent = text.split("e")
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        step = 10.0 ** (int(exponent) - digits)
    else:
        step = 10.0 ** -(len(text.split(".")[1]) if "." in text else 0)
    return (step / 100 if suffix == "%" else step) * 0.5 * (1 + 1e-9)


def unexplained(section: str, results: dict[str, Any]) -> list[str]:
    values = candidates(results)
    missing = []
    for match in NUMBER.finditer(section):
        number, suffix = match.group(1), match.group(2)
        value, slack = token_value(number, suffix), tolerance(number, suffix)
        at = bisect_left(values, value - slack)
        if at == len(values) or values[at] > value + slack:
            missing.append(section[max(0, match.start() - 40) : match.end() + 10])
    return missing


def table(section: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after ``heading``."""
    rest = section[section.index(heading) :]
    rows = []
    for line in rest.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


# --- the tests ------------------------------------------------------------------------


def test_the_run_honours_rows_and_times_every_contender_alike(
    real: tuple[Path, dict[str, Any]],
) -> None:
    output, results = real
    assert results["rows"] == ROWS
    assert np.load(output.parent / "data" / "reference.npy", mmap_mode="r").shape == (50, ROWS)
    keys = {(r["contender"], r["method"]) for r in results["runs"]}
    assert {("kubeloop-exact", "ks"), ("kubeloop-exact", "wasserstein")} <= keys
    assert {("scipy", "ks"), ("scipy", "wasserstein"), ("kubeloop-profile", "-")} <= keys
    for run in results["runs"]:
        assert len(run["seconds_all"]) == results["repeats"] == 3, run["contender"]
        assert run["seconds"] == statistics.median(run["seconds_all"])
        assert len(run["features"]) == results["features"] == 50
    machine = results["machine"]
    assert machine["cpus"] >= 1 and machine["cpu_model"]
    assert len(machine["load_before"]) == len(machine["load_after"]) == 3
    assert results["versions"]["kubeloop"]["numpy"] == np.__version__
    assert results["versions"]["kubeloop"]["scipy"]
    assert results["generated"].startswith("20")


def test_exact_statistics_equal_scipys(real: tuple[Path, dict[str, Any]]) -> None:
    runs = bench._index(real[1])
    assert runs[("kubeloop-exact", "ks")]["scores"] == pytest.approx(
        runs[("scipy", "ks")]["scores"], abs=1e-12
    )
    # The same normalisation: distance / max(population std of the reference, 1e-3).
    assert runs[("kubeloop-exact", "wasserstein")]["scores"] == pytest.approx(
        runs[("scipy", "wasserstein")]["scores"], rel=1e-9
    )


@pytest.mark.parametrize("evidently", [False, True], ids=["as-run", "with-evidently"])
def test_every_number_comes_from_the_results(
    real: tuple[Path, dict[str, Any]], evidently: bool
) -> None:
    results = with_evidently(real[1]) if evidently else real[1]
    section = bench.render(results)
    assert unexplained(section, results) == []
    assert "scaled" not in section.lower()
    if not evidently:
        assert "not measured" in section


def test_a_hand_written_number_is_caught(real: tuple[Path, dict[str, Any]]) -> None:
    section = bench.render(real[1]) + "\nEvidently took 1234.5 s.\n"
    assert len(unexplained(section, real[1])) == 1


def test_tables_show_the_results(real: tuple[Path, dict[str, Any]]) -> None:
    results = with_evidently(real[1])
    runs = bench._index(results)
    section = bench.render(results)
    headline = table(section, "### Raw samples")
    labels = {"Kubeloop exact": "kubeloop-exact", "SciPy": "scipy", "Evidently": "evidently"}
    assert [(r[0], r[1]) for r in headline] == [
        (m, label) for m in ("ks", "wasserstein") for label in labels
    ]
    for method, label, seconds, _, per_feature, ratio, *_, over, _, drifted in headline:
        run, base = runs[(labels[label], method)], runs[("kubeloop-exact", method)]
        median = statistics.median(run["seconds_all"])
        assert float(seconds) == pytest.approx(median, abs=5e-4)
        assert float(per_feature) == pytest.approx(1000 * median / 50, abs=0.05)
        expected = median / statistics.median(base["seconds_all"])
        assert float(ratio.rstrip("x").replace(",", "")) == pytest.approx(expected, rel=0.01)
        assert float(over) == pytest.approx(run["peak_rss_mb"] - run["data_rss_mb"], abs=0.5)
        assert int(drifted) == sum(run["drifted"])
    profile = table(section, "### Profile-based check")
    assert [r[0] for r in profile] == [
        "profile build (once per reference)",
        "report, ks (binned)",
        "report, psi",
        "report, wasserstein (binned)",
    ]
    psi = table(section, "### PSI: different binning")
    assert [r[0] for r in psi] == ["Kubeloop report, psi", "Evidently psi"]
    assert "different binning" in section


def test_timings_follow_the_results(real: tuple[Path, dict[str, Any]]) -> None:
    """Slower figures in the results give slower figures in the text, and verdicts
    follow theirs: nothing is fixed in the renderer."""
    results = with_evidently(real[1])
    slower = copy.deepcopy(results)
    for run in slower["runs"]:
        if run["contender"] == "evidently":
            run["seconds_all"] = [s / 1000 for s in run["seconds_all"]]
    before, after = bench.render(results), bench.render(slower)
    assert before != after
    assert unexplained(after, slower) == []
    targets = [line for line in after.splitlines() if "faster than Evidently" in line]
    assert len(targets) == 2 and all("not met" in line for line in targets)


def test_the_verdict_table_lists_the_injected_features(
    real: tuple[Path, dict[str, Any]],
) -> None:
    results = with_evidently(real[1])
    section = bench.render(results)
    rows = {r[0]: r for r in table(section, "### Verdicts")}
    injected = {n: d for n, d in results["drift_injected"].items() if d != "none"}
    assert len(injected) == 8 and set(injected) <= set(rows)
    columns = 10
    names = bench.feature_names(results["features"])
    runs = bench._index(results)
    ks_exact = runs[("kubeloop-exact", "ks")]
    for name, row in rows.items():
        assert row[1] == results["drift_injected"][name]
        assert len(row) == 2 + columns
        # The fourth column is Kubeloop's exact KS.
        assert row[3] == ("D" if ks_exact["drifted"][names.index(name)] else ".")
    quiet = results["features"] - len(rows)
    assert f"The other {quiet} features (no drift injected) got no drift" in section


def test_render_only_writes_between_the_markers(
    real: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    output, results = real
    readme = tmp_path / "README.md"
    original = (ROOT / "bench" / "README.md").read_text()
    readme.write_text(original)
    done = run_bench("--render-only", "--output", output, "--readme", readme, timeout=30)
    section = bench.render(results)
    assert section in done.stdout
    text = readme.read_text()
    start = text.index(bench.START_MARKER) + len(bench.START_MARKER)
    end = text.index(bench.END_MARKER)
    assert text[start:end] == "\n" + section
    assert text[: start - len(bench.START_MARKER)] == original[: original.index(bench.START_MARKER)]
    assert text[end:] == original[original.index(bench.END_MARKER) :]
    assert (ROOT / "bench" / "README.md").read_text() == original
