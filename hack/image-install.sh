#!/bin/sh
# The install steps of the container image (Dockerfile, build stage), kept in one place
# so that a test can run exactly them in a fresh virtual environment.
#   hack/image-install.sh PREFIX SRC
set -eu
prefix="$1"
src="${2:-.}"
python3 -m venv "$prefix"
"$prefix/bin/pip" install --no-cache-dir --disable-pip-version-check -q --upgrade pip
"$prefix/bin/pip" install --no-cache-dir --disable-pip-version-check -q "$src[serve]"
# Every example script (train.py, ddp.py, make_data.py): the docs run them in the image.
mkdir -p "$prefix/examples/train"
cp "$src"/examples/train/*.py "$prefix/examples/train/"
"$prefix/bin/kubeloop" version
