#!/usr/bin/env python3
"""Send iris rows to a model server, shifted by SHIFT standard deviations (the demo's
stand-in for the world changing).

    python hack/demo_traffic.py URL MODEL ROWS SHIFT
"""

from __future__ import annotations

import json
import sys

import numpy as np
import requests
from sklearn.datasets import load_iris


def main() -> int:
    url, model, rows, shift = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    data = load_iris().data
    rng = np.random.default_rng(int(shift * 100) + rows)
    batch = data[rng.integers(0, len(data), rows)] + shift * data.std(axis=0)
    body = {"inputs": [{"name": "input-0", "shape": list(batch.shape), "datatype": "FP64",
                        "data": batch.tolist()}]}
    response = requests.post(f"{url}/v2/models/{model}/infer", data=json.dumps(body), timeout=10)
    response.raise_for_status()
    classes = response.json()["outputs"][0]["data"]
    print(f"sent {rows} rows shifted by {shift} std; predictions: "
          f"{ {c: classes.count(c) for c in sorted(set(classes))} }")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
