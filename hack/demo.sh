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
# The drift source of the loop below is a model server on loopback: allow it.
.venv/bin/kubeloop run --namespace "$ns" --log-format text --metrics-port 0 --health-port 0 \
  --drift-source-allow http://127.0.0.1: > .cluster/demo-operator.log 2>&1 &
operator=$!
server=""
cleanup() {
  kill $operator ${server:-} 2>/dev/null || true
  wait $operator ${server:-} 2>/dev/null || true
}
trap cleanup EXIT

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

step "The closed loop: drift -> retrain -> roll out"
models="$root/.cluster/demo-models"
rm -rf "$models" && mkdir -p "$models"
echo "Training the first model with examples/train/train.py"
.venv/bin/python examples/train/train.py --output "$models/iris-v1" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The nodes are simulated, so the model server runs here, on loopback, as the
# ModelDeployment's pod would.
.venv/bin/kubeloop serve --model-dir "$models/iris-v1" --name iris-live --host 127.0.0.1 \
  --port "$port" > .cluster/demo-server.log 2>&1 &
server=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2; done
cat <<YAML | k apply -n "$ns" -f -
apiVersion: kubeloop.io/v1alpha1
kind: ModelDeployment
metadata: {name: iris-live}
spec:
  model: {uri: "file://$models/iris-v1"}
---
apiVersion: kubeloop.io/v1alpha1
kind: DriftMonitor
metadata: {name: iris-live-drift}
spec:
  modelDeployment: iris-live
  source: {url: "http://127.0.0.1:$port/metrics"}
  method: psi
  interval: 2s
  minSamples: 200
  onDrift:
    promote: true
    retrain:
      cooldown: 1h
      template:
        image: ghcr.io/kubeloop/kubeloop:0.1.0
        command: ["python", "/opt/kubeloop/examples/train/train.py", "--shift", "2"]
        output: {uri: "file://$models/{trainingJob}"}
        podMetadata: {annotations: {kubeloop.io/fake-duration: "3s"}}
YAML
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Collecting --timeout=60s dm/iris-live-drift
show_dm() {
  k get dm iris-live-drift -n "$ns" -o jsonpath='{.status.phase}: {.status.message}{"\n"}{range .status.features[*]}  {.name}: {.score} drifted={.drifted}{"\n"}{end}'
}
echo; echo "Traffic like the training data:"
.venv/bin/python hack/demo_traffic.py "http://127.0.0.1:$port" iris-live 300 0
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Healthy --timeout=60s dm/iris-live-drift >/dev/null
show_dm
echo; echo "The world changes: traffic shifted by 2 standard deviations:"
.venv/bin/python hack/demo_traffic.py "http://127.0.0.1:$port" iris-live 300 2
k wait -n "$ns" --for=jsonpath='{.status.drifted}'=true --timeout=60s dm/iris-live-drift >/dev/null
show_dm
k wait -n "$ns" --for=create --timeout=30s tj/iris-live-drift-retrain-1 >/dev/null
echo; echo "The monitor created a TrainingJob from its template:"
k get tj -n "$ns" iris-live-drift-retrain-1
echo "(its training script runs here, since the nodes are simulated)"
.venv/bin/python examples/train/train.py --shift 2 --output "$models/iris-live-drift-retrain-1" >/dev/null
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded --timeout=60s tj/iris-live-drift-retrain-1 >/dev/null
k wait -n "$ns" --for=jsonpath='{.status.lastRetrain.result}'=Promoted --timeout=60s dm/iris-live-drift >/dev/null
echo; echo "Retrained and promoted: the ModelDeployment now serves"
k get mdep iris-live -n "$ns" -o jsonpath='  spec.model.uri = {.spec.model.uri}{"\n"}'
k wait -n "$ns" --for=jsonpath='{.status.activeModelUri}'="file://$models/iris-live-drift-retrain-1" --timeout=60s mdep/iris-live >/dev/null
k get mdep iris-live -n "$ns" -o wide
echo; echo "Events on dm/iris-live-drift:"
k get events -n "$ns" --field-selector involvedObject.name=iris-live-drift \
  --sort-by=.lastTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
step "kubectl get kubeloop -n $ns"
k get kubeloop -n "$ns"
echo
echo "(dm/iris-drift is Degraded on purpose: its reference, profile.json beside"
echo " file:///models/iris/v1, lives on the cluster's model volume, not on this machine;"
echo " kubectl describe dm/iris-drift -n $ns says so: ReferenceInvalid.)"
