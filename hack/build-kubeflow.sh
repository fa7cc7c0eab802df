#!/usr/bin/env bash
# Builds the Kubeflow Training Operator v1 (github.com/kubeflow/training-operator,
# cmd/training-operator.v1: the PyTorchJob controller and its siblings) from Go modules
# through the module proxy, in its own small wrapper module, like
# hack/build-controlplane.sh. It is the comparison point of the PyTorchJob benchmark;
# hack/kubeflow.py installs its CRD and runs it against the local control plane.
#
# The binary is cached per version as $KUBELOOP_CACHE/bin/training-operator-<version>
# (default ~/.cache/kubeloop), so only a new machine pays for the build.
# Prints the binary's path on the last line of stdout.
#
#   TRAINING_OPERATOR_VERSION   v1.9.4, the last v1 release (v1.9.x is not in the
#                               proxy's version list, but the proxy serves it)
set -euo pipefail

version="${TRAINING_OPERATOR_VERSION:-v1.9.4}"
module=github.com/kubeflow/training-operator
pkg="$module/cmd/training-operator.v1"
cache="${KUBELOOP_CACHE:-$HOME/.cache/kubeloop}"
bin="$cache/bin"
out="$bin/training-operator-$version"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

log() { echo "[build-kubeflow] $*" >&2; }

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi

start=$(date +%s)
log "building $pkg@$version"
mkdir -p "$bin" "$cache/src"
dir="$cache/src/training-operator"
rm -rf "$dir" && mkdir -p "$dir"
cd "$dir"
go mod init kubeloop.io/hack/training-operator >/dev/null 2>&1

# A dependency's replace directives are ignored by Go; carry the release's own ones
# (module => module version) into the wrapper so it builds what the release builds.
# A replace onto a local directory cannot be honoured from the module proxy.
gomod="$(go mod download -json "$module@$version" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    lhs = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    rhs = new["Path"] + ("@" + new["Version"] if new.get("Version") else "")
    if not new.get("Version"):
        sys.exit("replace " + lhs + " => " + rhs + ": a local directory")
    print("-replace=" + lhs + "=" + rhs)
' | while read -r flag; do
  log "  go mod edit $flag"
  go mod edit "$flag"
done

# If the release asks for a newer Go than this one (GOTOOLCHAIN is `local` here), run
# that toolchain, which the module proxy serves.
need="$(go mod edit -json "$gomod" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Go", ""))')"
have="$(go env GOVERSION | sed 's/^go//')"
if [[ -n "$need" && "$(printf '%s\n%s\n' "$have" "$need" | sort -V | tail -n1)" != "$have" ]]; then
  [[ "$need" =~ ^[0-9]+\.[0-9]+$ ]] && need="$need.0"
  export GOTOOLCHAIN="go$need"
  log "  go $need needed, GOTOOLCHAIN=$GOTOOLCHAIN"
fi

# `go get` on the command package records every go.sum entry its build needs.
go get "$pkg@$version" >&2
go build -ldflags "-s -w" -o "$out.tmp" "$pkg" >&2
mv "$out.tmp" "$out"
log "done in $(($(date +%s) - start))s"
echo "$out"
