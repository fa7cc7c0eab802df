"""The container image's install steps work: the same script the Dockerfile runs,
in a fresh virtual environment (this machine has no container engine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.kubetest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    stages = [line for line in DOCKERFILE.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and all("python:3.11-slim" in s for s in stages)
    final = DOCKERFILE.split("\nFROM ", 2)[2]
    assert "USER 10001:10001" in final
    assert "pip install" not in final and "apt-get" not in final
    assert 'ENTRYPOINT ["kubeloop"]' in final
    assert "RUN sh hack/image-install.sh /opt/kubeloop /src" in DOCKERFILE


def test_install_steps_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    prefix = tmp_path / "opt-kubeloop"
    result = subprocess.run(
        ["sh", str(ROOT / "hack" / "image-install.sh"), str(prefix), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kubeloop 0.1.0" in result.stdout
    kubeloop = str(prefix / "bin" / "kubeloop")
    crds = subprocess.run([kubeloop, "crds"], capture_output=True, text=True, check=True)
    assert "kind: CustomResourceDefinition" in crds.stdout
    for command in ("run", "serve", "fetch-model", "profile", "drift"):
        help_text = subprocess.run(
            [kubeloop, command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "usage: kubeloop" in help_text
    # The model server's dependencies are in the image, and the example script runs.
    model = tmp_path / "model"
    subprocess.run(
        [
            str(prefix / "bin" / "python"),
            str(prefix / "examples" / "train" / "train.py"),
            "--output",
            str(model),
        ],
        check=True,
        capture_output=True,
    )
    assert (model / "manifest.json").exists()
    # docs/safe-retraining.md writes the holdout data with the image's make_data.py.
    holdout = tmp_path / "data" / "holdout.csv"
    subprocess.run(
        [
            str(prefix / "bin" / "python"),
            str(prefix / "examples" / "train" / "make_data.py"),
            str(holdout),
        ],
        check=True,
        capture_output=True,
    )
    assert holdout.read_text().splitlines()[0].endswith(",species")
