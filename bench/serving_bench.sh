#!/usr/bin/env bash
# Model server benchmark: `kubeloop serve` vs MLServer on the same model and protocol.
# MLServer lives in its own virtualenv, with the project's scikit-learn version so that
# both servers unpickle the very same model file, and with uvicorn[standard]: MLServer's
# REST server is uvicorn with its automatic choices, which take httptools (the C HTTP
# parser) and uvloop when they are installed (uvicorn.org/installation); `pip install
# mlserver` alone brings uvloop but not httptools, so uvicorn would parse HTTP with h11
# (pure Python). serving_bench.py checks in each server process which parser and event
# loop are loaded, and records them. wrk comes from Debian (apt-get install wrk);
# the gRPC load generator is built from bench/grpcload with Go (bench/build-grpcload.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${repo}/.venv/bin/python}"
mlserver_venv="${KUBELOOP_MLSERVER_VENV:-${HOME}/.cache/kubeloop/venv-mlserver}"
mlserver_version="1.7.1"

if ! command -v wrk >/dev/null; then
  echo "wrk is missing: apt-get install -y wrk" >&2
  exit 1
fi
if ! command -v taskset >/dev/null; then
  echo "taskset is missing: apt-get install -y util-linux" >&2
  exit 1
fi

sklearn_version="$("${python}" -c 'import sklearn; print(sklearn.__version__)')"
if ! "${mlserver_venv}/bin/python" - "${mlserver_version}" "${sklearn_version}" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
assert version("mlserver") == sys.argv[1] and version("mlserver-sklearn") == sys.argv[1]
assert version("scikit-learn") == sys.argv[2]
version("httptools"), version("uvloop")  # uvicorn[standard]'s C parser and event loop
EOF
then
  echo "setting up ${mlserver_venv} (mlserver ${mlserver_version}, uvicorn[standard]," \
    "scikit-learn ${sklearn_version})" >&2
  [[ -x "${mlserver_venv}/bin/pip" ]] || python3 -m venv "${mlserver_venv}"
  "${mlserver_venv}/bin/pip" install --quiet "mlserver==${mlserver_version}" \
    "mlserver-sklearn==${mlserver_version}" "scikit-learn==${sklearn_version}" "uvicorn[standard]"
fi

grpcload="$(bash "${repo}/bench/build-grpcload.sh" | tail -n1)"

exec "${python}" "${repo}/bench/serving_bench.py" --mlserver "${mlserver_venv}/bin/mlserver" \
  --grpcload "${grpcload}" "$@"
