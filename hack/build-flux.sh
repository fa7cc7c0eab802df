#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller (the versions in
# hack/versions.env) from Go modules through the module proxy (hack/build-release.sh),
# cached per version as $KUBELOOP_CACHE/bin/flux-{source,kustomize}-controller-<version>.
# The build runs under `nice`: it is long on a small machine and must not starve a
# cluster running beside it. Prints the two binaries' paths, one a line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
for name in source-controller kustomize-controller; do
  var="FLUX_${name%-controller}_CONTROLLER_VERSION"
  var="${var^^}"
  version="${!var:?}"
  module="github.com/fluxcd/$name"
  nice -n 10 bash "$here/build-release.sh" "$module" "$version" "$module" "flux-$name" | tail -n1
done
