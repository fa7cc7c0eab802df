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
rm -rf /tmp/kubeloop-demo-models && mkdir -p /tmp/kubeloop-demo-models
k create namespace "$ns" >/dev/null
k apply -f hack/demo-storage.yaml >/dev/null

step "Starting the operator (log: .cluster/demo-operator.log)"
mkdir -p .cluster
.venv/bin/kubeloop run --namespace "$ns" --log-format text --metrics-port 0 --health-port 0 \
  > .cluster/demo-operator.log 2>&1 &
operator=$!
cleanup() {
  kill $operator 2>/dev/null || true
  wait $operator 2>/dev/null || true
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

step "The closed loop on the real node: drift -> retrain -> roll out"
echo "Building the kubeloop image offline and importing it into the real node's containerd"
bash hack/build-image.sh --import >/dev/null
models=/tmp/kubeloop-demo-models
on_real_node='scheduling: {nodeSelector: {kubeloop.io/real-node: "true"}, tolerations: [{key: kubeloop.io/real-node, operator: Exists, effect: NoSchedule}]}'
echo "The data pipeline writes the training data onto the claim 'models'"
.venv/bin/python examples/train/make_data.py "$models/data/iris.csv"
chown -R 10001:10001 "$models"
cat <<YAML | k apply -n "$ns" -f -
apiVersion: kubeloop.io/v1alpha1
kind: TrainingJob
metadata: {name: iris-v1}
spec:
  image: ghcr.io/kubeloop/kubeloop:0.1.0
  command: ["python", "/opt/kubeloop/examples/train/train.py"]
  dataset: {uri: "pvc://models/data/iris.csv"}
  output: {uri: "pvc://models/iris-v1"}
  $on_real_node
---
apiVersion: kubeloop.io/v1alpha1
kind: ModelDeployment
metadata: {name: iris-live}
spec:
  model: {fromTrainingJob: {name: iris-v1}}
  replicas: 2
  resources: {cpu: 100m, memory: 256Mi}
  $on_real_node
---
apiVersion: kubeloop.io/v1alpha1
kind: DriftMonitor
metadata: {name: iris-live-drift}
spec:
  modelDeployment: iris-live
  method: psi
  interval: 3s
  minSamples: 200
  onDrift:
    promote: true
    retrain:
      cooldown: 1h
      template:
        image: ghcr.io/kubeloop/kubeloop:0.1.0
        command: ["python", "/opt/kubeloop/examples/train/train.py"]
        dataset: {uri: "pvc://models/data/iris.csv"}
        output: {uri: "pvc://models/{trainingJob}"}
        $on_real_node
YAML
echo "Training iris-v1 in a real pod, then serving it from two real pods"
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s tj/iris-v1 >/dev/null
k logs -n "$ns" -l kubeloop.io/training-job=iris-v1 --tail=1
k wait -n "$ns" --for=condition=Ready --timeout=300s mdep/iris-live >/dev/null
k get pods -n "$ns" -l kubeloop.io/model-deployment=iris-live -o wide
url="http://$(k get svc iris-live -n "$ns" -o jsonpath='{.spec.clusterIP}'):8080"
# The monitor counts from its first scrape of the pods on: wait for that baseline (or
# for a new one, on a new model's reference) before sending traffic.
window_of() { k get dm iris-live-drift -n "$ns" -o jsonpath='{.status.window.reference}'; }
wait_window() {  # wait_window [OLD_REFERENCE]
  for _ in $(seq 120); do
    w="$(window_of)"; [[ -n "$w" && "$w" != "${1:-}" ]] && return 0; sleep 1
  done
  echo "no baseline from the monitor in 120s" >&2; return 1
}
show_dm() {
  k get dm iris-live-drift -n "$ns" -o jsonpath='{.status.phase}: {.status.message}{"\n"}{range .status.features[*]}  {.name}: {.score} drifted={.drifted}{"\n"}{end}'
}
wait_window
echo; echo "Traffic like the training data, through the Service at $url:"
.venv/bin/python hack/demo_traffic.py "$url" iris-live 300 0
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Healthy --timeout=120s dm/iris-live-drift >/dev/null
show_dm
first_window="$(window_of)"
echo; echo "The world changes: the pipeline writes data shifted by 2 standard deviations,"
echo "and traffic moves with it:"
.venv/bin/python examples/train/make_data.py "$models/data/iris.csv" --shift 2
chown -R 10001:10001 "$models"
old_pods="$(k get pods -n "$ns" -l kubeloop.io/model-deployment=iris-live -o name)"
shifted=$(date +%s)
.venv/bin/python hack/demo_traffic.py "$url" iris-live 300 2
k wait -n "$ns" --for=jsonpath='{.status.drifted}'=true --timeout=120s dm/iris-live-drift >/dev/null
show_dm
k wait -n "$ns" --for=create --timeout=60s tj/iris-live-drift-retrain-1 >/dev/null
echo; echo "The monitor created a TrainingJob from its template; it trains in a real pod:"
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s tj/iris-live-drift-retrain-1 >/dev/null
k get tj -n "$ns" iris-live-drift-retrain-1
k wait -n "$ns" --for=jsonpath='{.status.lastRetrain.result}'=Promoted --timeout=120s dm/iris-live-drift >/dev/null
echo; echo "Retrained and promoted: the ModelDeployment now serves"
k get mdep iris-live -n "$ns" -o jsonpath='  spec.model.uri = {.spec.model.uri}{"\n"}'
k rollout status -n "$ns" deployment/iris-live --timeout=300s >/dev/null
# shellcheck disable=SC2086
k wait -n "$ns" --for=delete --timeout=120s $old_pods >/dev/null 2>&1 || true
k wait -n "$ns" --for=condition=Ready --timeout=300s mdep/iris-live >/dev/null
echo "The old model's pods are gone $(( $(date +%s) - shifted ))s after the first shifted request:"
k get pods -n "$ns" -l kubeloop.io/model-deployment=iris-live \
  -o 'custom-columns=POD:.metadata.name,MODEL:.metadata.annotations.kubeloop\.io/model-uri,PHASE:.status.phase'
wait_window "$first_window"
echo; echo "The same shifted traffic against the new model and its own reference:"
.venv/bin/python hack/demo_traffic.py "$url" iris-live 300 2
k wait -n "$ns" --for=jsonpath='{.status.phase}'=Healthy --timeout=120s dm/iris-live-drift >/dev/null
show_dm
echo; echo "Events on dm/iris-live-drift:"
k get events -n "$ns" --field-selector involvedObject.name=iris-live-drift \
  --sort-by=.lastTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
step "kubectl get kubeloop -n $ns"
k get kubeloop -n "$ns"
echo
echo "(The examples/ objects run on kwok's simulated nodes. dm/iris-drift waits: its"
echo " reference is read from iris's pods, which are simulated and serve nothing.)"
