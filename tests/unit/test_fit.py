from __future__ import annotations

from decimal import Decimal

import pytest

from kubeloop.render.fit import explain_never_fits, parse_quantity, worker_demand


def node(name: str, gpus: int = 0, product: str | None = None, cpu: str = "32",
         taint: bool = False) -> dict:
    labels = {"nvidia.com/gpu.product": product} if product else {}
    alloc = {"cpu": cpu, "memory": "128Gi"}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    taints = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if taint else []
    return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"allocatable": alloc}}


NODES = [node("gpu-1", 8, "H100", cpu="96", taint=True),
         node("gpu-2", 8, "H100", cpu="96", taint=True),
         node("cpu-1")]
GPU_TOL = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("4Gi", Decimal(4 * 2**30)),
    ("1.5", Decimal("1.5")), ("1k", Decimal(1000)),
])
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_fits_on_a_tolerated_gpu_node() -> None:
    demand = worker_demand({"limits": {"nvidia.com/gpu": "8"}}, {}, GPU_TOL)
    assert explain_never_fits(demand, NODES) is None


def test_too_many_gpus_names_the_largest_node() -> None:
    demand = worker_demand({"limits": {"nvidia.com/gpu": "16"}}, {}, GPU_TOL)
    message = explain_never_fits(demand, NODES)
    assert message and "needs 16 nvidia.com/gpu, the largest node has 8" in message


def test_unknown_gpu_type_is_named() -> None:
    demand = worker_demand({"limits": {"nvidia.com/gpu": "1"}},
                           {"nvidia.com/gpu.product": "A100"}, GPU_TOL)
    message = explain_never_fits(demand, NODES)
    assert message and "no node has label nvidia.com/gpu.product=A100" in message


def test_untolerated_taint_alone_explains_per_node() -> None:
    demand = worker_demand({"requests": {"cpu": "64"}}, {}, [])
    message = explain_never_fits(demand, NODES)
    assert message and "no single node satisfies every constraint" in message
    assert "gpu-1: untolerated taint nvidia.com/gpu" in message
    assert "cpu-1: insufficient cpu" in message


def test_transient_node_taints_are_not_never() -> None:
    nodes = [node("n", cpu="4")]
    nodes[0]["spec"]["taints"] = [{"key": "node.kubernetes.io/not-ready",
                                   "effect": "NoSchedule"}]
    assert explain_never_fits(worker_demand({"requests": {"cpu": "1"}}, {}, []), nodes) is None


def test_no_nodes_known_means_no_verdict() -> None:
    assert explain_never_fits(worker_demand({"limits": {"x": "1"}}, {}, []), []) is None
