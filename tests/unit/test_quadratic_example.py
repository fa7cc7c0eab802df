"""examples/train/quadratic.py, run as a TrainingJob runs it: its loss is the known
function of its hyperparameters, reported at every step and as the final metric."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubeloop.progress import parse_final

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train" / "quadratic.py"
sys.path.insert(0, str(SCRIPT.parent))
from quadratic import OPTIMUM, final_loss, loss_at  # noqa: E402  (an example script)


def run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HP_", "KUBELOOP_"))}
    log = tmp_path / "termination-log"
    environ.update(KUBELOOP_PROGRESS_PORT="0", KUBELOOP_TERMINATION_LOG=str(log), **env)
    environ["PYTHONPATH"] = str(REPO / "operator")
    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=environ,
                          capture_output=True, text=True, timeout=60)
    return done, log


def test_the_optimum_is_known() -> None:
    assert final_loss(**OPTIMUM) == 0.0  # type: ignore[arg-type]
    assert final_loss(0.1, 5, "adam") == pytest.approx(1.0)
    assert final_loss(0.01, 7, "sgd") == pytest.approx(0.9)


def test_every_step_ranks_runs_as_their_ends_do() -> None:
    """What early stopping needs: behind at a step is behind at the end."""
    settings = [(0.01, 5, "adam"), (0.003, 4, "rmsprop"), (0.1, 2, "sgd")]
    ends = sorted(range(3), key=lambda i: final_loss(*settings[i]))  # type: ignore[arg-type]
    for step in (1, 5, 30):
        at = sorted(range(3), key=lambda i: loss_at(step, *settings[i]))  # type: ignore[arg-type]
        assert at == ends


def test_hyperparameters_as_a_training_job_passes_them(tmp_path: Path) -> None:
    """Flags (`--name=value`) and HP_ variables; the final loss in the termination
    message and in result.json at the output."""
    done, log = run(tmp_path, "--lr=0.001", "--steps=4", HP_DEPTH="6", HP_OPTIMIZER="rmsprop",
                    KUBELOOP_OUTPUT_URI=f"file://{tmp_path}/out")
    assert done.returncode == 0, done.stderr
    final = parse_final(log.read_text())
    assert final is not None and (final.step, final.total_steps) == (4, 4)
    expected = loss_at(4, 0.001, 6, "rmsprop")
    assert final.metrics["loss"] == pytest.approx(expected)
    assert (tmp_path / "out" / "result.json").is_file()
    refused, _ = run(tmp_path, "--lr=0")
    assert refused.returncode != 0 and "--lr must be greater than 0" in refused.stderr
