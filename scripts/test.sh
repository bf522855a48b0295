#!/usr/bin/env bash
# The whole test suite: lint, then pytest on 2 worker processes.
# Expects lgd_tf and its `test` extra installed in the active Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
python -m ruff check .
python -m pytest -n "${LGD_TEST_WORKERS:-2}" --durations=15 "$@"

# --- Keras backends: the layer and model tests marked `backends` once more under JAX (CPU),
# ~4 min on 2 cores; skipped with a line where JAX is not installed. Only with no arguments
# (a run of chosen tests stays on TensorFlow).
if [ "$#" -eq 0 ]; then
    if python -c "import jax" 2>/dev/null; then
        KERAS_BACKEND=jax JAX_PLATFORMS=cpu python -m pytest -n "${LGD_TEST_WORKERS:-2}" \
            --durations=5 -m backends tests/layers tests/models
    else
        echo "JAX is not installed: the layer and model tests ran on TensorFlow only"
    fi
fi
