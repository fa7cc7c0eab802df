#!/usr/bin/env bash
# Builds hack/kstatus (the real kstatus library, sigs.k8s.io/cli-utils pkg/kstatus/status,
# at KSTATUS_VERSION) from Go modules through the module proxy, in a wrapper module under
# $KUBELOOP_CACHE/src. tests/unit/test_kstatus_library.py checks
# tests/kstatus.py against it.
# The binary is cached as $KUBELOOP_CACHE/bin/kstatus-$KSTATUS_VERSION (default cache
# ~/.cache/kubeloop), rebuilt only when the version or hack/kstatus/main.go changes.
# Prints the binary's path on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
log_tag=build-kstatus
# shellcheck source=lib.sh
source "$here/lib.sh"
export CGO_ENABLED=0

out="$bin/kstatus-$KSTATUS_VERSION"
src="$here/kstatus/main.go"

built() {  # the binary exists and was built from this main.go
  [[ -x "$out" && "$(cat "$out.sha256" 2>/dev/null)" == "$sum" ]]
}

build_kstatus() {
  sum="$(sha256sum "$src" | cut -d' ' -f1)"
  built && return 0
  # One build at a time (two test runs may start together); the wrapper dir is shared.
  if command -v flock >/dev/null; then
    exec 9>"$bin/.kstatus.lock"
    flock 9
    built && return 0
  fi
  command -v go >/dev/null || { log "go is not on PATH: cannot build kstatus"; return 1; }
  log "building kstatus (sigs.k8s.io/cli-utils $KSTATUS_VERSION)"
  local start dir
  start=$(date +%s)
  dir="$(wrapper kstatus)"
  cp "$src" "$dir/main.go"
  (cd "$dir" && go get "sigs.k8s.io/cli-utils@$KSTATUS_VERSION" >&2 \
     && go mod tidy >&2 \
     && go build -ldflags "-s -w" -o "$out.tmp" . >&2)
  mv "$out.tmp" "$out"
  echo "$sum" > "$out.sha256"
  log "done in $(( $(date +%s) - start ))s"
}

build_kstatus
echo "$out"
