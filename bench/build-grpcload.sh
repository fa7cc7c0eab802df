#!/usr/bin/env bash
# Builds bench/grpcload (the gRPC load generator of bench/serving_bench.py) against
# google.golang.org/grpc GRPCLOAD_GRPC_VERSION, through the Go module proxy, in a wrapper
# module under $KUBELOOP_CACHE/src. The binary is cached as
# $KUBELOOP_CACHE/bin/grpcload-<grpc version>, rebuilt only when the version or main.go
# changes. Prints the binary's path on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
hack="$here/../hack"
log_tag=build-grpcload
# shellcheck source=../hack/lib.sh
source "$hack/lib.sh"
export CGO_ENABLED=0

grpc_version="${GRPCLOAD_GRPC_VERSION:-v1.85.0}"
out="$bin/grpcload-$grpc_version"
src="$here/grpcload/main.go"
sum="$(sha256sum "$src" | cut -d' ' -f1)"

if [[ -x "$out" && "$(cat "$out.sha256" 2>/dev/null)" == "$sum" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { log "go is not on PATH: cannot build grpcload"; exit 1; }
log "building grpcload (google.golang.org/grpc $grpc_version)"
start=$(date +%s)
dir="$(wrapper grpcload)"
cp "$src" "$dir/main.go"
(cd "$dir" && go get "google.golang.org/grpc@$grpc_version" >&2 \
   && go mod tidy >&2 \
   && go build -ldflags "-s -w" -o "$out.tmp" . >&2)
mv "$out.tmp" "$out"
echo "$sum" > "$out.sha256"
log "done in $(( $(date +%s) - start ))s"
echo "$out"
