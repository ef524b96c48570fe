#!/usr/bin/env bash
# Train SG-One (MobileNetV2, modern recipe) on each fold's seen classes of the procedural
# benchmark, then evaluate trained and training-free models 1-shot and 5-shot on the unseen
# classes. The figures in docs/results.md come from this script. Training crops are 128 px
# (evaluation at the images' own 160 px) to fit ~15 min per fold on 2 cores.
# Usage: bash scripts/train_synthetic.sh [STEPS] [EPISODES]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-700}
EPISODES=${2:-300}
SG=.venv/bin/sgone
for fold in 0 1 2 3; do
  $SG train --dataset synthetic --fold "$fold" --backbone mobilenet_v2 --recipe modern \
      --steps "$STEPS" --size 128 --val-every 200 --val-episodes 60 --ckpt-every 200 --out "runs/synthetic-fold$fold" --device cpu
done
for shots in 1 5; do
  $SG evaluate --checkpoint "runs/synthetic-fold{fold}/best.pt" --dataset synthetic --fold all \
      --shots "$shots" --episodes "$EPISODES" --size 0 --out "runs/eval-synthetic-sgone-${shots}shot" --device cpu
  $SG evaluate --model prototype-mobilenet_v2 --dataset synthetic --fold all \
      --shots "$shots" --episodes "$EPISODES" --size 0 --out "runs/eval-synthetic-prototype-${shots}shot" --device cpu
done
