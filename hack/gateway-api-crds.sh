#!/usr/bin/env bash
# Prints the path of a directory holding the Gateway API standard channel CRDs
# (config/crd/standard of sigs.k8s.io/gateway-api at GATEWAY_API_VERSION), for
# `kubectl apply -f DIR`. tests/integration/test_route_crds.py applies them to check the
# HTTPRoute that operator/kubeloop/render/route.py renders against the real schema.
# The module is fetched once through the Go module proxy (`go mod download`, run in a
# temp dir outside any module, so nothing is written into the repo) and its CRD files
# are copied to $KUBELOOP_CACHE/gateway-api-$GATEWAY_API_VERSION (default cache
# ~/.cache/kubeloop); later calls print that directory without running go.
# Only CustomResourceDefinitions are copied: the channel's ValidatingAdmissionPolicy
# (vap_safeupgrades) is left out, it is cluster policy, not schema.
# Prints the directory's path on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
log_tag=gateway-api-crds
# shellcheck source=lib.sh
source "$here/lib.sh"

: "${GATEWAY_API_VERSION:?GATEWAY_API_VERSION is not set in hack/versions.env}"
module="sigs.k8s.io/gateway-api"
out="$cache/gateway-api-$GATEWAY_API_VERSION"
required=(gatewayclasses gateways httproutes)

complete() {  # the directory holds at least the CRDs the tests need
  local kind
  for kind in "${required[@]}"; do
    [[ -s "$out/gateway.networking.k8s.io_$kind.yaml" ]] || return 1
  done
}

# Reads `go mod download -json` on stdin; prints the module's Dir, or, where go would not
# extract it (e.g. its go directive is newer than this toolchain), extracts
# config/crd/standard from the downloaded Zip into $1 and prints $1.
module_dir() {
  python3 -c '
import json, sys, zipfile
info = json.load(sys.stdin)
if info.get("Dir"):
    print(info["Dir"])
    sys.exit(0)
if not info.get("Zip"):
    sys.exit("go mod download: " + info.get("Error", "no Dir and no Zip"))
prefix = info["Path"] + "@" + info["Version"] + "/"
with zipfile.ZipFile(info["Zip"]) as z:
    for member in z.namelist():
        if member.startswith(prefix + "config/crd/standard/"):
            z.extract(member, sys.argv[1])
print(sys.argv[1] + "/" + prefix.rstrip("/"))
' "$1"
}

fetch_crds() {
  complete && return 0
  # One fetch at a time (two test runs may start together).
  if command -v flock >/dev/null; then
    exec 9>"$cache/.gateway-api.lock"
    flock 9
    complete && return 0
  fi
  command -v go >/dev/null || { log "go is not on PATH: cannot fetch $module"; return 1; }
  command -v python3 >/dev/null || { log "python3 is not on PATH"; return 1; }
  log "fetching $module@$GATEWAY_API_VERSION through the Go module proxy"
  local tmp info dir src f n=0
  tmp="$(mktemp -d "$cache/.gateway-api-XXXXXX")"
  # shellcheck disable=SC2064  # expand $tmp now
  trap "rm -rf '$tmp'" EXIT
  mkdir "$tmp/mod" "$tmp/zip" "$tmp/crds"
  # Outside any module and workspace: go touches only its module cache. A failure with a
  # verified Zip (go refuses to extract a module whose go directive is newer than this
  # toolchain) goes on with the Zip; any other failure stops here.
  info="$(cd "$tmp/mod" && GOFLAGS=-mod=mod GOWORK=off GO111MODULE=on \
    go mod download -json "$module@$GATEWAY_API_VERSION")" || {
    grep -q '"Zip":' <<<"$info" || { log "go mod download failed: $info"; return 1; }
    log "go would not extract the module, reading its Zip: $info"
  }
  dir="$(module_dir "$tmp/zip" <<<"$info")"
  src="$dir/config/crd/standard"
  [[ -d "$src" ]] || { log "no config/crd/standard in $dir"; return 1; }
  for f in "$src"/*.yaml; do
    if grep -q '^kind: CustomResourceDefinition$' "$f"; then
      cp "$f" "$tmp/crds/"
      chmod u+w "$tmp/crds/$(basename "$f")"
      n=$((n + 1))
    fi
  done
  rm -rf "$out"
  mv "$tmp/crds" "$out"
  complete || { log "$out lacks one of: ${required[*]}"; return 1; }
  log "$n CRDs in $out"
}

fetch_crds
echo "$out"
