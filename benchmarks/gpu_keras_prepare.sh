#!/usr/bin/env bash
# Wheels for benchmarks/gpu_keras.py on an offline GPU image that has JAX (or PyTorch),
# numpy, h5py, absl-py and ml-dtypes but no TensorFlow and no keras. Run it on a machine with
# the package index; copy the folder and this checkout to the GPU machine; there:
#
#   bash benchmarks/gpu_keras_prepare.sh wheels/            # here, online (PYTHON_VERSION=3.11
#                                                           # PLATFORM=manylinux2014_x86_64)
#   python -m pip install --no-index --no-deps wheels/*.whl # there, offline, in seconds
#   python benchmarks/gpu_keras.py                          # there, <= 10 min on one GPU
#
# Downloaded with --no-deps: keras and each dependency of it that such an image lacks (pure
# Python but for optree, fetched for the target's Python and platform), plus absl-py, h5py
# and ml-dtypes, which most such images already have (pip keeps the installed ones when
# their versions satisfy keras; remove those wheels from the folder to be sure).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:?usage: gpu_keras_prepare.sh DEST_FOLDER}"
PYTHON="${PYTHON:-python3}"
PYTHON_VERSION="${PYTHON_VERSION:-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
PLATFORM="${PLATFORM:-manylinux2014_x86_64}"
KERAS="${KERAS:-keras==3.15.1}"
mkdir -p "$DEST"
download() {
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$PYTHON_VERSION" --platform "$PLATFORM" -d "$DEST" "$@"
}
download "$KERAS" namex rich markdown-it-py mdurl pygments packaging typing-extensions
download "optree>=0.13"
download absl-py h5py ml-dtypes
# lgd_tf itself (the layers and models the benchmark builds), without its TensorFlow extras.
"$PYTHON" -m pip wheel --quiet --no-deps -w "$DEST" .
ls -1 "$DEST"
du -sh "$DEST"
