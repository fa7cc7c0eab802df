#!/usr/bin/env bash
# The demo: the local control plane (unless KUBECONFIG names a cluster), the CRDs, the
# operator, and the examples; then what `kubectl get kubeloop` shows.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
tools="$(bash hack/install-tools.sh)"
kubectl="$tools/kubectl"
ns=kubeloop-demo
if [[ -z "${KUBECONFIG:-}" ]]; then
  python3 hack/cluster.py up
  export KUBECONFIG="$root/.cluster/kubeconfig"
fi
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
k() { "$kubectl" "$@"; }

step "Installing the CRDs"
k apply --server-side --force-conflicts -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s crd --all >/dev/null
# A fresh namespace each time, so the demo shows a run from the start.
k delete namespace "$ns" --ignore-not-found --wait --timeout=120s >/dev/null
k delete persistentvolume kubeloop-demo-models --ignore-not-found >/dev/null
k create namespace "$ns" >/dev/null
k apply -f hack/demo-storage.yaml >/dev/null

step "Starting the operator (log: .cluster/demo-operator.log)"
mkdir -p .cluster
.venv/bin/kubeloop run --namespace "$ns" --log-format text --metrics-port 0 --health-port 0 \
  > .cluster/demo-operator.log 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null; wait $operator 2>/dev/null || true' EXIT

step "Applying examples/ to namespace $ns"
for f in examples/*.yaml; do
  k apply -n "$ns" -f "$f"
done

step "Waiting: TrainingJobs succeed, ModelDeployments become Ready"
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded --timeout=90s tj/iris-train
k wait -n "$ns" --for=condition=Ready --timeout=90s mdep/iris mdep/iris-static
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded --timeout=90s tj/pretrain-2x8

step "kubectl get kubeloop -n $ns"
k get kubeloop -n "$ns" -o wide
step "Where the 2x8-GPU workers ran"
k get pods -n "$ns" -l kubeloop.io/training-job=pretrain-2x8 \
  -o custom-columns=POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase
step "Events on tj/pretrain-2x8"
k get events -n "$ns" --field-selector involvedObject.name=pretrain-2x8 \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
