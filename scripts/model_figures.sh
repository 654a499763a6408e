#!/usr/bin/env bash
# Every figure the model card quotes for the shipped emotion model, with the baseline mini-Xception
# beside it, measured in one run on this machine: PublicTest as deployed (and without mirroring),
# int8 against its float network, classroom-like frames with three crop margins, and time per face.
# Needs ../shared/data beside the checkout and the [model] extra. About 10 minutes on 2 cores;
# run it with nothing else busy, since the last part is a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
agent=.venv/bin/edge-agent
publictest=../shared/data/fer2013_publictest.npz
shipped=models/emotion_fer_gap9_fear_int8.tflite
baseline=models/emotion_mini_xception_int8.tflite

lscpu | grep -m1 'Model name' || true
echo "== PublicTest, the baseline (mini-Xception)"
"$agent" evaluate --model "$baseline" --data "$publictest"
echo "== PublicTest, the shipped model as deployed, against its float network read the same way"
"$agent" evaluate --model "$shipped" --data "$publictest" --reference models/emotion_fer_gap9_fear.h5
echo "== PublicTest, the shipped model without mirroring (flip_average: false)"
"$agent" evaluate --model "$shipped" --data "$publictest" --no-flip-average
echo "== classroom-like frames of PublicTest faces"
"$agent" bench classroom --model "$baseline" --model "$shipped" --margin 0 --margin 0.05 --margin 0.1
echo "== time per face, one thread"
"$agent" bench model --model "$baseline" --model "$shipped"
