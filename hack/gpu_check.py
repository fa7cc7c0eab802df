#!/usr/bin/env python3
"""Prepare the GPU check: exactly the environment the renderer gives worker 0 of a
1-worker, 1-GPU TrainingJob, as a shell script that runs examples/train/ddp.py under
torchrun with it.

    python hack/gpu_check.py DIR   # writes DIR/run.sh and DIR/worker0.env

The kubelet resolves the completion-index fieldRefs to "0" for worker 0, and writes the
pod's hostname (worker 0's MASTER_ADDR) into /etc/hosts; run.sh does both.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.render.trainingjob import render_job


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpucheck")
    out.mkdir(parents=True, exist_ok=True)
    spec = TrainingJobSpec.model_validate({
        "image": "kubeloop-torch", "command": ["torchrun", "examples/train/ddp.py"],
        "workers": 1, "gpu": {"count": 1}, "hyperparameters": {"steps": "200", "lr": "0.05"},
        "passHyperparametersAsArgs": False, "output": {"uri": "file:///tmp/kubeloop-ddp-out"},
    })
    job = render_job(spec, "gpu-check", "default", 0, {})
    container = job["spec"]["template"]["spec"]["containers"][0]
    lines = []
    for var in container["env"]:
        value = var.get("value")
        if value is None:  # the completion-index fieldRef, resolved as the kubelet would
            value = "0"
        lines.append(f"{var['name']}={value}")
    (out / "worker0.env").write_text("\n".join(lines) + "\n")
    master = next(v.split("=", 1)[1] for v in lines if v.startswith("MASTER_ADDR="))
    command = " ".join(shlex.quote(c) for c in container["command"])
    script = f"""#!/bin/bash
set -u
echo "127.0.0.1 {master}" >> /etc/hosts
cd "$(dirname "$0")/.."
env -i PATH="$PATH" HOME="$HOME" $(cat {out.name}/worker0.env | xargs) {command}
"""
    (out / "run.sh").write_text(script)
    print(f"wrote {out}/worker0.env and {out}/run.sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
