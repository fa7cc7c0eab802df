#!/usr/bin/env bash
# Batch scoring benchmark: Kubeloop's scorer vs scikit-learn's predict (the ceiling) vs
# Ray Data map_batches vs Spark predict_batch_udf, same model, same Parquet dataset.
# Ray and Spark live in their own virtualenvs under ~/.cache/kubeloop/bench/ (one per
# version), with the project's scikit-learn and NumPy versions so that they load the same
# joblib model; their dependencies never touch the project's.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${repo}/.venv/bin/python}"
cache="${KUBELOOP_CACHE:-${HOME}/.cache/kubeloop}/bench"
ray_version="2.60.0"
spark_version="4.3.0"

# Re-rendering the README section from the results file runs nothing.
for arg in "$@"; do
  if [[ "${arg}" == "--render-only" ]]; then
    exec "${python}" "${repo}/bench/batch_bench.py" "$@"
  fi
done

# The model is pickled by the project's scikit-learn: every contender loads it with the same.
pins="$("${python}" -c 'import sklearn, numpy, joblib, pyarrow; print(f"scikit-learn=={sklearn.__version__} numpy=={numpy.__version__} joblib=={joblib.__version__} pyarrow=={pyarrow.__version__}")')"

# A virtualenv per contender and version, made once: .installed marks a finished install.
make_venv() {  # name, packages...
  local dir="${cache}/$1"
  shift
  if [[ -f "${dir}/.installed" ]]; then
    return
  fi
  echo "creating ${dir} ($* ${pins})" >&2
  rm -rf "${dir}"
  mkdir -p "${cache}"
  python3 -m venv "${dir}"
  # shellcheck disable=SC2086 # pins: several requirements
  "${dir}/bin/pip" install --quiet --disable-pip-version-check "$@" ${pins}
  touch "${dir}/.installed"
}

make_venv "venv-ray-${ray_version}" "ray[data]==${ray_version}"
make_venv "venv-spark-${spark_version}" "pyspark==${spark_version}" "pandas"

exec "${python}" "${repo}/bench/batch_bench.py" \
  --ray-python "${cache}/venv-ray-${ray_version}/bin/python" \
  --spark-python "${cache}/venv-spark-${spark_version}/bin/python" "$@"
