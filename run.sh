#!/usr/bin/env bash
# The main job: makes ./.venv, then runs `faceedit run` (prepare -> train -> vectors -> judge ->
# audit -> editor). Arguments go to `faceedit run`, e.g. `./run.sh --data ../shared/data/celeba`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec .venv/bin/faceedit run "$@"
