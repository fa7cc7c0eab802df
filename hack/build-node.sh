#!/usr/bin/env bash
# Builds what the real node runs beside kubelet and kube-proxy (those two come from
# hack/build-controlplane.sh, in the Kubernetes wrapper module):
#   containerd v2 (github.com/containerd/containerd/v2), runc (cgo, libseccomp),
#   CoreDNS (github.com/coredns/coredns, only the plugins a cluster DNS needs),
#   metrics-server (sigs.k8s.io/metrics-server), a static pause binary (gcc).
# CNI plugins (bridge, host-local, loopback, portmap) and iptables come from Debian's
# packages, installed here when missing. Binaries are cached per version in
# $KUBELOOP_CACHE/bin. Prints the bin directory on the last line of stdout.
#   hack/build-node.sh [--packages]   (--packages: only the Debian packages, which
#   hack/build-image.sh needs too; `make` runs that first so the two never race on apt)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
log_tag=build-node
# shellcheck source=lib.sh
source "$here/lib.sh"

debian_packages() {
  local wanted=(containernetworking-plugins iptables libseccomp-dev debootstrap umoci
                conntrack iproute2 pkg-config)
  local missing=() p
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} == 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) != 0 ]]; then
    echo "run as root, or install: ${missing[*]}" >&2
    return 1
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

build_containerd() {
  local v="$CONTAINERD_VERSION" c
  [[ -x "$bin/containerd-$v" && -x "$bin/containerd-shim-runc-v2-$v" && -x "$bin/ctr-$v" ]] \
    && return 0
  log "building containerd $v"
  local dir; dir="$(wrapper containerd)"
  (cd "$dir" && go get "github.com/containerd/containerd/v2/cmd/containerd@$v" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$v" \
    "github.com/containerd/containerd/v2/cmd/ctr@$v" >&2)
  for c in containerd containerd-shim-runc-v2 ctr; do
    (cd "$dir" && CGO_ENABLED=0 go build -tags "no_btrfs no_devmapper no_zfs no_cri_dockershim" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$v" \
      -o "$bin/$c-$v.tmp" "github.com/containerd/containerd/v2/cmd/$c" >&2)
    mv "$bin/$c-$v.tmp" "$bin/$c-$v"
  done
}

build_runc() {
  local v="$RUNC_VERSION"
  [[ -x "$bin/runc-$v" ]] && return 0
  log "building runc $v"
  local dir; dir="$(wrapper runc)"
  (cd "$dir" && go get "github.com/opencontainers/runc@$v" >&2 \
    && CGO_ENABLED=1 go build -tags seccomp -ldflags "-s -w -X main.version=${v#v}" \
      -o "$bin/runc-$v.tmp" github.com/opencontainers/runc >&2)
  mv "$bin/runc-$v.tmp" "$bin/runc-$v"
}

build_coredns() {
  local v="$COREDNS_VERSION"
  [[ -x "$bin/coredns-$v" ]] && return 0
  log "building coredns $v (cluster-DNS plugins only)"
  local dir; dir="$(wrapper coredns)"
  # CoreDNS's documented way to pick plugins: a main that imports them and sets the
  # directive order. No cloud back ends, so the build stays small.
  cat > "$dir/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "log", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
  (cd "$dir" && go get "github.com/coredns/coredns@$v" >&2 && go mod tidy >&2 \
    && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$bin/coredns-$v.tmp" . >&2)
  mv "$bin/coredns-$v.tmp" "$bin/coredns-$v"
}

build_metrics_server() {
  local v="$METRICS_SERVER_VERSION"
  [[ -x "$bin/metrics-server-$v" ]] && return 0
  log "building metrics-server $v"
  local dir; dir="$(wrapper metrics-server)"
  (cd "$dir" && go get "sigs.k8s.io/metrics-server/cmd/metrics-server@$v" >&2 \
    && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$bin/metrics-server-$v.tmp" \
      sigs.k8s.io/metrics-server/cmd/metrics-server >&2)
  mv "$bin/metrics-server-$v.tmp" "$bin/metrics-server-$v"
}

build_pause() {
  local out="$bin/pause-static"
  [[ -x "$out" ]] && return 0
  log "building the pause binary"
  gcc -static -O2 -o "$out.tmp" "$here/pause.c"
  mv "$out.tmp" "$out"
}

start=$(date +%s)
debian_packages
if [[ "${1:-}" == --packages ]]; then
  echo "$bin"
  exit 0
fi
build_pause
build_runc
build_containerd
build_metrics_server
build_coredns
log "done in $(( $(date +%s) - start ))s"
echo "$bin"
