#!/usr/bin/env bash
# Train SG-One on real photos (recipe "real": PriorGuidedSGOne on cached frozen MobileNetV2 features)
# for each class fold of the mixed corpora, evaluate trained vs training-free on each fold's unseen
# classes, then train the final model on every class. The figures of docs/results.md ("SG-One on
# real photos") come from this script.
# Usage: bash scripts/train_real.sh [STEPS] [EPISODES] [DATA]   (DATA: the shared data folder)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-600}
EPISODES=${2:-1000}
DATA=${3:-../shared/data}
SG=.venv/bin/sgone
ROOTS=(--root "$DATA/ccp" --root "$DATA/coco128" --root "$DATA/camvid")
$SG data --dataset mix "${ROOTS[@]}" --write-splits docs/splits/real-mix > /dev/null || true
for fold in 0 1 2 3; do
  $SG train --dataset mix "${ROOTS[@]}" --fold "$fold" --recipe real --steps "$STEPS" --val-every 0 \
      --out "runs/real/fold$fold" --overwrite
done
.venv/bin/python benchmarks/real_folds.py "${ROOTS[@]}" --runs runs/real --episodes "$EPISODES" --out runs/real/eval
# the shipped model: every class of the three corpora
$SG train --dataset mix "${ROOTS[@]}" --folds 0 --fold 0 --recipe real --steps "$STEPS" --val-every 0 \
    --out runs/real/all --overwrite
# inference-only copy inside the package (no optimiser state): `--model sgone-mobilenet_v2-real`
.venv/bin/python - <<'PY'
from sgone.engine.checkpoint import export_for_inference

export_for_inference("runs/real/all/last.pt", "sgone/checkpoints/sgone-mobilenet_v2-real.pt", card={
    "name": "sgone-mobilenet_v2-real",
    "data": "Clothing Co-Parsing, COCO-128, CamVid (voclike, every class with 6+ images); see the model card",
    "recipe": "sgone train --dataset mix --folds 0 --recipe real (PriorGuidedSGOne, MobileNetV2 ImageNet frozen)",
    "card": "sgone/checkpoints/sgone-mobilenet_v2-real.md"})
PY
