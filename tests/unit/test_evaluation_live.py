"""`kubeloop evaluate --live-rows`: the gate scores both models on the labelled rows
model servers keep, beside or instead of the holdout; a challenger that wins on the
holdout but loses on live labels is refused in beside mode. The rows come from a real
data plane on loopback, fed through its feedback route."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sklearn.datasets import load_iris

from kubeloop.evaluation import EvaluationError, live
from kubeloop.evaluation.command import evaluate, termination_message
from kubeloop.evaluation.gate import decide
from kubeloop.modeldir import load_model
from kubeloop.serving.dataplane import DataPlane
from tests.unit.test_evaluation import trained  # noqa: F401
from tests.unit.test_serving import TIMEOUT, running

IRIS = load_iris()
NAMES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


@pytest.fixture(scope="module")
def shifted_holdout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Iris shifted by two standard deviations: where the `shifted` model is right."""
    path = tmp_path_factory.mktemp("holdout") / "shifted.csv"
    rows = IRIS.data + 2.0 * IRIS.data.std(axis=0)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*NAMES, "species"])
        for x, y in zip(rows.tolist(), IRIS.target.tolist(), strict=True):
            out.writerow([*x, IRIS.target_names[y]])
    return path


@pytest.fixture(scope="module")
def live_url(trained: dict[str, Path]) -> Iterator[str]:  # noqa: F811
    """A model server whose feedback carried plain iris rows and their true labels."""
    model = load_model(trained["good"])
    plane = DataPlane(model.metadata, name="iris", max_batch_size=1)
    plane.set_model(model)
    with running(plane) as url:
        records = [
            {"label": int(y), "prediction": int(y), "inputs": x}
            for x, y in zip(IRIS.data.tolist(), IRIS.target.tolist(), strict=True)
        ]
        answer = requests.post(
            f"{url}/v2/models/iris/feedback",
            json={"model_version": "v1", "records": records},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        yield f"{url}/v2/models/iris/feedback/rows"


def gate(trained: dict[str, Path], holdout: Path | None, **live_args: object) -> dict:  # noqa: F811
    return evaluate(
        champion=str(trained["good"]),
        challenger=str(trained["shifted"]),
        data=str(holdout) if holdout else None,
        metric="accuracy",
        label_column="species",
        min_improvement=0.0,
        floor=None,
        **live_args,  # type: ignore[arg-type]
    )


def test_a_challenger_that_wins_the_holdout_but_loses_live_is_refused_beside(
    trained: dict[str, Path], shifted_holdout: Path, live_url: str  # noqa: F811
) -> None:
    alone = gate(trained, shifted_holdout)
    assert alone["passed"] is True and alone["challenger"] > alone["champion"]

    result = gate(trained, shifted_holdout, live_urls=[live_url], live_min_rows=100)
    assert result["passed"] is False and result["verdict"] == "Rejected"
    assert result["reason"] == "NotBetter"
    # The holdout's scores first, the live rows' beside them.
    assert result["challenger"] == alone["challenger"] and result["rows"] == 150
    on_live = result["live"]
    assert on_live["rows"] == 150 and on_live["mode"] == "beside"
    assert on_live["champion"] > 0.9 > 0.5 > on_live["challenger"]
    assert on_live["passed"] is False
    assert "live labels (150 rows)" in result["message"]
    assert '"live":{"rows":150' in termination_message(result)


def test_too_few_live_rows_beside_judge_on_the_holdout_alone_and_say_so(
    trained: dict[str, Path], shifted_holdout: Path, live_url: str  # noqa: F811
) -> None:
    result = gate(trained, shifted_holdout, live_urls=[live_url], live_min_rows=151)
    assert result["passed"] is True and result["reason"] == "Improved"
    assert result["live"] == {"rows": 150, "minRows": 151, "mode": "beside"}
    assert "fewer than minRows 151, judged on the holdout only" in result["message"]


def test_instead_judges_on_live_rows_alone_and_needs_enough(
    trained: dict[str, Path], live_url: str  # noqa: F811
) -> None:
    result = gate(trained, None, live_urls=[live_url], live_mode="instead")
    assert result["passed"] is False and result["rows"] == 150
    assert result["champion"] == result["live"]["champion"] > 0.9
    with pytest.raises(EvaluationError, match="fewer than minRows 500"):
        gate(trained, None, live_urls=[live_url], live_mode="instead", live_min_rows=500)
    with pytest.raises(EvaluationError, match="no data"):
        gate(trained, None, live_urls=[live_url])


def test_an_unreachable_pod_is_named_and_the_others_count(
    trained: dict[str, Path], shifted_holdout: Path, live_url: str  # noqa: F811
) -> None:
    gone = "http://127.0.0.1:9/v2/models/iris/feedback/rows"
    result = gate(trained, shifted_holdout, live_urls=[gone, live_url, live_url])
    assert result["live"]["rows"] == 300
    assert "127.0.0.1:9" in result["live"]["problems"]
    nothing = gate(trained, shifted_holdout, live_urls=[gone])
    assert nothing["passed"] is True and nothing["live"]["rows"] == 0


def test_how_the_two_verdicts_combine() -> None:
    good, bad = decide("accuracy", 0.5, 0.9), decide("accuracy", 0.9, 0.5)
    assert live.combine("beside", good, good, 10, 5)[:2] == (True, "Improved")
    assert live.combine("beside", good, bad, 10, 5)[:2] == (False, "NotBetter")
    assert live.combine("beside", bad, good, 10, 5)[:2] == (False, "NotBetter")
    assert live.combine("beside", good, None, 3, 5)[:2] == (True, "Improved")
    assert live.combine("instead", None, bad, 10, 5)[:2] == (False, "NotBetter")
    with pytest.raises(EvaluationError):
        live.combine("instead", None, None, 3, 5)
