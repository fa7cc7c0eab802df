#!/usr/bin/env bash
# Builds the kubeloop image (operator, model server, fetch-model init container) with
# no Docker engine, as an OCI archive that containerd imports:
#   1. a Debian bookworm base with Python (debootstrap from the machine's own apt
#      sources), cached per release and package list;
#   2. the project's wheels built here (`pip wheel .[serve]`) and installed into the
#      base by the Dockerfile's own install script, hack/image-install.sh, offline;
#      cached per pyproject.toml, so a change of the code alone skips it;
#   3. this checkout's kubeloop wheel over it, and the Dockerfile's runtime settings
#      (UID 10001, PATH, entry point) by umoci.
# The Dockerfile stays the description of the image; this script is the one place that
# differs from it: the base is debootstrap's bookworm Python (3.11, like python:3.11-slim)
# instead of the python:3.11-slim image, which cannot be pulled here.
# Each stage is cached per content hash of what goes into it; prints the archive's path.
#   hack/build-image.sh [--import]   (--import: also load it into the local cluster)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cache="${KUBELOOP_CACHE:-$HOME/.cache/kubeloop}"
images="$cache/images"
mkdir -p "$images"
image_name="${KUBELOOP_IMAGE:-ghcr.io/kubeloop/kubeloop:0.1.0}"
base_packages="python3,python3-venv,ca-certificates"
log() { echo "[build-image] $*" >&2; }

base_key="bookworm-$(echo "$base_packages" | sha256sum | cut -c1-12)"
base="$images/base-$base_key.tar"
if [[ ! -f "$base" ]]; then
  command -v debootstrap >/dev/null || bash "$here/build-node.sh" --packages >/dev/null
  mirror="$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources \
            2>/dev/null || true)"
  [[ -n "$mirror" ]] || mirror="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)"
  log "debootstrap bookworm ($base_packages)"
  start=$(date +%s)
  work="$(mktemp -d)"
  debootstrap --variant=minbase --include="$base_packages" bookworm "$work/rootfs" "$mirror" \
    >"$images/debootstrap.log" 2>&1 || { tail -20 "$images/debootstrap.log" >&2; exit 1; }
  # What a runtime image never uses: package caches, docs, man pages, locales.
  rm -rf "$work/rootfs"/var/cache/apt/* "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* \
    "$work/rootfs"/usr/share/locale/* "$work/rootfs"/var/log/*
  tar -C "$work/rootfs" -cf "$base.tmp" .
  rm -rf "$work"
  mv "$base.tmp" "$base"
  log "base built in $(( $(date +%s) - start ))s"
fi

# Stage 2, cached per pyproject.toml and install script: the Dockerfile's install step
# (hack/image-install.sh) in the base, from wheels built here, offline in the chroot.
hash_of() { (cd "$root" && find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' \
             -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }
deps_key="$(echo "$base_key $(hash_of pyproject.toml hack/image-install.sh)" | sha256sum | cut -c1-16)"
deps="$images/deps-$deps_key.tar"
copy_source() {  # copy_source ROOTFS: what hack/image-install.sh reads, under /src
  mkdir -p "$1/src/examples" "$1/src/hack"
  cp -r "$root/pyproject.toml" "$root/README.md" "$root/operator" "$1/src/"
  cp -r "$root/examples/train" "$1/src/examples/"
  cp "$root/hack/image-install.sh" "$1/src/hack/"
  find "$1/src" -name '__pycache__' -prune -exec rm -rf {} +
}
if [[ ! -f "$deps" ]]; then
  start=$(date +%s)
  work="$(mktemp -d)"
  log "wheels of kubeloop[serve] and its dependencies"
  python3 -m pip wheel -q --disable-pip-version-check -w "$work/wheels" "$root[serve]" pip \
    "setuptools>=77" wheel >&2
  mkdir -p "$work/rootfs"
  tar -C "$work/rootfs" -xf "$base"
  copy_source "$work/rootfs"
  cp -r "$work/wheels" "$work/rootfs/wheels"
  log "hack/image-install.sh in the base, from the wheels only"
  chroot "$work/rootfs" env -i PATH=/usr/bin:/bin HOME=/root \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels sh /src/hack/image-install.sh /opt/kubeloop /src >&2
  rm -rf "$work/rootfs/src" "$work/rootfs/wheels" "$work/rootfs/root/.cache"
  find "$work/rootfs/opt/kubeloop" -name '__pycache__' -prune -exec rm -rf {} +
  # The Dockerfile's runtime stage: the kubeloop user and group.
  echo "kubeloop:x:10001:10001::/nonexistent:/usr/sbin/nologin" >> "$work/rootfs/etc/passwd"
  echo "kubeloop:x:10001:" >> "$work/rootfs/etc/group"
  tar -C "$work/rootfs" -cf "$deps.tmp" .
  rm -rf "$work"
  mv "$deps.tmp" "$deps"
  log "dependencies installed in $(( $(date +%s) - start ))s"
fi

# Stage 3, cached per project source: this checkout of kubeloop over stage 2 (no
# dependency changes, so no network and no resolver), then the image by umoci.
key="$(echo "$deps_key $(hash_of pyproject.toml README.md operator examples/train \
       hack/build-image.sh)" | sha256sum | cut -c1-16)"
archive="$images/kubeloop-$key.tar"
if [[ ! -f "$archive" ]]; then
  start=$(date +%s)
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/rootfs"
  tar -C "$work/rootfs" -xf "$deps"
  python3 -m pip wheel -q --disable-pip-version-check --no-deps \
    -w "$work/wheels" "$root" >&2
  cp -r "$work/wheels" "$work/rootfs/wheels"
  wheel="$(basename "$work"/wheels/kubeloop-*.whl)"
  chroot "$work/rootfs" /opt/kubeloop/bin/pip install -q --disable-pip-version-check \
    --no-index --no-deps --force-reinstall --no-compile "/wheels/$wheel" >&2
  cp "$root"/examples/train/*.py "$work/rootfs/opt/kubeloop/examples/train/"
  chroot "$work/rootfs" /opt/kubeloop/bin/kubeloop version >&2
  rm -rf "$work/rootfs/wheels" "$work/rootfs/root/.cache"
  find "$work/rootfs/opt/kubeloop" -name '__pycache__' -prune -exec rm -rf {} +
  # Nothing of the build machine: the kubelet mounts a pod's own resolv.conf and hostname.
  : > "$work/rootfs/etc/resolv.conf"
  : > "$work/rootfs/etc/hostname"
  log "OCI image with umoci"
  layout="$work/oci"
  umoci init --layout "$layout"
  umoci new --image "$layout:build"
  umoci unpack --image "$layout:build" "$work/bundle" >/dev/null
  rm -rf "$work/bundle/rootfs"
  mv "$work/rootfs" "$work/bundle/rootfs"
  umoci repack --image "$layout:build" "$work/bundle"
  umoci config --image "$layout:build" --tag "${image_name##*:}" \
    --config.user 10001:10001 --config.workingdir / \
    --config.env PATH=/opt/kubeloop/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env PYTHONUNBUFFERED=1 --config.env PYTHONDONTWRITEBYTECODE=1 \
    --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
    --config.entrypoint kubeloop --config.cmd run
  umoci rm --image "$layout:build"
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$archive.tmp" .
  mv "$archive.tmp" "$archive"
  log "image built in $(( $(date +%s) - start ))s: $(du -h "$archive" | cut -f1) compressed"
fi

if [[ "${1:-}" == "--import" ]]; then
  python3 "$here/cluster.py" import-image "$archive" "$image_name" >&2
fi
echo "$archive"
