# Shared by the hack/build-*.sh scripts: sourced, never run. Each script sets
# `log_tag` first; this sets `cache` and `bin` ($KUBELOOP_CACHE, default
# ~/.cache/kubeloop), the Go build flags, and the helpers below.
# shellcheck shell=bash
cache="${KUBELOOP_CACHE:-$HOME/.cache/kubeloop}"
bin="$cache/bin"
mkdir -p "$bin" "$cache/src"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"

log() { echo "[${log_tag:-hack}] $*" >&2; }

wrapper() {  # wrapper NAME -> a fresh wrapper module dir under $cache/src
  local dir="$cache/src/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init "kubeloop.io/hack/$1" >/dev/null 2>&1)
  echo "$dir"
}
