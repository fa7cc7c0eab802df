#!/usr/bin/env bash
# Builds one command of a released Go module from the module proxy, in its own small
# wrapper module, like hack/build-controlplane.sh:
#
#   bash hack/build-release.sh MODULE VERSION PACKAGE NAME
#   e.g. bash hack/build-release.sh sigs.k8s.io/kueue v0.17.0 sigs.k8s.io/kueue/cmd/kueue kueue
#
# The binary is cached per version as $KUBELOOP_CACHE/bin/NAME-VERSION (default
# ~/.cache/kubeloop), so only a new machine pays for the build. The release's own replace
# directives are carried into the wrapper (Go ignores a dependency's), and a newer Go
# toolchain than this one is fetched through the proxy when the release asks for it.
# Prints the binary's path on the last line of stdout.
set -euo pipefail

[[ $# -eq 4 ]] || { echo "usage: $0 MODULE VERSION PACKAGE NAME" >&2; exit 2; }
module="$1" version="$2" pkg="$3" name="$4"
cache="${KUBELOOP_CACHE:-$HOME/.cache/kubeloop}"
bin="$cache/bin"
out="$bin/$name-$version"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

log() { echo "[build-$name] $*" >&2; }

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$bin" "$cache/src"
# One build at a time (two test runs may start together); the wrapper dir is shared.
if command -v flock >/dev/null; then
  exec 9>"$bin/.$name.lock"
  flock 9
  if [[ -x "$out" ]]; then
    echo "$out"
    exit 0
  fi
fi

start=$(date +%s)
log "building $pkg@$version"
dir="$cache/src/$name"
rm -rf "$dir" && mkdir -p "$dir"
cd "$dir"
go mod init "kubeloop.io/hack/$name" >/dev/null 2>&1

# A dependency's replace directives are ignored by Go; carry the release's own ones
# (module => module version) into the wrapper so it builds what the release builds.
# A replace onto a local directory cannot be honoured from the module proxy.
# Its go.mod comes even when the release needs a newer Go than this one (the download
# then says so in "Error" and exits 1; the toolchain is chosen below).
gomod="$( (go mod download -json "$module@$version" || true) |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
go mod edit -json "$gomod" | MODULE="$module" python3 -c '
import json, os, sys
module = os.environ["MODULE"]
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    lhs = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    rhs = new["Path"] + ("@" + new["Version"] if new.get("Version") else "")
    if not new.get("Version"):
        if old["Path"].startswith(module + "/"):
            # The release'"'"'s own nested module (e.g. its ./api): the published one at
            # the version the release requires stands in for the directory.
            continue
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
