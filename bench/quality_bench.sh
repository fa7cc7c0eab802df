#!/usr/bin/env bash
# Model quality benchmark (issue 23): Kubeloop vs NannyML CBPE (estimated accuracy) and
# Evidently's DataDriftPreset (false alarms, detection delay); renders the Model quality
# section of bench/README.md. Each contender lives in its own virtualenv, one per
# version, so that its dependencies never touch the project's.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${repo}/.venv/bin/python}"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}/bench"
NANNYML_VERSION=0.13.1
EVIDENTLY_VERSION=0.7.23

# Re-rendering the README section from the results file runs nothing.
for arg in "$@"; do
  if [[ "${arg}" == "--render-only" ]]; then
    exec "${python}" "${repo}/bench/quality_bench.py" "$@"
  fi
done

# venv DIR MODULE PIP-ARGS...: create DIR and install into it unless MODULE imports.
venv() {
  local dir="$1" module="$2"
  shift 2
  if [[ -x "${dir}/bin/python" ]] && "${dir}/bin/python" -c "import ${module}" 2>/dev/null; then
    return
  fi
  echo "creating ${dir} ($*)" >&2
  python3 -m venv "${dir}"
  "${dir}/bin/pip" install --quiet "$@"
}

# nannyml 0.13.1 imports statsmodels without requiring it, and allows pandas 3, which
# it does not run on: both pinned here.
nannyml="${cache}/nannyml-${NANNYML_VERSION}"
venv "${nannyml}" nannyml "nannyml==${NANNYML_VERSION}" "pandas==2.3.3" "statsmodels==0.15.0"
evidently="${cache}/evidently-${EVIDENTLY_VERSION}"
venv "${evidently}" evidently "evidently==${EVIDENTLY_VERSION}" "pandas==2.3.3"

exec "${python}" "${repo}/bench/quality_bench.py" \
  --nannyml-python "${nannyml}/bin/python" --evidently-python "${evidently}/bin/python" "$@"
