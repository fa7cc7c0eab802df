"""Invalid and edge-case specs at volume, generated with hypothesis and sent to the real
API server: every rejection names the offending field, everything the schema accepts
gets a status from the operator, the operator never crashes, and nothing else in the
namespace is disturbed."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from kubeloop.names import GROUP, VERSION
from tests.faults.conftest import DM, MD, TJ, OperatorProcess, poll
from tests.kubetest import PLURALS, Cluster

Path_ = tuple[str | int, ...]
DELETE = object()  # a mutation that removes the field

SENTINEL_TJ, SENTINEL_MD = "sentinel-tj", "sentinel-md"

# -- values -------------------------------------------------------------------------

HUGE = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["a", "é", "😀", "\u202e", "\x00", "-"]),
    st.sampled_from([64, 254, 2049, 70_000]),
)
TEXT = st.one_of(
    st.text(max_size=24),
    HUGE,
    st.sampled_from(["", " ", "null", "-1", "1e400", "☃", "a\nb", "${HOME}", "{trainingJob}",
                     "registry.local/train:1", "UPPER", "a" * 63, "a" * 64]),
)
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from([2**64, -(2**64), 1e308]),
)  # fmt: skip
ANY = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)
NOT_INT = st.sampled_from([1.5, "1", True, None, [], {}, {"a": None}, [None]])
QUANTITY = st.one_of(
    st.sampled_from(["10m", "1", "0.5", "1Gi", "lots", "-1", "1e3", "1.", ".5", 1, None, []]),
    TEXT,
)


def ints(lo: int, hi: int, cap: int | None = None) -> st.SearchStrategy[Any]:
    """Edges and just-outside values, wrong types, and valid values up to `cap` (small
    where a large valid value would make hundreds of pods)."""
    return st.one_of(
        st.sampled_from([lo - 1, hi + 1, -(2**63), 2**63 - 1, 2**31, 2**64]),
        st.integers(lo, min(hi, cap if cap is not None else hi)),
        NOT_INT,
    )


def dicts(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.dictionaries(TEXT, values, max_size=3), ANY)


# -- the three namespaced kinds: a valid base and the fields to spoil --------------


def base_tj() -> dict[str, Any]:
    return {
        "image": "registry.local/train:1",
        "command": ["python", "train.py"],
        "env": [{"name": "A", "value": "1"}],
        "resources": {"cpu": "10m"},
        "maxRestarts": 0,
        "output": {"uri": "s3://models/out"},
        "scheduling": {"tolerations": [{"key": "k", "operator": "Exists"}]},
        "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
    }


def base_md() -> dict[str, Any]:
    return {"model": {"uri": "s3://models/m"}, "replicas": 1}


def base_dm() -> dict[str, Any]:
    return {
        "modelDeployment": SENTINEL_MD,
        # Refused at once: the checks of accepted monitors never wait on a network.
        "source": {"url": "http://127.0.0.1:9/metrics"},
        "interval": "5s",
        "minSamples": 10,
    }


TJ_FIELDS: dict[Path_, st.SearchStrategy[Any]] = {
    (): st.sampled_from([None, [], "spec", 1, {}]),
    ("image",): TEXT | NOT_INT,
    ("command",): st.lists(TEXT, max_size=3) | ANY,
    ("command", 0): TEXT | SCALAR,
    ("args",): st.lists(TEXT | SCALAR, max_size=3),
    ("env", 0): ANY,
    ("env", 0, "name"): TEXT | SCALAR,
    ("env", 0, "value"): TEXT | SCALAR,
    ("env", 0, "valueFrom"): ANY,
    ("workers",): ints(1, 1024, cap=2),
    ("gpu",): ANY,
    ("gpu", "count"): ints(0, 64),
    ("gpu", "type"): TEXT,
    ("gpu", "resourceName"): TEXT | SCALAR,
    ("resources", "cpu"): QUANTITY,
    ("resources", "memory"): QUANTITY,
    ("passHyperparametersAsArgs",): SCALAR,
    ("dataset",): ANY,
    ("output", "uri"): TEXT | SCALAR,
    ("masterPort",): ints(1, 65535) | st.just(9464),  # the progress port's default
    ("hyperparameters",): dicts(TEXT | SCALAR) | st.sampled_from(
        [{"lr": "0.1", "LR": "0.2"}, {"learning rate": "1"}, {"n_estimators": "5"}]),
    ("dataset", "uri"): TEXT | st.sampled_from(
        ["gs://b/data.csv", "pvc:///d", "pvc://Data/x", "s3:///k", "file://host/x", "/data"]),
    ("backoffLimit",): ints(0, 100),
    ("maxRestarts",): ints(0, 100),
    ("activeDeadlineSeconds",): ints(1, 2**63 - 1, cap=3600),
    ("ttlSecondsAfterFinished",): ints(0, 2**63 - 1, cap=3600),
    ("suspend",): SCALAR,
    ("scheduling", "queueName"): TEXT | SCALAR,
    ("scheduling", "nodeSelector"): dicts(TEXT | SCALAR),
    ("scheduling", "tolerations", 0, "operator"): st.sampled_from(
        ["Exists", "Equal", "Maybe", None, 1, ""]),
    ("scheduling", "tolerations", 0, "effect"): TEXT | SCALAR,
    ("scheduling", "tolerations", 0, "tolerationSeconds"): ints(-(2**63), 2**63 - 1),
    ("scheduling", "priorityClassName"): TEXT,
    ("serviceAccountName",): TEXT | SCALAR,
    ("runAsRoot",): SCALAR,
    ("podMetadata", "labels"): dicts(TEXT | SCALAR),
    ("podMetadata", "annotations"): dicts(TEXT | SCALAR),
    ("volumes",): st.lists(ANY, max_size=2) | ANY,
    ("volumeMounts",): st.lists(ANY, max_size=2) | ANY,
}

MD_FIELDS: dict[Path_, st.SearchStrategy[Any]] = {
    (): st.sampled_from([None, [], "spec", 1, {}]),
    ("model",): ANY,
    ("model", "uri"): TEXT | SCALAR | st.sampled_from(
        ["gs://b/m", "hdfs://nn/m", "pvc:///m", "s3://", "https://", "file://h/m", "m/1"]),
    ("model", "fromTrainingJob"): ANY | st.sampled_from([{"name": SENTINEL_TJ}, {"name": ""}]),
    ("model", "format"): TEXT | SCALAR,
    ("replicas",): ints(0, 1000, cap=2),
    ("autoscaling",): ANY,
    ("autoscaling", "minReplicas"): ints(1, 1000, cap=2),
    ("autoscaling", "maxReplicas"): ints(1, 1000),
    ("autoscaling", "targetCPUUtilization"): ints(1, 100),
    ("autoscaling", "targetRequestsPerSecond"): ints(1, 2**63 - 1),
    ("canary",): ANY,
    ("canary", "model"): ANY | st.sampled_from([{"uri": "s3://models/c"}, {}]),
    ("canary", "trafficPercent"): ints(0, 100),
    ("canary", "progressDeadlineSeconds"): ints(10, 2**63 - 1),
    ("runtime",): ANY,
    ("runtime", "port"): ints(1, 65535) | st.just(8081),  # the gRPC port's default
    ("runtime", "image"): TEXT | SCALAR,
    ("runtime", "args"): st.lists(TEXT | SCALAR, max_size=3),
    ("runtime", "env"): st.lists(ANY, max_size=2),
    ("resources", "cpu"): QUANTITY,
    ("resources", "memory"): QUANTITY,
    ("gpu",): ANY,
    ("gpu", "count"): ints(0, 64),
    ("monitoring",): ANY,
    ("monitoring", "enabled"): SCALAR,
    ("serviceAccountName",): TEXT | SCALAR,
}

DM_FIELDS: dict[Path_, st.SearchStrategy[Any]] = {
    (): st.sampled_from([None, [], "spec", 1, {}]),
    ("modelDeployment",): TEXT | SCALAR,
    ("source",): ANY,
    ("source", "type"): st.sampled_from(["metrics", "prometheus", "Prometheus", "", None, 1]),
    ("source", "url"): TEXT | SCALAR | st.sampled_from(
        ["ftp://x", "http://127.0.0.1:9/metrics", "https://not-allowed.invalid/metrics"]),
    ("source", "prometheus"): ANY | st.sampled_from(
        [{"url": "http://127.0.0.1:9", "query": "up"}, {"url": "http://127.0.0.1:9"},
         {"url": "https://not-allowed.invalid", "query": "up"}]),
    ("reference",): ANY,
    ("reference", "configMap"): ANY | st.sampled_from([{"name": "nope"}, {"name": ""}]),
    ("features",): st.lists(TEXT | SCALAR, max_size=3) | ANY,
    ("method",): st.sampled_from(["psi", "ks", "wasserstein", "jensenshannon", "chi2", "vibes",
                                  "", None, 1]),
    ("threshold",): st.one_of(SCALAR, st.sampled_from([0, -0.1, 1e-300, 1e308, "0.1"])),
    ("interval",): TEXT | SCALAR | st.sampled_from(["1s", "0s", "1ms", "1h30m", "5", "s"]),
    ("minSamples",): ints(1, 2**63 - 1),
    ("onDrift",): ANY,
    ("onDrift", "promote"): SCALAR,
    ("onDrift", "retrain"): ANY | st.sampled_from(
        [{"template": {}}, {"template": {"image": "x"}, "cooldown": "soon"},
         {"template": {"image": "x", "workers": 0}}]),
    ("onDrift", "retrain", "template", "image"): TEXT | SCALAR,
    ("onDrift", "retrain", "cooldown"): TEXT | SCALAR,
}

KINDS = {TJ: (base_tj, TJ_FIELDS), MD: (base_md, MD_FIELDS), DM: (base_dm, DM_FIELDS)}

# Known edges, sent every run before the generated ones: each CEL rule broken, and
# specs the schema accepts but a child object (Job, Deployment) cannot carry.
EDGES: list[tuple[str, list[tuple[Path_, Any]]]] = [
    (TJ, [(("activeDeadlineSeconds",), 0)]),
    (TJ, [(("gpu",), {"type": "NVIDIA-H100-80GB-HBM3"})]),
    (TJ, [(("workers",), 2**63)]),
    (TJ, [(("image",), "")]),
    (TJ, [(("hyperparameters",), {"lr": None})]),
    (TJ, [(("env", 0, "name"), "é")]),
    (TJ, [(("podMetadata", "labels"), {"bad key!": "v"})]),
    (TJ, [(("podMetadata", "annotations"), {"big": "a" * 300_000})]),
    (TJ, [(("ttlSecondsAfterFinished",), 2**31)]),
    (TJ, [(("volumes",), [{"name": None}])]),
    (MD, [(("model", "fromTrainingJob"), {"name": SENTINEL_TJ})]),
    (MD, [(("autoscaling",), {"minReplicas": 3, "maxReplicas": 2})]),
    (MD, [(("canary",), {"model": {"uri": "s3://models/c"}, "trafficPercent": 101})]),
    (MD, [(("serviceAccountName",), "Not_A_Valid_Name")]),
    (MD, [(("runtime", "env"), [{"name": "é", "value": "1"}])]),
    (DM, [(("onDrift",), {"promote": True})]),
    (DM, [(("source",), {"type": "prometheus"})]),
    (DM, [(("interval",), "0s")]),
    (DM, [(("onDrift", "retrain"), {"template": {"image": "x", "activeDeadlineSeconds": 0}})]),
    # Refused at apply time because they could never work (docs/design.md).
    (MD, [(("model", "uri"), "gs://bucket/model")]),
    (MD, [(("runtime",), {"port": 8081})]),
    (TJ, [(("dataset",), {"uri": "pvc:///data"})]),
    (TJ, [(("hyperparameters",), {"lr": "0.1", "LR": "0.2"})]),
    (TJ, [(("masterPort",), 9464)]),
]


def render(path: Path_) -> str:
    """`spec.env[0].name` for ("env", 0, "name")."""
    out = "spec"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def mutate(spec: Any, path: Path_, value: Any) -> tuple[Any, Path_]:
    """Set (or delete) the field at `path`, making the containers on the way. Returns
    the new spec and what changed: `path`, or the outermost container made for it."""
    if not path:
        return value, ()
    if not isinstance(spec, dict):
        spec = {}
    node: Any = spec
    touched: Path_ | None = None
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        child = node[part] if _has(node, part) else None
        if isinstance(nxt, int):
            if not isinstance(child, list) or len(child) <= nxt:
                child = [{} for _ in range(nxt + 1)]
                touched = touched or path[: i + 1]
        elif not isinstance(child, dict):
            child = {}
            touched = touched or path[: i + 1]
        node[part] = child
        node = child
    last = path[-1]
    if value is DELETE:
        if _has(node, last):
            del node[last]
    else:
        node[last] = value
    return spec, touched or path


def _has(node: Any, part: str | int) -> bool:
    if isinstance(part, int):
        return isinstance(node, list) and len(node) > part
    return isinstance(node, dict) and part in node


@st.composite
def spoiled(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], list[Path_]]:
    """A valid base spec with one or two fields spoiled (set to a drawn value, or
    removed)."""
    base, fields = KINDS[kind]
    paths = draw(st.lists(st.sampled_from(sorted(fields, key=render)), min_size=1, max_size=2,
                          unique=True))
    spec: Any = base()
    touched = []
    for path in paths:
        value = draw(st.one_of(fields[path], st.just(DELETE))) if path else draw(fields[path])
        spec, changed = mutate(spec, path, value)
        touched.append(changed)
    return spec, touched


# Rules over two fields that blame one of them (their fieldPath): a change of the other
# is blamed on it.
SPANS = {
    "spec.progressPort": ("spec.masterPort",),
    "spec.runtime.grpcPort": ("spec.runtime.port",),
}


def related(field: str, path: str) -> bool:
    """The API server blamed this field for a change at `path`: the field itself, a
    part of it, the object holding it (where a CEL rule spans several fields), or the
    field a two-field rule blames."""
    return (
        field == path
        or field.startswith((path + ".", path + "["))
        or (field != "spec" and path.startswith((field + ".", field + "[")))
        or path in SPANS.get(field, ())
    )


def check_rejection(exc: ApiException, paths: list[Path_], manifest: str) -> None:
    assert exc.status == 422, f"{exc.status} {exc.reason}: {exc.body}\n{manifest}"
    status = json.loads(exc.body)
    message = status["message"]
    causes = [c for c in (status.get("details") or {}).get("causes", [])
              if c.get("field") != "<nil>"]  # "<nil>": rules skipped, not a field
    assert causes, f"a rejection without a field: {message}\n{manifest}"
    rendered = [render(p) for p in paths]
    for cause in causes:
        field = cause.get("field", "")
        # The offending field by its path (`spec.<field>`), and only fields we spoiled.
        assert field.startswith("spec"), f"{field!r} is not a spec field: {message}"
        assert any(related(field, p) for p in rendered), (
            f"{field!r} blamed for a change of {rendered}: {message}\n{manifest}"
        )
        assert field in message, f"the message does not name {field}: {message}"


def test_bad_specs_at_volume(
    cluster: Cluster, namespace: str, operator: OperatorProcess, trained_model: Path
) -> None:
    ns = namespace
    pid = operator.pid
    # The bystanders: a finished run and a served model, created before any bad input.
    cluster.create(TJ, ns, SENTINEL_TJ, {
        "image": "registry.local/train:1", "resources": {"cpu": "10m"},
        "output": {"uri": "s3://models/sentinel"},
        "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
    })  # fmt: skip
    cluster.create(MD, ns, SENTINEL_MD, {"model": {"uri": f"file://{trained_model}"}})
    cluster.wait_phase(TJ, ns, SENTINEL_TJ, "Succeeded", 60)
    cluster.wait_phase(MD, ns, SENTINEL_MD, "Ready", 60)
    sentinel_tj = cluster.get(TJ, ns, SENTINEL_TJ)
    sentinel_md = cluster.get(MD, ns, SENTINEL_MD)
    sentinel_job = cluster.batch.read_namespaced_job(f"{SENTINEL_TJ}-r0", ns)
    sentinel_dep = cluster.apps.read_namespaced_deployment(SENTINEL_MD, ns)

    accepted: dict[str, list[str]] = {TJ: [], MD: [], DM: []}
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    counter = itertools.count()

    def send(kind: str, spec: Any, paths: list[Path_]) -> None:
        name = f"{kind.lower()[:2]}-{next(counter)}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                "metadata": {"name": name, "namespace": ns}, "spec": spec}
        if spec is DELETE:
            del body["spec"]
        manifest = json.dumps(body)[:2000]
        try:
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], body)
        except ApiException as exc:
            try:
                check_rejection(exc, paths, manifest)
            except AssertionError as problem:  # all of them are reported at the end
                problems.append(str(problem))
            outcomes[f"{kind} rejected"] += 1
        else:
            accepted[kind].append(name)
            outcomes[f"{kind} accepted"] += 1

    def runner(kind: str) -> Any:
        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=spoiled(kind))
        def run(case: tuple[Any, list[Path_]]) -> None:
            spec, paths = case
            send(kind, spec, paths)

        return run

    for kind, changes in EDGES:
        spec: Any = KINDS[kind][0]()
        touched = []
        for path, value in changes:
            spec, changed = mutate(spec, path, value)
            touched.append(changed)
        send(kind, spec, touched)
    for kind in KINDS:
        runner(kind)()
        # No spec at all is rejected too, by name.
        send(kind, DELETE, [()])
    assert operator.alive and operator.pid == pid, f"the operator crashed:\n{operator.tail()}"
    # Both ways were taken for every kind, or the generator tests nothing.
    for kind in KINDS:
        assert outcomes[f"{kind} accepted"] and outcomes[f"{kind} rejected"], outcomes

    # Everything accepted went through the operator: a status for its generation, and
    # a spec the operator cannot use says which field, like the API server does.
    def all_observed() -> bool:
        pending.clear()
        for kind, names in accepted.items():
            items = cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, PLURALS[kind])["items"]
            by_name = {i["metadata"]["name"]: i for i in items}
            for name in names:
                obj = by_name[name]
                status = obj.get("status") or {}
                if status.get("observedGeneration") != obj["metadata"]["generation"]:
                    pending.append(f"{kind} {name}: {json.dumps(obj['spec'])[:2000]}")
                elif status.get("phase") == "Invalid" and "spec" not in status["message"]:
                    pending.append(f"{kind} {name}: Invalid, names no field: {status}")
        return not pending

    pending: list[str] = []
    try:
        poll(all_observed, 90, "a status on every accepted object", interval=1.0)
    except AssertionError as exc:
        problems.append(f"{exc}; {len(pending)} accepted objects without a status:\n"
                        + "\n".join(pending[:10]))
    print(f"outcomes {dict(outcomes)}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:10])
    assert operator.alive and operator.pid == pid, f"the operator crashed:\n{operator.tail()}"

    # Nothing else was disturbed: the bystanders and their children are as they were,
    # and no object appeared that we did not create.
    assert cluster.get(TJ, ns, SENTINEL_TJ) == sentinel_tj
    after_md = cluster.get(MD, ns, SENTINEL_MD)
    assert after_md["spec"] == sentinel_md["spec"]
    assert after_md["metadata"]["generation"] == sentinel_md["metadata"]["generation"]
    assert after_md["status"]["phase"] == "Ready"
    job = cluster.batch.read_namespaced_job(f"{SENTINEL_TJ}-r0", ns)
    assert job.metadata.uid == sentinel_job.metadata.uid
    assert job.metadata.resource_version == sentinel_job.metadata.resource_version
    dep = cluster.apps.read_namespaced_deployment(SENTINEL_MD, ns)
    assert dep.metadata.uid == sentinel_dep.metadata.uid
    assert dep.metadata.generation == sentinel_dep.metadata.generation
    for kind, names in accepted.items():
        items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind])
        sentinels = {TJ: {SENTINEL_TJ}, MD: {SENTINEL_MD}, DM: set()}[kind]
        assert {i["metadata"]["name"] for i in items["items"]} == set(names) | sentinels


def test_rejection_check_tells_the_field() -> None:
    """The checker itself: a cause on an untouched field, or only on `spec`, fails."""
    assert related("spec.gpu", "spec.gpu.type")
    assert related("spec.env[0].name", "spec.env[0]")
    assert related("spec.image", "spec.image")
    assert not related("spec", "spec.activeDeadlineSeconds")
    assert not related("spec.workers", "spec.image")
    assert related("spec", "spec")
    assert mutate({"a": 1}, ("b", 0, "c"), 2) == ({"a": 1, "b": [{"c": 2}]}, ("b",))
    assert mutate({"a": {}}, ("a", "b"), 2) == ({"a": {"b": 2}}, ("a", "b"))
    assert mutate({"a": 1}, ("a",), DELETE) == ({}, ("a",))
