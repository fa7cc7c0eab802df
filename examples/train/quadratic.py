#!/usr/bin/env python3
"""A training run whose loss is a known function of its hyperparameters.

For Experiments' tests and benchmark: the optimum is known, so a search can be judged
by how close it gets, and each run reports its loss at every step the way a real run
does (``kubeloop.train.report``), so early stopping has something to compare.

    lr         float, best at 0.01 on a log scale
    depth      int, best at 5
    optimizer  categorical: adam (best), sgd (+0.5), rmsprop (+0.2)

    final loss  = (log10(lr) + 2)^2 + 0.1 * (depth - 5)^2 + penalty(optimizer)
    loss(step)  = final + 2 / sqrt(step)   (the same curve for every setting, so a
                  run that is behind at one step is behind at every step)

Hyperparameters arrive as a TrainingJob passes them (docs/hyperparameters.md):
``--lr=0.01`` or ``HP_LR=0.01``; flags win. ``--steps`` (default 30) and
``--step-seconds`` (default 0; a pause per step, so that the operator sees a run going)
shape the run. The last loss goes to the termination message (``kubeloop.train.finish``);
with ``--output`` or ``KUBELOOP_OUTPUT_URI`` a small ``result.json`` is written there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import kubeloop.train

PENALTY = {"adam": 0.0, "sgd": 0.5, "rmsprop": 0.2}
OPTIMUM = {"lr": 0.01, "depth": 5, "optimizer": "adam"}


def final_loss(lr: float, depth: int, optimizer: str) -> float:
    """The loss a run ends with: 0 at OPTIMUM."""
    return (math.log10(lr) + 2.0) ** 2 + 0.1 * (depth - 5) ** 2 + PENALTY[optimizer]


def loss_at(step: int, lr: float, depth: int, optimizer: str) -> float:
    """The loss reported at `step` (from 1)."""
    return final_loss(lr, depth, optimizer) + 2.0 / math.sqrt(step)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"HP_{name.upper()}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, default=float(_env("lr", "0.1")))
    parser.add_argument("--depth", type=int, default=int(float(_env("depth", "3"))))
    parser.add_argument("--optimizer", choices=sorted(PENALTY), default=_env("optimizer", "sgd"))
    parser.add_argument("--steps", type=int, default=int(_env("steps", "30")))
    parser.add_argument("--step-seconds", "--step_seconds", dest="step_seconds", type=float,
                        default=float(_env("step_seconds", "0")))
    parser.add_argument("--output", default=os.environ.get("KUBELOOP_OUTPUT_URI", ""))
    args = parser.parse_args(argv)
    if args.lr <= 0:
        parser.error("--lr must be greater than 0")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    loss = math.inf
    for step in range(1, args.steps + 1):
        loss = loss_at(step, args.lr, args.depth, args.optimizer)
        kubeloop.train.report(step=step, total_steps=args.steps, metrics={"loss": loss})
        if args.step_seconds:
            time.sleep(args.step_seconds)
    if args.output:
        out = Path(urlsplit(args.output).path if "://" in args.output else args.output)
        out.mkdir(parents=True, exist_ok=True)
        settings = {"lr": args.lr, "depth": args.depth, "optimizer": args.optimizer}
        (out / "result.json").write_text(json.dumps({**settings, "loss": loss}) + "\n")
    kubeloop.train.finish({"loss": loss})
    print(f"loss={loss:.6g}")
    return loss


if __name__ == "__main__":
    main()
