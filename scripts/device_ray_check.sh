#!/usr/bin/env bash
# On the lent GPU machine, call 2 of the plan in scripts/device_wheels.sh: join Ray's wheel, install
# the carried wheels into /tmp/site, then measure Ray Train with one GPU worker against the plain loop
# on the same GPU and the same batches (bench/bench_ray.py: plain / Ray / plain / Ray / plain, each
# Ray run against the plain runs around it). JSON and the log go to $OUT (the device tool's folder).
#
#     bash scripts/device_ray_check.sh [BATCH] [IMAGES] [main]   # default 1024, 40000 (rendered 64x64)
#
# With `main` it then runs the main job with the gpu profile on rendered faces (no data to carry):
# Ray with one GPU worker, end to end to the audit's report, within 8 minutes (its times add up to
# about 6.5), and copies the training log, the reconstructions and the report's figures to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-1024}
IMAGES=${2:-40000}
MAIN=${3:-}
OUT=${OUT:-/tmp/faceedit-out}
mkdir -p /tmp/whl "$OUT"
cat .whl/a/ray.part* .whl/b/ray.part* > "/tmp/whl/$(cat .whl/b/ray.name)"
cp .whl/b/*.whl /tmp/whl/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
python3 -c 'import ray, ray.train.torch, torch; print("ray", ray.__version__, "torch", torch.__version__, torch.cuda.get_device_name())'
python3 bench/bench_ray.py --device cuda --workers 1 --batch "$BATCH" --images "$IMAGES" --epochs 4 \
    --rounds 2 --threads 8 2> "$OUT/bench_ray.log" | tee "$OUT/bench_ray.json"
[ "$MAIN" = main ] || exit 0
timeout 480 python3 -m faceedit.cli run --profile gpu --out /tmp/mj --no-serve 2>&1 | tee "$OUT/main_job.log" | tail -40 || true
cp /tmp/mj/figures/reconstructions.png /tmp/mj/report/key_figure.png /tmp/mj/report/report.json "$OUT/" || true
find /tmp/mj/ray -name metrics.jsonl -exec cp {} "$OUT/train_metrics.jsonl" \; -quit || true
