#!/usr/bin/env bash
# Top-1 with the moving against precise BatchNorm statistics on the demo run (gin/demo.gin):
# trains N runs with the recomputation off (so that the saved models keep the moving
# statistics), then evaluates each run's stage 2 and stage 1 twice: as saved, and with
# --precise_bn_batches=20 (in memory, from the run record's training data).
#
#   bash benchmarks/precise_bn_demo.sh [N=3] [OUT=/tmp/precise_bn_demo]
#
# About 8 min a run on 2 busy CPU cores; the last line of each command goes to stdout.
set -euo pipefail
runs="${1:-3}"
out="${2:-/tmp/precise_bn_demo}"
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
    d="$out/demo$i"
    rm -rf "$d"
    python -m lgd_tf.train --gin_file=gin/demo.gin --model_dir="$d" \
        --gin_bindings="lgd_tf.training.fit_stage.precise_bn_batches=0" > "$d.train.log" 2>&1
    echo "demo$i train: $(tail -1 "$d.train.log")"
    for stage in stage2 stage1; do
        python -m lgd_tf.evaluate --model_dir="$d" --stage="$stage" \
            --output_dir="$d/$stage-moving" > "$d.$stage-moving.log" 2>&1
        echo "demo$i $stage moving: $(tail -1 "$d.$stage-moving.log")"
        python -m lgd_tf.evaluate --model_dir="$d" --stage="$stage" \
            --output_dir="$d/$stage-precise" --precise_bn_batches=20 \
            > "$d.$stage-precise.log" 2>&1
        echo "demo$i $stage precise: $(tail -1 "$d.$stage-precise.log")"
    done
done
