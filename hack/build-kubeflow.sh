#!/usr/bin/env bash
# Builds the Kubeflow Training Operator v1 (github.com/kubeflow/training-operator,
# cmd/training-operator.v1: the PyTorchJob controller and its siblings) from Go modules
# through the module proxy (hack/build-release.sh). It is the comparison point of the
# PyTorchJob benchmark; hack/kubeflow.py installs its CRD and runs it against the local
# control plane.
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
exec bash "$(dirname "${BASH_SOURCE[0]}")/build-release.sh" \
  "$module" "$version" "$module/cmd/training-operator.v1" training-operator
