#!/usr/bin/env bash
# Builds Kueue's controller manager (sigs.k8s.io/kueue cmd/kueue, at KUEUE_VERSION from
# hack/versions.env) from Go modules through the module proxy (hack/build-release.sh).
# hack/kueue.py installs its CRDs and runs it against the local control plane, where
# tests/integration/test_kueue.py has it admit TrainingJobs.
#
# The binary is cached per version as $KUBELOOP_CACHE/bin/kueue-<version> (default
# ~/.cache/kubeloop), so only a new machine pays for the build.
# Prints the binary's path on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
version="${KUEUE_VERSION:?}"
exec bash "$here/build-release.sh" sigs.k8s.io/kueue "$version" sigs.k8s.io/kueue/cmd/kueue kueue
