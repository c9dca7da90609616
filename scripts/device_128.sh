#!/usr/bin/env bash
# On the lent GPU machine, the 128x128 quality run (BENCHMARKS.md, "128x128 on the H200"): once
# .faces/ holds every part (scripts/device_faces.py pack, carried a part per call), unpack the real
# faces at 128x128, fit PCA (D = 128) on the CPU while the gpu-128 profile's VAE trains on the GPU
# (the plain loop with that profile's settings, faceedit/pipeline.py, for MINUTES minutes), and
# bring the logs, the metrics and the last reconstructions back to $OUT.
#
#     bash scripts/device_128.sh [MINUTES] [DEVICE]     # default 3, cuda
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-3}
DEVICE=${2:-cuda}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/faceedit-out}
WORK=${WORK:-/tmp/f128}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY scripts/device_faces.py unpack .faces "$WORK/cache"
OMP_NUM_THREADS=8 $PY -m faceedit.cli pca --cache "$WORK/cache" > "$OUT/pca.log" 2>&1 &
PCA=$!
$PY -m faceedit.cli train --cache "$WORK/cache" --out "$WORK/vae" --log-dir "$WORK/log" \
    --channels 32 64 128 256 --blocks 1 --norm group --batch-size 128 --lr 1e-3 --grad-clip 1.0 \
    --max-minutes "$MINUTES" --epochs 1000 --val-every 2 --device "$DEVICE" --no-progress 2>&1 | tee "$OUT/train128.log"
wait $PCA || echo "pca failed: $?"
cat "$OUT/pca.log"
cp "$WORK/log/metrics.jsonl" "$OUT/" || true
cp "$(ls "$WORK"/log/figures/reconstructions_e*.png | sort | tail -1)" "$WORK/log/figures/samples_fitted.png" "$OUT/" || true
ls "$OUT"
