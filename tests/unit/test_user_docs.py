"""What the docs tell a user holds for the product: the README and the chart's notes list
every kind the CRDs define, and every script the docs run (in the image, or from a
checkout) is built into the image, by the image's own copy steps run as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.kubetest import ROOT

CHART = ROOT / "charts" / "kubeloop"
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md", CHART / "templates" / "NOTES.txt",
               *ROOT.glob("examples/**/*.yaml")])
SCRIPT = re.compile(r"(?:/opt/kubeloop/)?\b(examples/train/[\w-]+\.py)\b")
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def kinds() -> list[str]:
    crds = [doc for path in sorted((ROOT / "crds").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [crd["spec"]["names"]["kind"] for crd in crds if crd["spec"]["group"] == "kubeloop.io"]


def test_the_readme_and_the_chart_notes_list_every_kind() -> None:
    every = kinds()
    assert {"TrainingJob", "ModelDeployment", "DriftMonitor", "ComputeTemplate"} <= set(every)
    readme = (ROOT / "README.md").read_text()
    assert f"reconciles {NUMBERS[len(every)]} custom resources" in readme
    assert f"lists all {NUMBERS[len(every)]}" in readme
    for kind in every:
        assert f"| `{kind}` |" in readme, f"the README's table has no {kind}"
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    listing = next(line for line in notes.splitlines() if "kubectl get kubeloop" in line)
    explain = next(line for line in notes.splitlines() if "kubectl explain" in line)
    for kind in every:
        assert f"{kind}s" in listing, f"NOTES: `kubectl get kubeloop` lists {kind}s too"
        assert f"{kind.lower()}.spec" in explain, f"NOTES: no `kubectl explain` of {kind}"


def scripts_the_docs_run() -> set[str]:
    return {match for doc in DOCS for match in SCRIPT.findall(doc.read_text())}


def copy_steps(script: Path, starts: tuple[str, ...], into: str) -> str:
    """The lines of an image build script that put the example scripts in place."""
    lines = [line.strip() for line in script.read_text().splitlines()
             if line.strip().startswith(starts) and into in line]
    assert lines, f"{script}: no step copies examples/train"
    return "\n".join(lines)


def test_every_script_the_docs_run_is_built_into_the_image(tmp_path: Path) -> None:
    named = scripts_the_docs_run()
    # docs/safe-retraining.md writes its holdout data with make_data.py in the image.
    assert {"examples/train/train.py", "examples/train/make_data.py"} <= named
    for path in named:
        assert (ROOT / path).is_file(), f"the docs run {path}, which does not exist"
    # The Dockerfile's install script (hack/image-install.sh), its copy steps as written.
    docker = tmp_path / "opt-kubeloop"
    subprocess.run(["sh", "-euc", "prefix=$1; src=$2\n" + copy_steps(
        ROOT / "hack" / "image-install.sh", ("mkdir ", "cp "), '"$prefix/examples/train'),
                    "image-install", str(docker), str(ROOT)], check=True)
    # hack/build-image.sh's last stage copies them over its cached install.
    built = tmp_path / "work" / "rootfs" / "opt" / "kubeloop"
    (built / "examples" / "train").mkdir(parents=True)
    subprocess.run(["bash", "-euc", "root=$1; work=$2\n" + copy_steps(
        ROOT / "hack" / "build-image.sh", ("cp ",), "/opt/kubeloop/examples/train"),
        "build-image", str(ROOT),
        str(tmp_path / "work")], check=True)
    for path in named:
        assert (docker / path).is_file(), f"hack/image-install.sh leaves out {path}"
        assert (built / path).is_file(), f"hack/build-image.sh leaves out {path}"
