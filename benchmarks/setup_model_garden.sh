#!/usr/bin/env bash
# Builds a separate virtual environment with TF Model Garden (tf-models-official) on Keras 2
# (tf_keras), for the side-by-side ResNet3D-50 figure of benchmarks/model_throughput.py.
# Model Garden cannot share a process with Keras 3, so model_throughput.py runs it in a
# subprocess with this venv's python and TF_USE_LEGACY_KERAS=1.
#
#   bash benchmarks/setup_model_garden.sh [VENV_DIR]      # default: ~/.venvs/model_garden
#   python benchmarks/model_throughput.py --model_garden_python=VENV_DIR/bin/python
#
# PYTHON selects the interpreter the venv is made from (default: python3; 3.10-3.13).
set -euo pipefail
VENV_DIR="${1:-$HOME/.venvs/model_garden}"
PYTHON="${PYTHON:-python3}"
TF_VERSION="${TF_VERSION:-2.21.0}"

"$PYTHON" -m venv "$VENV_DIR"
PIP=("$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
# The CPU wheel is enough here; on a GPU machine set TF_PACKAGE=tensorflow[and-cuda].
"${PIP[@]}" "${TF_PACKAGE:-tensorflow-cpu}==$TF_VERSION" "tf-keras==$TF_VERSION"
# --no-deps: its pinned requirements would pull another TensorFlow / Keras over the ones above.
"${PIP[@]}" --no-deps tf-models-official
# What `import official.vision` needs, without TensorFlow pins of their own.
"${PIP[@]}" --no-deps tensorflow-model-optimization tensorflow-datasets tf_slim
"${PIP[@]}" immutabledict dm-tree pycocotools pyyaml gin-config opencv-python-headless \
    pillow matplotlib scipy pandas absl-py etils promise tqdm requests termcolor toml \
    psutil wrapt array-record simple-parsing sentencepiece seqeval
TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 "$VENV_DIR/bin/python" - <<'PY'
import tensorflow as tf
from official.vision.configs import video_classification  # noqa: F401
from official.vision.modeling import factory_3d  # noqa: F401
import tf_keras
print(f"Model Garden ready: TensorFlow {tf.__version__}, tf_keras {tf_keras.__version__}")
PY
echo "python: $VENV_DIR/bin/python"
