#!/usr/bin/env bash
# Builds the local control plane from Go modules through the module proxy:
#   etcd (go.etcd.io/etcd/server/v3), kube-apiserver, kube-controller-manager,
#   kube-scheduler (k8s.io/kubernetes), kwok and kwokctl (sigs.k8s.io/kwok).
# Each is built in its own small wrapper module. Binaries are cached per version in
# $KUBELOOP_CACHE (default ~/.cache/kubeloop), so only a new machine pays for a build;
# Go's module and build caches are kept where `go env` puts them.
# Prints the bin directory on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
log_tag=build-controlplane
# shellcheck source=lib.sh
source "$here/lib.sh"
export CGO_ENABLED=0

build_etcd() {
  local out="$bin/etcd-$ETCD_VERSION"
  [[ -x "$out" ]] && return 0
  log "building etcd $ETCD_VERSION"
  local dir; dir="$(wrapper etcd)"
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 \
     && go build -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3 >&2)
  mv "$out.tmp" "$out"
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" staging="v0${KUBERNETES_VERSION#v1}"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
  local pkgs=() c
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$v"); done
  local missing=0
  for c in "${cmds[@]}"; do [[ -x "$bin/$c-$v" ]] || missing=1; done
  [[ $missing == 0 ]] && return 0
  log "building kubernetes $v (staging modules at $staging)"
  local dir; dir="$(wrapper kubernetes)"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # k8s.io/kubernetes points every staging module at ./staging/...; map each one to
  # its published version instead. The list comes from the release's own go.mod.
  {
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } >> "$dir/go.mod"
  local major minor
  major="$(echo "$v" | cut -d. -f1 | tr -d v)"; minor="$(echo "$v" | cut -d. -f2)"
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z \
    -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major \
    -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  # `go get` on the command packages records every go.sum entry their builds need.
  (cd "$dir" && go get "${pkgs[@]}" >&2)
  for c in "${cmds[@]}"; do
    [[ -x "$bin/$c-$v" ]] && continue
    log "  go build $c"
    (cd "$dir" && go build -ldflags "$ldflags" -o "$bin/$c-$v.tmp" "k8s.io/kubernetes/cmd/$c" >&2)
    mv "$bin/$c-$v.tmp" "$bin/$c-$v"
  done
}

build_kwok() {
  local v="$KWOK_VERSION" c
  [[ -x "$bin/kwok-$v" && -x "$bin/kwokctl-$v" ]] && return 0
  log "building kwok $v"
  local dir; dir="$(wrapper kwok)"
  (cd "$dir" && go get "sigs.k8s.io/kwok/cmd/kwok@$v" "sigs.k8s.io/kwok/cmd/kwokctl@$v" >&2)
  for c in kwok kwokctl; do
    (cd "$dir" && go build -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v" \
      -o "$bin/$c-$v.tmp" "sigs.k8s.io/kwok/cmd/$c" >&2)
    mv "$bin/$c-$v.tmp" "$bin/$c-$v"
  done
}

start=$(date +%s)
build_etcd
build_kubernetes
build_kwok
log "done in $(( $(date +%s) - start ))s"
echo "$bin"
