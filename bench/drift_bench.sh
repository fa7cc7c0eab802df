#!/usr/bin/env bash
# Drift statistics benchmark: Kubeloop vs per-feature SciPy vs Evidently, all features,
# median of 3 runs each; renders the Drift statistics section of bench/README.md.
# Evidently lives in its own virtualenv so its dependencies never touch the project's.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
evidently_venv="${KUBELOOP_EVIDENTLY_VENV:-${HOME}/.cache/kubeloop/venv-evidently}"
python="${PYTHON:-${repo}/.venv/bin/python}"

# Re-rendering the README section from the results file runs nothing: no Evidently needed.
for arg in "$@"; do
  if [[ "${arg}" == "--render-only" ]]; then
    exec "${python}" "${repo}/bench/drift_bench.py" "$@"
  fi
done

if [[ ! -x "${evidently_venv}/bin/python" ]] \
    || ! "${evidently_venv}/bin/python" -c "import evidently" 2>/dev/null; then
  echo "creating ${evidently_venv} (evidently==0.7.23)" >&2
  python3 -m venv "${evidently_venv}"
  "${evidently_venv}/bin/pip" install --quiet "evidently==0.7.23" "pandas<3"
fi

exec "${python}" "${repo}/bench/drift_bench.py" --evidently-python "${evidently_venv}/bin/python" "$@"
