#!/usr/bin/env bash
# GPU figures of LGD-3D R50 (benchmarks/gpu_benchmark.py): one device line and one table,
# within 10 minutes on one H200-class GPU. Without a GPU it says so in one line and exits 0.
#
#   bash benchmarks/gpu.sh                  # PYTHON=path/to/python to pick the interpreter
#   bash benchmarks/gpu.sh --cpu_smoke      # tiny model on CPU: proves the script end to end
#
# TensorFlow's log lines go to a log file (its path is printed only if the run fails).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
LOG="$(mktemp "${TMPDIR:-/tmp}/gpu_benchmark.XXXXXX.log")"
# 590 s: the script's own budget (540 s of configurations) plus start-up and the last row.
timeout --signal=INT --kill-after=10 590 "$PYTHON" benchmarks/gpu_benchmark.py "$@" 2>"$LOG"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "gpu_benchmark.py exited with status $rc; last lines of $LOG:"
    tail -n 20 "$LOG"
    exit "$rc"
fi
rm -f "$LOG"
