"""README.md's real-node figures are rendered from tests/results/e2e-real.json alone
(hack/e2e_real_figures.py): every figure comes from the file, one the file lacks is
shown as missing, one from a test that did not pass says so, and the README's block is
what the committed file renders to."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kubetest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import e2e_real_figures as figures_mod

T = "e2e/real/test_"


def results() -> dict[str, Any]:
    def fig(value: Any, test: str) -> dict[str, Any]:
        return {"value": value, "test": T + test}

    tests = {T + t: "passed" for t in (
        "train_and_serve.py::test_a", "closed_loop.py::test_b", "safe_retraining.py::test_c",
        "autoscaling.py::test_d", "progressive.py::test_e", "progressive.py::test_f")}
    return {
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "dirty": False,
        "date": "2026-12-07T08:00:00Z",
        "duration_s": 587.4,
        "tests": tests,
        "figures": {
            "training_job_seconds": fig(7.61, "train_and_serve.py::test_a"),
            "model_deployment_ready_seconds": fig(8.92, "train_and_serve.py::test_a"),
            "drift_detected_seconds": fig(3.04, "closed_loop.py::test_b"),
            "drift_onset_to_old_pods_gone_seconds": fig(31.96, "closed_loop.py::test_b"),
            "gate_reject_seconds": fig(17.1, "safe_retraining.py::test_c"),
            "gate_promote_seconds": fig(18.2, "safe_retraining.py::test_c"),
            "gate_scores": fig({"rejected": [0.3333, 0.0133], "promoted": [0.3333, 0.9933]},
                               "safe_retraining.py::test_c"),
            "gate_probe": fig({"rows": [[1.0] * 4] * 3, "requests": 10,
                               "champion": [1, 2, 2], "rejected": [1, 2, 0],
                               "promoted": [0, 1, 2]}, "safe_retraining.py::test_c"),
            "hpa_scale_up_seconds": fig(15.04, "autoscaling.py::test_d"),
            "hpa_scale_down_seconds": fig(35.1, "autoscaling.py::test_d"),
            "canary_rollback_message": fig(
                "failed step 1 of 2 (50% of traffic): error rate 16.959% > 1% over 171 "
                "requests", "progressive.py::test_e"),
            "canary_probe": fig({"rows": [[4.9, 2.5, 4.5, 1.7]], "requests": 20, "v1": [2],
                                 "v2": [1]}, "progressive.py::test_f"),
        },
    }


def flat(section: str) -> str:
    return " ".join(section.split())


def test_every_figure_comes_from_the_file() -> None:
    text = flat(figures_mod.render(results()))
    for expected in ("commit `0123456789ab`", "2026-12-07 08:00:00 UTC", "6 of 6 tests passed",
                     "in 9 min 47 s", "Succeeded 7.6 s", "Ready 8.9 s", "detected 3.0 s",
                     "rollout: 32.0 s", "accuracy 0.013 against 0.333", "(0.993 against 0.333)",
                     "17.1 s after", "in 18.2 s", "answers [1, 2, 2] after the rejection",
                     "model's: [1, 2, 0]", "model's [0, 1, 2] after the rollout",
                     "scale-up under load 15.0 s", "after the load 35.1 s",
                     "`failed step 1 of 2 (50% of traffic): error rate 16.959% > 1% over 171 "
                     "requests`", "v1's answers [2] after the rollback",
                     "v2's [1] after the promotion", "20 requests", "10 requests"):
        assert expected in text, expected
    assert "missing" not in text and "uncommitted" not in text and "which" not in text


@pytest.mark.parametrize("name", figures_mod.FIGURES)
def test_a_figure_missing_from_the_file_is_shown_missing(name: str) -> None:
    data = results()
    del data["figures"][name]
    text = flat(figures_mod.render(data))
    assert f"**missing** (no `{name}` in the results file)" in text
    # The others are still there.
    assert all(f"no `{other}`" not in text for other in figures_mod.FIGURES if other != name)


def test_an_empty_file_shows_every_figure_missing() -> None:
    text = flat(figures_mod.render({}))
    for name in figures_mod.FIGURES:
        assert f"no `{name}` in" in text
    assert "an unknown commit" in text and "0 of 0 tests passed" in text


def test_figures_of_a_test_that_failed_or_never_ran_say_so() -> None:
    data = results()
    data["tests"][T + "autoscaling.py::test_d"] = "failed"
    del data["tests"][T + "progressive.py::test_f"]
    data["dirty"] = True
    text = flat(figures_mod.render(data))
    assert "15.0 s (from `e2e/real/test_autoscaling.py::test_d`, which failed)" in text
    assert "after the promotion (from `e2e/real/test_progressive.py::test_f`, which did not " \
        "run)" in text
    assert "4 of 5 tests passed (1 failed)" in text
    assert "with uncommitted changes" in text


def test_an_unreadable_figure_is_said_so() -> None:
    data = results()
    data["figures"]["gate_scores"]["value"] = {"rejected": []}
    text = flat(figures_mod.render(data))
    assert "**unreadable** (`gate_scores`" in text


def test_only_the_block_is_rewritten(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n\n{figures_mod.START}\nold text\n{figures_mod.END}\n\nafter\n")
    section = figures_mod.render(results())
    figures_mod.write_readme(readme, section)
    text = readme.read_text()
    assert text.startswith("before\n\n") and text.endswith("\n\nafter\n")
    assert "old text" not in text and section in text
    assert all(len(line) <= 88 or " " not in line for line in section.splitlines())
    data = copy.deepcopy(results())
    data["figures"]["hpa_scale_up_seconds"]["value"] = 99.0
    figures_mod.write_readme(readme, figures_mod.render(data))
    assert "scale-up under load 99.0 s" in flat(readme.read_text())
    assert readme.read_text().count(figures_mod.START) == 1


def test_the_readme_block_is_the_committed_results_file_rendered() -> None:
    committed = json.loads(figures_mod.RESULTS.read_text())
    readme = figures_mod.README.read_text()
    assert figures_mod.render(committed) in readme, (
        "README.md's real-node figures differ from tests/results/e2e-real.json: run "
        "`python3 hack/e2e_real_figures.py`")
