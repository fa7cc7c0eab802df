"""replicas > 1: several operators, exactly one active (Kopf peering), and another takes
over when the active one goes away."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conftest import SYSTEM_NS, OperatorProcess, helm, managers, token_kubeconfig
from tests.kubetest import ROOT, Cluster, wait_for
from tests.rbac import refused, release_refused

PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"


@pytest.mark.parametrize("scope", ["namespaced", "clusterwide"])
def test_two_replicas_exactly_one_active_then_failover(
    cluster: Cluster, tmp_path: Path, alone: None, scope: str
) -> None:
    """With no other operator running, each replica writing under its own field
    manager: the active one makes the Job, the standby none; after the failover the
    standby makes the next. Namespaced operators meet in a KopfPeering of the watched
    namespace, cluster-wide ones in a ClusterKopfPeering."""
    watched = cluster.new_namespace()
    release = "peers"
    confined = scope == "namespaced"
    values = ["--set", f"watchNamespaces={{{watched}}}"] if confined else []
    flags = ["--namespace", watched] if confined else []
    # CRDs first, as for any chart whose templates use them (Helm's discovery would not
    # know kopf.dev right after installing the chart's crds/).
    cluster.kubectl("apply", "--server-side", "-f",
                    str(ROOT / "charts" / "kubeloop" / "crds" / "kopf.dev_peerings.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev")
    helm(cluster, "install", release, str(ROOT / "charts" / "kubeloop"), "--namespace",
         SYSTEM_NS, "--create-namespace", "--set", "replicas=2", *values,
         "--wait", "--timeout", "120s")
    release_refused(cluster, release, SYSTEM_NS, f"{release}-kubeloop", (watched,))
    ops: list[OperatorProcess] = []
    try:
        kubeconfig = token_kubeconfig(cluster, SYSTEM_NS, f"{release}-kubeloop",
                                      tmp_path / "kubeconfig")
        for i in range(2):
            ops.append(OperatorProcess(kubeconfig, tmp_path / f"op{i}.log", *flags,
                                       "--peering", field_manager=f"kubeloop-{i}"))

        def paused() -> list[int]:
            return [i for i, op in enumerate(ops) if PAUSED in op.log.read_text()]

        try:
            which = wait_for(lambda: paused() or None, 60, "one operator pausing for the other")
        except AssertionError as err:
            lines = [line for op in ops for line in op.forbidden()]
            raise AssertionError(f"{err}; the API server refused:\n" + "\n".join(lines[:5])
                                 if lines else str(err)) from None
        assert len(which) == 1, "both operators paused: no active replica"
        standby, active = ops[which[0]], ops[1 - which[0]]
        assert PAUSED not in active.log.read_text()
        refused(active.forbidden() + standby.forbidden())
        cluster.create("TrainingJob", watched, "before-failover", {"image": "t:1"})
        cluster.wait_phase("TrainingJob", watched, "before-failover", "Succeeded", 60)
        made = managers(cluster.batch.read_namespaced_job("before-failover-r0", watched))
        assert active.field_manager in made and standby.field_manager not in made, made

        active.stop()  # a clean exit withdraws it from the peering at once
        wait_for(lambda: RESUMED in standby.log.read_text(), 60, "the standby taking over")
        cluster.create("TrainingJob", watched, "after-failover", {"image": "t:1"})
        cluster.wait_phase("TrainingJob", watched, "after-failover", "Succeeded", 60)
        made = managers(cluster.batch.read_namespaced_job("after-failover-r0", watched))
        assert standby.field_manager in made and active.field_manager not in made, made
    finally:
        for op in ops:
            op.stop()
        helm(cluster, "uninstall", release, "--namespace", SYSTEM_NS, "--wait", check=False)
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)
