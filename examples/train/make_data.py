#!/usr/bin/env python3
"""Write the iris data as the CSV that train.py reads (``--data``): the feature columns,
then ``species``. ``--shift F`` moves every feature by F standard deviations: the demo's
and the tests' stand-in for a data pipeline whose upstream data changed.

    python make_data.py OUTPUT.csv [--shift F]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sklearn.datasets import load_iris


def write_iris_csv(path: Path, shift: float = 0.0) -> None:
    """Written beside and renamed into place, so a reader never sees half a file."""
    iris = load_iris()
    data = iris.data + shift * iris.data.std(axis=0)
    lines = [",".join([*iris.feature_names, "species"])]
    lines += [
        ",".join([*(repr(float(v)) for v in row), str(iris.target_names[t])])
        for row, t in zip(data, iris.target, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--shift", type=float, default=0.0)
    args = parser.parse_args()
    write_iris_csv(args.output, args.shift)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
