#!/usr/bin/env bash
# The whole test suite: lint, then pytest on 2 worker processes.
# Expects lgd_tf and its `test` extra installed in the active Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
python -m ruff check .
python -m pytest -n "${LGD_TEST_WORKERS:-2}" --durations=15 "$@"
