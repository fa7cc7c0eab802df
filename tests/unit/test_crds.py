"""The committed CRDs are what the models generate, and they are structural."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml

from kubeloop.api.crdgen import KINDS, crd_for, render_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_are_up_to_date() -> None:
    for kind in KINDS:
        path = ROOT / "crds" / f"kubeloop.io_{kind.plural}.yaml"
        assert path.read_text() == render_yaml(kind), (
            f"{path} is out of date: run `make crds`"
        )


def test_helm_chart_carries_the_same_crds() -> None:
    chart = ROOT / "charts" / "kubeloop" / "crds"
    top = {p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert top == {p.name for p in chart.glob("*.yaml")}, "crds/ and the chart's crds/ differ"
    assert "kopf.dev_peerings.yaml" in top  # what `replicas` > 1 needs for peering
    for name in top:
        assert (chart / name).read_text() == (ROOT / "crds" / name).read_text(), name


def _walk(node: object, path: str = "") -> list[tuple[str, dict]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


def test_schemas_are_structural() -> None:
    for kind in KINDS:
        crd = crd_for(kind)
        text = json.dumps(crd)
        assert "$ref" not in text and "anyOf" not in text and "allOf" not in text
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            if "properties" in node:
                assert node.get("type") == "object", path
            if path.endswith("properties") or ".properties." in path[-12:]:
                continue
        for path, node in _walk(schema["properties"]["spec"]):
            if node.get("type") and not path.endswith(".properties"):
                assert "title" not in node, path


def test_names_columns_and_categories() -> None:
    shorts = {}
    for kind in KINDS:
        crd = crd_for(kind)
        names = crd["spec"]["names"]
        shorts[names["kind"]] = names["shortNames"]
        assert names["categories"] == ["kubeloop"]
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[-1] == "Age"
        if kind.kind == "ComputeTemplate":
            # A menu: what a pod gets, and how many fit.
            assert columns[:4] == ["GPU", "GPU Type", "CPU", "Memory"]
            assert {"Fits Now", "In Use"} <= set(columns)
            assert crd["spec"]["scope"] == "Cluster"
            continue
        assert crd["spec"]["scope"] == "Namespaced"
        assert columns[0] == "Phase"
        # `kubectl get` says why, `-o wide` says what was seen.
        assert "Reason" in columns and "Message" in columns, kind.kind
    assert shorts == {"TrainingJob": ["tj"], "ModelDeployment": ["mdep"], "DriftMonitor": ["dm"],
                      "ComputeTemplate": ["ct"], "Experiment": ["exp"],
                      "BatchPrediction": ["bp"]}


def test_every_spec_field_has_a_description() -> None:
    for kind in KINDS:
        spec = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "spec"]
        for path, node in _walk(spec):
            for name, prop in (node.get("properties") or {}).items():
                assert prop.get("description"), f"{kind.kind}{path}.{name} has no description"


def test_explain_states_defaults_and_bounds() -> None:
    for kind in KINDS:
        spec = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "spec"]
        for path, node in _walk(spec):
            for name, prop in (node.get("properties") or {}).items():
                where = f"{kind.kind}{path}.{name}"
                if "default" in prop and prop["default"] not in ({}, []):
                    assert f"Default: {json.dumps(prop['default'])}" in prop["description"], where
                for bound in ("minimum", "maximum"):
                    if bound in prop:
                        assert str(prop[bound]).rstrip("0").rstrip(".") in prop["description"], (
                            where
                        )


def test_no_description_is_copied_onto_another_field() -> None:
    seen: dict[str, str] = {}
    for kind in KINDS:
        spec = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "spec"]
        for path, node in _walk(spec):
            for name, prop in (node.get("properties") or {}).items():
                text, where = prop.get("description", ""), f"{kind.kind}{path}.{name}"
                if len(text) < 25:
                    continue
                other = seen.setdefault(text, where)
                # One model used in two places is one field; two names with one text is a slip.
                assert other.rsplit(".", 1)[-1] == name, f"{where} repeats {other}: {text!r}"


def test_cel_rules_are_present() -> None:
    text = yaml.safe_dump([crd_for(k) for k in KINDS], width=1000)
    for message in (
        "exactly one of uri, fromTrainingJob or fromExperiment must be set",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "gpu.type needs gpu.count greater than 0",
        "onDrift.promote needs onDrift.retrain",
    ):
        assert message in text


def test_reference_docs_are_up_to_date() -> None:
    from kubeloop.api.docgen import render_reference

    for kind in KINDS:
        path = ROOT / "docs" / "reference" / f"{kind.singular}.md"
        assert path.read_text() == render_reference(kind), f"{path} is out of date: make docs"


def test_every_condition_reason_is_explained_in_troubleshooting() -> None:
    from kubeloop import conditions

    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    reasons = {
        value for name, value in vars(conditions).items()
        if name.isupper() and isinstance(value, str) and value[:1].isupper()
        and name not in ("MAX_MESSAGE",)
    }
    missing = sorted(r for r in reasons if f"`{r}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not explain: {missing}"


@pytest.mark.parametrize(("module", "policies"), [("admission", 4), ("podsecurity_policy", 6)])
def test_admission_policies_are_up_to_date_and_in_the_chart(module: str, policies: int) -> None:
    generator = importlib.import_module(f"kubeloop.api.{module}")
    committed = ROOT / "admission" / generator.FILE
    assert committed.read_text() == generator.render_yaml(), "run `make crds`"
    chart = ROOT / "charts" / "kubeloop" / "files" / generator.FILE
    assert chart.read_text() == committed.read_text()
    kinds = [d["kind"] for d in yaml.safe_load_all(committed.read_text())]
    assert kinds.count("ValidatingAdmissionPolicy") == policies
    assert kinds.count("ValidatingAdmissionPolicyBinding") == policies
